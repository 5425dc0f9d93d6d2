"""Fixture for tests/metrics.rs::a_real_runs_predictions_score_as_pycocotools_scores_them: the
predictions.json of a real run, scored by pycocotools (issue 14: the mAP gradscope prints and
pycocotools' must agree on real runs, not only on a synthetic fixture).

Made from the default `gradscope train` run (YOLO26n, 10 epochs on the embedded tree tiles):

    gradscope val model=runs/detect/train/weights/best.safetensors data=trees save_json=true
    venv/bin/python tools/reference/real_run_map.py runs/detect/val/predictions.json \
        datasets/trees/images/val datasets/trees/labels/val \
        crates/gradscope/tests/fixtures/trees_val_run.json

Ground truth from the YOLO label files and each image's size; boxes as xyxy pixels. Detections
are rounded (1e-3 px, scores 1e-6) and cut to each image's 100 best (pycocotools' maxDets; with
one class the same cut gradscope makes) before pycocotools scores them, so that both sides score
exactly the values in the fixture.
"""
import json, sys, os, glob, contextlib, io
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

pred, imgdir, lbldir, out = sys.argv[1:5]
images, anns, gts, ids = [], [], [], {}
for i, f in enumerate(sorted(glob.glob(os.path.join(imgdir, "*")))):
    stem = os.path.splitext(os.path.basename(f))[0]
    w, h = Image.open(f).size
    ids[stem] = i
    images.append({"id": i, "width": w, "height": h})
    lf = os.path.join(lbldir, stem + ".txt")
    for line in open(lf) if os.path.exists(lf) else []:
        p = line.split()
        if len(p) != 5:
            continue
        c, x, y, bw, bh = int(p[0]), *map(float, p[1:])
        x1, y1, x2, y2 = (x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h
        gts.append([i, c, x1, y1, x2, y2])
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
by_image = {}
for d in json.load(open(pred)):
    by_image.setdefault(ids[d["image_id"]], []).append(d)
dets, res = [], []
for i, ds in sorted(by_image.items()):
    for d in sorted(ds, key=lambda d: -d["score"])[:100]:
        x, y, bw, bh = [round(v, 3) for v in d["bbox"]]
        s = round(d["score"], 6)
        dets.append([i, d["category_id"], x, y, round(x + bw, 3), round(y + bh, 3), s])
        res.append({"image_id": i, "category_id": d["category_id"],
                    "bbox": [x, y, round(x + bw, 3) - x, round(y + bh, 3) - y], "score": s})
gt = COCO()
gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "tree"}]}
with contextlib.redirect_stdout(io.StringIO()):
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(res), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
fixture = {
    "source": "gradscope val save_json=true on the default train run's best.safetensors (trees val)",
    "gts": gts,
    "dets": dets,
    "stats": {"map50_95": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2])},
}
with open(out, "w") as f:
    json.dump(fixture, f, separators=(",", ":"))
print(f"{len(gts)} gts, {len(dets)} dets, stats {fixture['stats']} -> {out}")
