"""Reference ‖∂L/∂h_t‖ through time for a small LSTM, from PyTorch's LSTMCell.

The cell is stepped by hand so that every h_t keeps its gradient *including* the paths through
h_{t+1} … h_T (torch.nn.LSTM's output sequence would only give the direct path). Weights come
from the same deterministic formula as the Rust test (splitmix64 → uniform, rounded to f32).

    venv/bin/python tools/reference/lstm_grads.py > crates/gradscope/tests/fixtures/lstm_grads.json
"""
import json

import torch

from mlp_grads import det

torch.set_default_dtype(torch.float64)

INPUT, HIDDEN, STEPS, BATCH, SCALE = 3, 8, 12, 4, 0.6


def main():
    cell = torch.nn.LSTMCell(INPUT, HIDDEN)
    head = torch.nn.Linear(HIDDEN, 1)
    with torch.no_grad():
        # gradscope layout: input [I, 4H], recurrent [H, 4H], gate blocks i, f, g, o (as torch)
        cell.weight_ih.copy_(det(1, INPUT * 4 * HIDDEN, SCALE).reshape(INPUT, 4 * HIDDEN).T)
        cell.weight_hh.copy_(det(2, HIDDEN * 4 * HIDDEN, SCALE).reshape(HIDDEN, 4 * HIDDEN).T)
        cell.bias_ih.copy_(det(3, 4 * HIDDEN, SCALE))
        cell.bias_hh.zero_()  # gradscope's LSTM has one bias per gate
        head.weight.copy_(det(4, HIDDEN, SCALE).reshape(HIDDEN, 1).T)
        head.bias.copy_(det(5, 1, SCALE))
    x = det(6, BATCH * STEPS * INPUT, 1.0).reshape(BATCH, STEPS, INPUT)
    y = det(7, BATCH, 1.0).reshape(BATCH, 1)
    h = torch.zeros(BATCH, HIDDEN)
    c = torch.zeros(BATCH, HIDDEN)
    hs, cs = [], []
    for t in range(STEPS):
        h, c = cell(x[:, t], (h, c))
        h.retain_grad()
        c.retain_grad()
        hs.append(h)
        cs.append(c)
    loss = ((head(h) - y) ** 2).mean()
    loss.backward()
    print(json.dumps({
        "torch": torch.__version__,
        "input": INPUT, "hidden": HIDDEN, "steps": STEPS, "batch": BATCH, "scale": SCALE,
        "loss": loss.item(),
        "grad_h": [hs[t].grad.norm().item() for t in range(STEPS)],
        "grad_c": [cs[t].grad.norm().item() for t in range(STEPS)],
        "grad_weight_hh": cell.weight_hh.grad.norm().item(),
    }, indent=1))


if __name__ == "__main__":
    main()
