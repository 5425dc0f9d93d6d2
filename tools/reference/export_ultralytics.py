"""Reference data from Ultralytics for gradscope's YOLO26 re-implementation (issue 4).

Uses Ultralytics as a library (pip `ultralytics torch safetensors`); nothing of it is copied.

    venv/bin/python tools/reference/export_ultralytics.py layers > crates/gradscope/tests/fixtures/yolo26_layers.json
    venv/bin/python tools/reference/export_ultralytics.py weights OUT_DIR [imgsz]

`layers`: for every scale n/s/m/l/x, the layer table Ultralytics builds from yolo26.yaml (index,
from, repeats, module, args, parameters) with totals.
`weights`: yolo26n built with seed 0, BatchNorm statistics and affine parameters randomised
(seeded) so that normalisation is exercised, every tensor rounded to fp16 precision; writes
`yolo26n_seed0.safetensors` (fp16 state dict, Ultralytics names, no num_batches_tracked) and
`yolo26n_seed0_outputs.safetensors` (f32): a seeded input `[1, 3, imgsz, imgsz]`, the raw
outputs of the one-to-many and one-to-one heads `[1, 4 + nc, anchors]` (l, t, r, b distances in
stride units, class logits), and the end-to-end top-k detections `[1, 300, 6]`.
"""
import json
import sys

import torch
from ultralytics.nn.tasks import DetectionModel

SCALES = "nsmlx"


def build(scale, seed=0):
    torch.manual_seed(seed)
    return DetectionModel(f"yolo26{scale}.yaml", nc=80, verbose=False)


def layers():
    out = {}
    for s in SCALES:
        m = build(s)
        spec = m.yaml["backbone"] + m.yaml["head"]
        rows = []
        for i, (layer, (f, n, module, args)) in enumerate(zip(m.model, spec)):
            rows.append({
                "index": i,
                "from": layer.f,
                "repeats": layer.n if hasattr(layer, "n") else n,
                "module": type(layer).__name__,
                "args": [str(a) for a in args],
                "params": sum(p.numel() for p in layer.parameters()),
            })
        out[s] = {
            "total_params": sum(p.numel() for p in m.parameters()),
            "layers": rows,
        }
    import ultralytics
    print(json.dumps({"ultralytics": ultralytics.__version__, "torch": torch.__version__, "scales": out}, indent=1))


def weights(out_dir, imgsz=160):
    from safetensors.torch import save_file

    m = build("n")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                mod.weight.copy_(1 + torch.randn(c, generator=g) * 0.1)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    m.eval()
    sd = {k: v.half().contiguous() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, f"{out_dir}/yolo26n_seed0.safetensors")

    x = torch.rand(1, 3, imgsz, imgsz, generator=g)
    detect = m.model[-1]
    feats = {}
    hook = detect.register_forward_pre_hook(lambda mod, args: feats.setdefault("x", [t.clone() for t in args[0]]))
    detect.end2end = True
    with torch.no_grad():
        topk = m(x)
        topk = topk[0] if isinstance(topk, (tuple, list)) else topk
        hook.remove()

        def head(box, cls):
            return torch.cat([torch.cat([box[i](f), cls[i](f)], 1).flatten(2) for i, f in enumerate(feats["x"])], 2)

        o2m = head(detect.cv2, detect.cv3)
        o2o = head(detect.one2one_cv2, detect.one2one_cv3)
    save_file(
        {"input": x.contiguous(), "one2many": o2m.contiguous(), "one2one": o2o.contiguous(), "topk": topk.float().contiguous()},
        f"{out_dir}/yolo26n_seed0_outputs.safetensors",
    )
    print(json.dumps({"imgsz": imgsz, "one2many": list(o2m.shape), "one2one": list(o2o.shape), "topk": list(topk.shape),
                      "features": [list(f.shape) for f in feats["x"]]}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["layers"]:
        layers()
    elif sys.argv[1:2] == ["weights"]:
        weights(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 160)
    else:
        sys.exit(__doc__)
