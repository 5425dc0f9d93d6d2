"""Compares `gradscope predict ... save_json=true` with Ultralytics' predictions on the same
checkpoint and images (issue 13).

    gradscope predict model=best.pt source=images/val conf=0.25 end2end=false save_json=true
    venv/bin/python tools/reference/compare_predictions.py best.pt images/val \
        runs/detect/predict/predictions.json 256 0.25

Ultralytics predicts with its defaults (one-to-many head + NMS at iou 0.7, as its Detect's
end2end flag is off in 8.4.190). Per image the two detection lists are paired greedily by IoU
(highest scores first); prints the counts, the largest |Δ| of a paired box corner (pixels) and
score, and the pairs' mean IoU.
"""
import json, os, sys
from collections import defaultdict

import numpy as np
from ultralytics import YOLO

pt, src, ours_json, imgsz, conf = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
ours = defaultdict(list)
for d in json.load(open(ours_json)):
    stem = os.path.splitext(os.path.basename(d["image"]))[0]
    ours[stem].append((d["box_xyxy"], d["score"]))


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


n_theirs = n_ours = paired = 0
dbox = dscore = 0.0
ious = []
for r in YOLO(pt).predict(src, imgsz=imgsz, conf=conf, iou=0.7, max_det=300, verbose=False, stream=True):
    stem = os.path.splitext(os.path.basename(r.path))[0]
    theirs = [(b.tolist(), float(s)) for b, s in zip(r.boxes.xyxy, r.boxes.conf)]
    mine = sorted(ours.get(stem, []), key=lambda t: -t[1])
    n_theirs += len(theirs)
    n_ours += len(mine)
    free = list(range(len(mine)))
    for b, s in sorted(theirs, key=lambda t: -t[1]):
        if not free:
            break
        j = max(free, key=lambda k: iou(b, mine[k][0]))
        if iou(b, mine[j][0]) < 0.5:
            continue
        free.remove(j)
        paired += 1
        ious.append(iou(b, mine[j][0]))
        dbox = max(dbox, float(np.abs(np.array(b) - np.array(mine[j][0])).max()))
        dscore = max(dscore, abs(s - mine[j][1]))
print(f"detections: Ultralytics {n_theirs}, gradscope {n_ours}, paired (IoU >= 0.5) {paired}")
print(f"paired: max |Δ box| {dbox:.3f} px, max |Δ score| {dscore:.4f}, mean IoU {np.mean(ious) if ious else 0:.5f}")
