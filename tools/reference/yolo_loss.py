"""Reference YOLO26 training loss from Ultralytics for gradscope's detection-loss test.

Builds a YOLO26n detection model with 3 classes (only for its loss criterion: Ultralytics'
E2ELoss, i.e. a one-to-many v8DetectionLoss with TaskAlignedAssigner topk 10 and a one-to-one
one with topk 7 then topk2 1, reg_max 1 so the third component is an L1 distance loss), feeds
it seeded random raw head outputs for both branches of a batch of two 128x128 images and a
handful of ground-truth boxes, and writes the inputs together with Ultralytics' numbers.

Raw values are rounded to 1e-4 and then to f32, box coordinates are whole pixels, so the Rust
side reads exactly the numbers Ultralytics saw (normalised xywh / 128 is exact in binary).

    /work/venv/bin/python tools/reference/yolo_loss.py

writes crates/gradscope/tests/fixtures/yolo_loss.json. Output layout:
    ultralytics, nc, strides,
    epochs, epoch, o2m_weight, o2o_weight: E2ELoss' branch weights after `epoch` criterion
        updates (the trainer calls update() at the end of every epoch),
    cases: {random, conflict}, each:
        imgsz [h, w], batch, anchors (A),
        one2many, one2one: flat raw head output [B, 4 + nc, A], channel-major per image
            (channels l, t, r, b in stride units, then class logits; anchors level by level,
            row-major: the same order as Ultralytics' concatenated "boxes" / "scores")
        targets: per image [[class, x1, y1, x2, y2], ...] in pixels
        branches: {one2many, one2one}: {
            box, cls, l1: the vector v8DetectionLoss computes (gains 7.5 / 0.5 / 1.5 applied,
                NOT multiplied by the batch size; loss() returns it times B),
            total_times_batch: sum of loss()'s vector (gain-scaled, times B),
            fg: foreground anchors per image, assigned: per image [[anchor, gt, target score], ...],
            target_scores_sum }
        e2e: {total: sum of E2ELoss' vector (o2m·B·L_o2m + o2o·B·L_o2o),
              items: the loss items E2ELoss returns (one-to-one branch only, unweighted)}
"""
import json
import os

import numpy as np
import torch

import ultralytics
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import E2ELoss

SEED = 26
NC = 3
STRIDES = (8, 16, 32)
EPOCHS, EPOCH = 10, 3
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "crates", "gradscope", "tests", "fixtures", "yolo_loss.json",
)

# "random": two 128x128 images, (class, x1, y1, x2, y2) in pixels. Image 0: a large box, two
# overlapping boxes (shared candidate anchors), a tiny 6x10 box (STAL widens it to 16x16), a thin
# 40x12 box (one side widened). Image 1: a single box.
RANDOM_TARGETS = [
    [
        (0, 10, 12, 98, 84),
        (1, 40, 30, 80, 70),
        (2, 52, 44, 100, 96),
        (1, 101, 20, 107, 30),
        (0, 20, 100, 60, 112),
    ],
    [
        (2, 30, 40, 70, 100),
    ],
]

# "conflict": one 64x64 image built so that anchor P = (28, 28) (stride 8, index 27) is among the
# top-k of the two small class-0 boxes g0 and g1, predicts exactly the big class-2 box g2 (so its
# CIoU with g2 is 1) with a class-2 logit of -12, while 19 stride-16/32 anchors predict g2 well
# with a class-2 logit near 3 (all slightly different, no ties), so P is not in g2's top-k.
CONFLICT_TARGETS = [
    [
        (0, 18, 18, 38, 34),
        (0, 22, 14, 36, 40),
        (2, 4, 4, 60, 60),
    ],
]


