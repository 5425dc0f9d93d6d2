"""Reference for gradscope's MuSGD: two steps of Ultralytics 8.4.190's MuSGD (muon 0.2, sgd 1.0,
as its trainer builds it; Nesterov momentum 0.9, lr 0.01, weight decay 5e-4 on the Muon group) on
a 2-D and a 4-D weight (Muon + SGD) and a bias (SGD only), with fixed gradients.

    python musgd.py > ../../crates/gradscope/tests/fixtures/musgd.json
"""

import json

import torch
from ultralytics.optim import MuSGD

torch.manual_seed(0)
w2 = torch.randn(4, 6) * 0.3
w4 = torch.randn(3, 2, 2, 2) * 0.3
b = torch.randn(3) * 0.1
grads = [[torch.randn_like(w2), torch.randn_like(w4), torch.randn_like(b)] for _ in range(2)]


def run():
    p = [w.clone().requires_grad_(True) for w in (w2, w4, b)]
    opt = MuSGD(
        [
            {"params": p[:2], "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "use_muon": True},
            {"params": p[2:], "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0, "use_muon": False},
        ],
        muon=0.2,
        sgd=1.0,
    )
    after = []
    for g in grads:
        for x, gx in zip(p, g):
            x.grad = gx.clone()
        opt.step()
        after.append([x.detach().flatten().tolist() for x in p])
    return after


after = run()
# the same with Newton-Schulz in float32 (the reference casts to bfloat16 inside)
bf16 = torch.Tensor.bfloat16
torch.Tensor.bfloat16 = lambda self: self.float()
after_f32 = run()
torch.Tensor.bfloat16 = bf16
print(
    json.dumps(
        {
            "shapes": [list(w2.shape), list(w4.shape), list(b.shape)],
            "init": [w.flatten().tolist() for w in (w2, w4, b)],
            "grads": [[x.flatten().tolist() for x in g] for g in grads],
            "after": after,
            "after_f32": after_f32,
            "note": "after: Ultralytics as shipped (Newton-Schulz in bfloat16); after_f32: the same with Newton-Schulz in float32",
        }
    )
)
