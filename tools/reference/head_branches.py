"""Both head branches of a checkpoint as Ultralytics computes them (issue 13: names out equal names
in). Uses Ultralytics as a library (pip `ultralytics torch safetensors`); nothing of it is copied.

    venv/bin/python tools/reference/head_branches.py > crates/gradscope/tests/fixtures/head_branches.json

Loads `tests/fixtures/yolo26n_seed0.safetensors` (Ultralytics' yolo26n, fp16, randomised BatchNorm,
from export_ultralytics.py) by name into Ultralytics' DetectionModel. At initialisation the
one-to-one branches are copies of the one-to-many ones, so a swap of the two could not be seen;
every one-to-one weight and bias (not the BatchNorm running statistics) is therefore moved by a
closed-form offset first, the same in the Rust test:

    w[i] += 0.05·sin(0.37·i + 1.0)        (i = flat index within the tensor)

Then one forward in eval mode on a closed-form 1×3×64×64 input

    x[i] = 0.5 + 0.45·sin(0.7·i)·cos(0.013·i)

and, per branch, the raw output `[1, 4 + nc, A]` (l,t,r,b, then class logits) as Σ v and
Σ v·sin(0.1·i + 0.3). A checkpoint path can be given instead (no offset is applied then):

    venv/bin/python tools/reference/head_branches.py CKPT.safetensors NC

or an Ultralytics `.pt`, read by PyTorch itself (`torch.load`, the `ema` entry when present, else
`model`), which also stores every tensor of its state_dict as (shape, Σ v, Σ v·sin(0.37·i + 1.0))
in float64, for the Rust `.pt` reader's test:

    venv/bin/python tools/reference/head_branches.py CKPT.pt > crates/gradscope/tests/fixtures/yolo26n_coco8_ultralytics.json
"""
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from ultralytics.nn.tasks import DetectionModel

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "crates", "gradscope", "tests", "fixtures")


def offset(name, t):
    if "one2one_" not in name or "running_" in name or "num_batches" in name:
        return t
    i = torch.arange(t.numel(), dtype=torch.float64)
    return (t.double().flatten() + 0.05 * torch.sin(0.37 * i + 1.0)).float().reshape(t.shape)


def from_pt(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    entry = "ema" if ck.get("ema") is not None else "model"
    m = ck[entry].float().eval()
    tensors = {}
    for k, v in m.state_dict().items():
        if not v.is_floating_point():
            continue
        flat = v.double().flatten()
        i = torch.arange(flat.numel(), dtype=torch.float64)
        tensors[k] = [list(v.shape), flat.sum().item(), (flat * torch.sin(0.37 * i + 1.0)).sum().item()]
    return m, entry, tensors


def main():
    if len(sys.argv) == 2:
        m, entry, tensors = from_pt(sys.argv[1])
        out = {"entry": entry, "nc": m.nc, "tensors": tensors}
        out.update(branches(m))
        print(json.dumps(out))
        return
    if len(sys.argv) == 3:
        path, nc, perturb = sys.argv[1], int(sys.argv[2]), False
    else:
        path, nc, perturb = os.path.join(FIX, "yolo26n_seed0.safetensors"), 80, True
    torch.manual_seed(0)
    m = DetectionModel("yolo26n.yaml", nc=nc, verbose=False)
    sd = {k: v.float() for k, v in load_file(path).items()}
    if perturb:
        sd = {k: offset(k, v) for k, v in sd.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    m.eval()
    out = {"perturbed": perturb, "nc": nc}
    out.update(branches(m))
    print(json.dumps(out, indent=1))


def branches(m):
    """Σ v and Σ v·sin(0.1·i + 0.3) of both raw branch outputs on the closed-form input."""
    shape = (1, 3, 64, 64)
    n = math.prod(shape)
    i = np.arange(n, dtype=np.float64)
    x = torch.from_numpy((0.5 + 0.45 * np.sin(0.7 * i) * np.cos(0.013 * i)).astype(np.float32)).reshape(shape)
    with torch.no_grad():
        _, preds = m(x)
    out = {}
    for branch in ("one2many", "one2one"):
        p = preds[branch]
        flat = torch.cat([p["boxes"], p["scores"]], 1).double().flatten()
        w = torch.from_numpy(np.sin(0.1 * np.arange(flat.numel(), dtype=np.float64) + 0.3))
        out[branch] = {"sum": flat.sum().item(), "weighted": (flat * w).sum().item()}
    return out


if __name__ == "__main__":
    main()
