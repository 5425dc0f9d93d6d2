"""Training-mode gradients of YOLO26n from Ultralytics, for gradscope's fused kernels (issue 6).

Uses Ultralytics as a library (pip `ultralytics torch safetensors`); nothing of it is copied.

    venv/bin/python tools/reference/yolo_train_grads.py > crates/gradscope/tests/fixtures/yolo_train_grads.json

Loads `tests/fixtures/yolo26n_seed0.safetensors` (the fp16 weights with randomised BatchNorm made by
export_ultralytics.py) into Ultralytics' DetectionModel, switches it to training mode (BatchNorm on
batch statistics, the one-to-one head on detached features) and runs one forward and backward on a
2×3×64×64 input. Inputs and loss weights are closed-form, so the Rust side rebuilds them exactly:

    x[i]  = 0.5 + 0.45·sin(0.7·i)·cos(0.013·i)            (i = flat index, float64 → float32)
    L     = Σ o2m[i]·sin(0.1·i + 0.3) + Σ o2o[i]·cos(0.07·i)   (o2m/o2o = [B, 4+nc, A], boxes then scores)
    r[i]  = sin(0.37·i + 1.0)                             (a fixed direction per tensor)

For every parameter it stores ‖∂L/∂p‖ and Σ ∂L/∂p·r; for every BatchNorm running statistic after
the forward, Σ v and Σ v·r (PyTorch updates running_var with the unbiased batch variance).
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file
from ultralytics.nn.tasks import DetectionModel

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "crates", "gradscope", "tests", "fixtures")


def wave(n, f):
    return torch.from_numpy(f(np.arange(n, dtype=np.float64)).astype(np.float32))


def main():
    torch.manual_seed(0)
    m = DetectionModel("yolo26n.yaml", nc=80, verbose=False)
    sd = {k: v.float() for k, v in load_file(os.path.join(FIX, "yolo26n_seed0.safetensors")).items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    m.train()
    shape = (2, 3, 64, 64)
    n = math.prod(shape)
    x = wave(n, lambda i: 0.5 + 0.45 * np.sin(0.7 * i) * np.cos(0.013 * i)).reshape(shape)
    out = m(x)

    def cat(p):
        return torch.cat([p["boxes"], p["scores"]], 1)

    o2m, o2o = cat(out["one2many"]), cat(out["one2one"])
    loss = (o2m.flatten() * wave(o2m.numel(), lambda i: np.sin(0.1 * i + 0.3))).sum() + (
        o2o.flatten() * wave(o2o.numel(), lambda i: np.cos(0.07 * i))
    ).sum()
    loss.backward()

    def r(k):
        return wave(k, lambda i: np.sin(0.37 * i + 1.0)).double()

    grads = {}
    for name, p in m.named_parameters():
        g = p.grad.detach().double().flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=torch.float64)
        grads[name] = [g.norm().item(), (g * r(g.numel())).sum().item()]
    stats = {}
    for name, b in m.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            v = b.detach().double().flatten()
            stats[name] = [v.sum().item(), (v * r(v.numel())).sum().item()]
    import ultralytics

    print(json.dumps({
        "ultralytics": ultralytics.__version__, "torch": torch.__version__,
        "input_shape": list(shape), "one2many_shape": list(o2m.shape), "loss": loss.item(),
        "grads": grads, "running": stats,
    }))


if __name__ == "__main__":
    main()
