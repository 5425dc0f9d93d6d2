"""Scores a `gradscope val save_json=true` predictions.json with pycocotools (issue 14: the printed
mAP and pycocotools' must agree).

    venv/bin/pip install pycocotools pillow
    venv/bin/python tools/reference/score_predictions.py runs/detect/val/predictions.json \
        datasets/trees/images/val datasets/trees/labels/val

Ground truth is made from the YOLO label files (class cx cy w h, normalised) and each image's own
size; `image_id` in the predictions is the image's file stem. Prints COCOeval's summary and
`stats <mAP50-95> <mAP50>`.
"""
import json, sys, os, glob, contextlib, io
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
pred, imgdir, lbldir = sys.argv[1:4]
images, anns = [], []
ids = {}
for i, f in enumerate(sorted(glob.glob(os.path.join(imgdir, '*')))):
    stem = os.path.splitext(os.path.basename(f))[0]
    w, h = Image.open(f).size
    ids[stem] = i
    images.append({"id": i, "file_name": os.path.basename(f), "width": w, "height": h})
    lf = os.path.join(lbldir, stem + '.txt')
    if os.path.exists(lf):
        for line in open(lf):
            p = line.split()
            if len(p) != 5: continue
            c, x, y, bw, bh = int(p[0]), *map(float, p[1:])
            x1, y1 = (x - bw / 2) * w, (y - bh / 2) * h
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x1, y1, bw * w, bh * h], "area": bw * w * bh * h, "iscrowd": 0})
gt = COCO(); gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "tree"}]}; gt.createIndex()
dets = json.load(open(pred))
for d in dets: d["image_id"] = ids[d["image_id"]]
print(len(dets), "detections,", len(anns), "gt")
dt = gt.loadRes(dets)
E = COCOeval(gt, dt, "bbox"); E.evaluate(); E.accumulate(); E.summarize(); print("stats", E.stats[0], E.stats[1])
