"""Reference gradients from PyTorch for gradscope's probe tests.

Builds two small deep MLPs with deterministic weights (splitmix64 -> uniform, the same formula
as the Rust test), runs one forward/backward pass on a fixed batch and writes, per layer, the
norm of every parameter's gradient and of dL/dh at the layer's output.

    python3 -m venv venv && venv/bin/pip install torch
    venv/bin/python tools/reference/mlp_grads.py > crates/gradscope/tests/fixtures/mlp_grads.json
"""
import json

import torch

torch.set_default_dtype(torch.float64)  # reference values in double precision

MASK = (1 << 64) - 1


def splitmix(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def det(p, n, scale):
    """n values uniform in [-scale, scale), a pure function of (p, i); rounded to f32."""
    out = []
    for i in range(n):
        h = splitmix((p * 1_000_003 + i) & MASK)
        u = (h >> 40) / 16777216.0
        out.append(float(torch.tensor(scale * (2.0 * u - 1.0), dtype=torch.float32)))
    return torch.tensor(out)


INPUT, WIDTH, CLASSES, BATCH, DEPTH = 10, 16, 4, 8, 8


def linear(p, fan_in, fan_out, scale):
    lin = torch.nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        # torch layout [out, in]; det() is generated in burn's [in, out] order, so transpose.
        lin.weight.copy_(det(2 * p, fan_in * fan_out, scale).reshape(fan_in, fan_out).T)
        lin.bias.copy_(det(2 * p + 1, fan_out, scale))
    return lin


class Block(torch.nn.Module):
    def __init__(self, p, fan_in, norm, scale):
        super().__init__()
        self.linear = linear(p, fan_in, WIDTH, scale)
        self.bn = torch.nn.BatchNorm1d(WIDTH, eps=1e-5, momentum=0.1) if norm else None


class Mlp(torch.nn.Module):
    def __init__(self, act, norm, residual, scale):
        super().__init__()
        self.act, self.residual = act, residual
        self.layers = torch.nn.ModuleList(
            [Block(i, INPUT if i == 0 else WIDTH, norm, scale) for i in range(DEPTH - 1)]
        )
        self.head = linear(DEPTH - 1, WIDTH, CLASSES, scale)

    def forward(self, x):
        self.probes = []
        h = x
        for i, b in enumerate(self.layers):
            n = b.bn if b.bn is not None else (lambda t: t)
            if self.residual and i > 0:
                h = h + b.linear(self.act(n(h)))
            else:
                h = self.act(n(b.linear(h)))
            h.retain_grad()
            self.probes.append(h)
        logits = self.head(h)
        logits.retain_grad()
        self.probes.append(logits)
        return logits


def reference(name, act, norm, residual, scale):
    model = Mlp(act, norm, residual, scale)
    model.train()
    x = det(1000, BATCH * INPUT, 1.0).reshape(BATCH, INPUT)
    y = torch.tensor([(b * 7 + 3) % CLASSES for b in range(BATCH)])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    names = [f"layers.{i}" for i in range(DEPTH - 1)] + ["head"]
    layers = []
    for lname, h in zip(names, model.probes):
        params = {}
        for pname, p in model.named_parameters():
            if pname.startswith(lname + "."):
                key = pname[len(lname) + 1:].replace("bn.weight", "bn.gamma").replace("bn.bias", "bn.beta")
                params[key] = p.grad.norm().item()
        layers.append({"name": lname, "grad_h": h.grad.norm().item(), "params": params})
    return {"name": name, "loss": loss.item(), "layers": layers}


if __name__ == "__main__":
    out = {
        "torch": torch.__version__,
        "input": INPUT, "width": WIDTH, "classes": CLASSES, "batch": BATCH, "depth": DEPTH,
        "cases": [
            reference("sigmoid", torch.sigmoid, False, False, 1.0),
            reference("residual_batchnorm_silu", torch.nn.functional.silu, True, True, 0.5),
        ],
    }
    print(json.dumps(out, indent=1))
