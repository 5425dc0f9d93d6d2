"""Reference for the labs' optimizers (gradscope's `train::optim`): four steps of PyTorch's
SGD, SGD(momentum=0.9), Adam(eps=1e-8) and AdamW(eps=1e-8, weight_decay=0.01) on one weight of
40 values with fixed gradients and a learning rate that changes every step; then the same with
the gradient clipped first, by norm (torch.nn.utils.clip_grad_norm_, max_norm 0.5) and by value
(clip_grad_value_, 0.02).

    python lab_optim.py > ../../crates/gradscope/tests/fixtures/lab_optim.json
"""

import json

import torch

torch.manual_seed(0)
w0 = torch.randn(40) * 0.5
grads = [torch.randn(40) * s for s in (0.1, 0.3, 0.05, 0.2)]
lrs = [0.1, 0.05, 0.02, 0.08]

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.1, eps=1e-8),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, eps=1e-8, weight_decay=0.01),
}


def run(name, clip):
    w = w0.clone().requires_grad_(True)
    opt = OPTIMIZERS[name]([w])
    after = []
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = g.clone()
        if clip == "norm":
            torch.nn.utils.clip_grad_norm_([w], max_norm=0.5)
        elif clip == "value":
            torch.nn.utils.clip_grad_value_([w], clip_value=0.02)
        opt.step()
        after.append(w.detach().tolist())
    return after


out = {
    "w0": w0.tolist(),
    "grads": [g.tolist() for g in grads],
    "lrs": lrs,
    "clip_norm": 0.5,
    "clip_value": 0.02,
    "after": {
        f"{name}/{clip}": run(name, clip)
        for name in OPTIMIZERS
        for clip in ("none", "norm", "value")
    },
    "torch": torch.__version__,
}
print(json.dumps(out))