def anchor_points(h, w):
    """(x, y, stride) of every anchor, level by level, row-major, in pixels."""
    return [((x + 0.5) * s, (y + 0.5) * s, s) for s in STRIDES for y in range(h // s) for x in range(w // s)]


def random_raw(rng, b, h, w):
    """Raw head output [B, 4 + nc, A]: distances U(0.5, 4) stride units, logits U(-4, 2)."""
    a = len(anchor_points(h, w))
    dist = rng.uniform(0.5, 4.0, size=(b, 4, a))
    logits = rng.uniform(-4.0, 2.0, size=(b, NC, a))
    return np.concatenate([dist, logits], 1).round(4).astype(np.float32)


def conflict_raw(h, w):
    """Raw head output [1, 4 + nc, A] for the "conflict" case (see CONFLICT_TARGETS)."""
    pts = anchor_points(h, w)
    g2 = CONFLICT_TARGETS[0][2][1:]
    raw = np.zeros((1, 4 + NC, len(pts)))
    for a, (x, y, s) in enumerate(pts):
        if (x, y) == (28.0, 28.0):  # P: predicts g2 exactly, confident of class 0, not of class 2
            box, logits = g2, (2.0, -4.0, -12.0)
        elif s > 8 and (x, y) != (24.0, 24.0):  # outside g0 and g1: predicts g2 roughly, class 2
            box, logits = (6 + 0.25 * (a % 16), 5, 58, 61), (-4.0, -4.0, 3.0 - 0.05 * (a % 16))  # no ties
        else:  # a 1-stride box around itself, unsure of every class
            box, logits = (x - s / 2, y - s / 2, x + s / 2, y + s / 2), (-4.0, -4.0, -4.0)
        raw[0, :4, a] = [(x - box[0]) / s, (y - box[1]) / s, (box[2] - x) / s, (box[3] - y) / s]
        raw[0, 4:, a] = logits
    return raw.round(4).astype(np.float32)


def run_case(crit, raws, targets, h, w):
    """Ultralytics' numbers for one batch: per branch and combined."""
    b = len(targets)
    feats = [torch.zeros(b, 1, h // s, w // s) for s in STRIDES]  # only their shapes are used

    def preds(raw):
        t = torch.from_numpy(raw)
        return {"boxes": t[:, :4].clone(), "scores": t[:, 4:].clone(), "feats": feats}

    rows = [(i, c, x1, y1, x2, y2) for i, img in enumerate(targets) for (c, x1, y1, x2, y2) in img]
    batch = {
        "batch_idx": torch.tensor([r[0] for r in rows], dtype=torch.float32),
        "cls": torch.tensor([[r[1]] for r in rows], dtype=torch.float32),
        "bboxes": torch.tensor(
            [[(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h] for (_, _, x1, y1, x2, y2) in rows],
            dtype=torch.float32,
        ),
    }

    branches = {}
    for name in ("one2many", "one2one"):
        loss_fn = getattr(crit, name)
        captured = []
        hook = loss_fn.assigner.register_forward_hook(lambda m, i, o: captured.append(o))
        (fg_mask, gt_idx, *_), loss, _ = loss_fn.get_assigned_targets_and_loss(preds(raws[name]), batch)
        times_b, _ = loss_fn.loss(preds(raws[name]), batch)
        hook.remove()
        _, _, target_scores, fg_mask2, _ = captured[0]
        assert torch.equal(fg_mask, fg_mask2)
        assert torch.allclose(times_b, loss * b)
        score = target_scores.sum(-1)
        assigned = [
            [[int(a), int(gt_idx[i, a]), float(score[i, a])] for a in fg_mask[i].nonzero().flatten().tolist()]
            for i in range(b)
        ]
        branches[name] = {
            "box": float(loss[0]),
            "cls": float(loss[1]),
            "l1": float(loss[2]),
            "total_times_batch": float(times_b.sum()),
            "fg": [int(x) for x in fg_mask.sum(1)],
            "target_scores_sum": float(target_scores.sum()),
            "assigned": assigned,
        }
        print(" ", name, {k: v for k, v in branches[name].items() if k != "assigned"})

    loss, items = crit({"one2many": preds(raws["one2many"]), "one2one": preds(raws["one2one"])}, batch)
    e2e = {"total": float(loss.sum()), "items": {k: float(v) for k, v in items.items()}}
    print("  e2e", e2e)
    out = {
        "imgsz": [h, w],
        "batch": b,
        "anchors": raws["one2many"].shape[2],
        "one2many": [round(float(v), 4) for v in raws["one2many"].ravel()],
        "one2one": [round(float(v), 4) for v in raws["one2one"].ravel()],
        "targets": [[list(t) for t in img] for img in targets],
        "branches": branches,
        "e2e": e2e,
    }
    # every written raw value must read back as the f32 Ultralytics used
    for name in ("one2many", "one2one"):
        assert np.array_equal(np.array(out[name], dtype=np.float32), raws[name].ravel())
    return out


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)
    model = DetectionModel("yolo26n.yaml", nc=NC, verbose=False)
    model.args = get_cfg(overrides={"epochs": EPOCHS})
    crit = model.init_criterion()
    assert isinstance(crit, E2ELoss), type(crit)
    assert model.model[-1].reg_max == 1
    assert crit.one2many.assigner.topk == 10 and crit.one2many.assigner.topk2 == 10
    assert crit.one2one.assigner.topk == 7 and crit.one2one.assigner.topk2 == 1
    assert crit.one2many.assigner.stride_val == 16
    assert list(model.stride.tolist()) == list(STRIDES)
    for _ in range(EPOCH):  # the trainer calls update() once at the end of every epoch
        crit.update()
    print("o2m weight", crit.o2m, "o2o weight", crit.o2o)

    print("random")
    random = run_case(
        crit, {"one2many": random_raw(rng, 2, 128, 128), "one2one": random_raw(rng, 2, 128, 128)},
        RANDOM_TARGETS, 128, 128,
    )
    print("conflict")
    raw = conflict_raw(64, 64)
    conflict = run_case(crit, {"one2many": raw, "one2one": raw}, CONFLICT_TARGETS, 64, 64)

    out = {
        "ultralytics": ultralytics.__version__,
        "nc": NC,
        "strides": list(STRIDES),
        "epochs": EPOCHS,
        "epoch": EPOCH,
        "o2m_weight": crit.o2m,
        "o2o_weight": crit.o2o,
        "cases": {"random": random, "conflict": conflict},
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
