"""Reference values of Ultralytics 8.4's own detection metrics (the P, R, mAP50, mAP50-95 its
`val` prints) for gradscope's `detect::eval::det_metrics` test, on the boxes of the COCO fixture
(tests/fixtures/coco_map.json, made by coco_map.py).

Runs Ultralytics' code itself: per image, detections sorted by score (highest first, stable),
`ultralytics.utils.metrics.box_iou` and `DetectionValidator.match_predictions` give each
detection's hit at the ten IoU thresholds; `ultralytics.utils.metrics.ap_per_class` gives the
rest, as `DetMetrics.process` does.

    /work/venv/bin/pip install ultralytics
    /work/venv/bin/python tools/reference/ultralytics_metrics.py

writes crates/gradscope/tests/fixtures/ultralytics_metrics.json:
    p, r, map50, map50_95 (means over classes with labels), per class with labels
    [class, p, r, ap50, ap50_95], and the detections' scores as used (made distinct, see below);
    per class, the curves its plots draw (precision, recall and F1 against the confidence
    threshold, precision against recall at IoU 0.5) at every 50th of their 1000 points.
"""
import json
import os

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import ap_per_class, box_iou

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.join(here, "..", "..", "crates", "gradscope", "tests", "fixtures")
f = json.load(open(os.path.join(fixtures, "coco_map.json")))
gts = np.array(f["gts"], dtype=np.float64)
dets = np.array(f["dets"], dtype=np.float64)
# numpy's argsort (inside ap_per_class) orders tied scores in no defined way (it may use a
# vectorised unstable sort), so the scores are made distinct: each moved by a seeded fraction of
# 1e-4, kept as float32 values, and written to the fixture with the result
rng = np.random.default_rng(7)
while True:
    dets[:, 6] = (dets[:, 6] + rng.uniform(-1e-4, 1e-4, len(dets))).astype(np.float32).astype(np.float64)
    if len(np.unique(dets[:, 6])) == len(dets):
        break
v = DetectionValidator()
v.iouv = torch.linspace(0.5, 0.95, 10)
tp, conf, pred_cls, target_cls = [], [], [], []
for image in sorted(set(gts[:, 0]) | set(dets[:, 0])):
    g = gts[gts[:, 0] == image]
    d = dets[dets[:, 0] == image]
    d = d[np.argsort(-d[:, 6], kind="stable")]
    target_cls.append(g[:, 1])
    if len(d) == 0:
        continue
    conf.append(d[:, 6])
    pred_cls.append(d[:, 1])
    if len(g) == 0:
        tp.append(np.zeros((len(d), 10), dtype=bool))
        continue
    iou = box_iou(torch.tensor(g[:, 2:6], dtype=torch.float32), torch.tensor(d[:, 2:6], dtype=torch.float32))
    tp.append(v.match_predictions(torch.tensor(d[:, 1]), torch.tensor(g[:, 1]), iou).numpy())
tp, conf, pred_cls, target_cls = (np.concatenate(x) for x in (tp, conf, pred_cls, target_cls))
_, _, p, r, _, ap, classes, p_curve, r_curve, f1_curve, _, prec_values = ap_per_class(
    tp, conf.astype(np.float32), pred_cls, target_cls
)
# the curves its plots draw, read at every 50th of their 1000 points and the last
at = list(range(0, 1000, 50)) + [999]
out = {
    "source": "Ultralytics 8.4.190 match_predictions + ap_per_class on coco_map.json's boxes",
    "p": float(p.mean()), "r": float(r.mean()),
    "map50": float(ap[:, 0].mean()), "map50_95": float(ap.mean()),
    "classes": [[int(c), float(p[i]), float(r[i]), float(ap[i, 0]), float(ap[i].mean())] for i, c in enumerate(classes)],
    "scores": [float(x) for x in dets[:, 6]],
    "curve_points": at,
    "curves": [
        {"class": int(c), "p": p_curve[i, at].tolist(), "r": r_curve[i, at].tolist(),
         "f1": f1_curve[i, at].tolist(), "pr": prec_values[i, at].tolist()}
        for i, c in enumerate(classes)
    ],
}
json.dump(out, open(os.path.join(fixtures, "ultralytics_metrics.json"), "w"), indent=1)
print(json.dumps(out, indent=1))
