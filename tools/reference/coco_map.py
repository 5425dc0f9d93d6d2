"""Reference COCO bbox mAP from pycocotools for gradscope's detection-metric tests.

Builds a seeded random but realistic detection fixture (12 images of 640x480, ground-truth
boxes of three classes, detections that are jittered copies of the ground truth with a wide
spread of IoU, duplicates, misses, false positives, tied scores, boxes that hit an IoU threshold
exactly, one image with more than 100 detections of one class, a class that only appears in the
detections and a class that only appears in the ground truth), evaluates it with pycocotools'
COCOeval (iouType "bbox") and writes the boxes together with pycocotools' results.

Every coordinate is a multiple of 1/16 pixel and every score is an f32 value, so the Rust side
reads exactly the numbers pycocotools saw.

    /work/venv/bin/pip install pycocotools numpy
    /work/venv/bin/python tools/reference/coco_map.py

writes crates/gradscope/tests/fixtures/coco_map.json. Output layout:
    nc, iou_thrs, rec_thrs,
    gts:  [[image, class, x1, y1, x2, y2], ...]            (0-based image and class)
    dets: [[image, class, x1, y1, x2, y2, score], ...]
    stats: {map50_95, map50, map75}                        (COCOeval.stats[0], [1], [2])
    ap_per_class: [[AP at each of the 10 IoU thresholds] or null (class without GT), ...]
"""
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SEED = 20240517
IMAGES = 12
WIDTH, HEIGHT = 640, 480
GT_CLASSES = 3  # classes 0..2 have ground truth and detections
DET_ONLY = 3  # class 3 appears only in the detections (excluded, -1, in pycocotools)
GT_ONLY = 4  # class 4 appears only in the ground truth (AP 0)
NC = 5
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "crates", "gradscope", "tests", "fixtures", "coco_map.json",
)


def q(v):
    """Round a coordinate to 1/16 pixel (exact in f32 and in double, as are its differences)."""
    return float(np.round(v * 16.0) / 16.0)


def f32(v):
    """The double value of v rounded to f32, so both sides compare the same scores."""
    return float(np.float32(v))


def clip_box(x1, y1, x2, y2):
    """Clip to the image and round; keeps at least 1/16 px of width and height."""
    x1, x2 = q(min(max(x1, 0.0), WIDTH - 1)), q(min(max(x2, 0.0), WIDTH))
    y1, y2 = q(min(max(y1, 0.0), HEIGHT - 1)), q(min(max(y2, 0.0), HEIGHT))
    x2 = max(x2, x1 + 0.0625)
    y2 = max(y2, y1 + 0.0625)
    return [x1, y1, x2, y2]


def random_box(rng):
    w = rng.uniform(12, 220)
    h = rng.uniform(12, 200)
    x1 = rng.uniform(0, WIDTH - w)
    y1 = rng.uniform(0, HEIGHT - h)
    return clip_box(x1, y1, x1 + w, y1 + h)


def jitter(rng, box, strength):
    """Move each edge by up to strength * box size; strength sets how far the IoU falls."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-strength, strength, size=4) * np.array([w, h, w, h])
    return clip_box(x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3])


def score(rng):
    """Scores on a 1/200 grid so that some of them tie exactly."""
    return f32(np.round(rng.uniform(0.01, 1.0) * 200.0) / 200.0)


def build(rng):
    gts, dets = [], []
    for img in range(IMAGES):
        n = int(rng.integers(0, 9))
        for _ in range(n):
            c = int(rng.integers(0, GT_CLASSES))
            box = random_box(rng)
            gts.append([img, c] + box)
            u = rng.uniform()
            if u < 0.15:
                continue  # missed
            strength = float(rng.choice([0.02, 0.05, 0.1, 0.2, 0.35]))
            dets.append([img, c] + jitter(rng, box, strength) + [score(rng)])
            if rng.uniform() < 0.2:  # duplicate on the same object
                dets.append([img, c] + jitter(rng, box, 0.1) + [score(rng)])
            if rng.uniform() < 0.1:  # right place, wrong class
                dets.append([img, (c + 1) % GT_CLASSES] + jitter(rng, box, 0.05) + [score(rng)])
        for _ in range(int(rng.integers(0, 4))):  # false positives
            c = int(rng.integers(0, GT_CLASSES + 1))  # includes the detection-only class
            dets.append([img, c] + random_box(rng) + [score(rng)])

    # Boxes whose IoU with their ground truth is exactly 0.5, 0.6, 0.75 or 0.9.
    for frac, s in [(0.5, 0.61), (0.6, 0.62), (0.75, 0.63), (0.9, 0.64)]:
        x1, y1 = q(rng.uniform(0, 400)), q(rng.uniform(0, 300))
        gts.append([0, 1, x1, y1, x1 + 64.0, y1 + 80.0])
        dets.append([0, 1, x1, y1, x1 + 64.0, y1 + 80.0 * frac, f32(s)])

    # Two ground truths of class 2 that a detection overlaps with the same IoU (0.6): the later
    # one takes it, which leaves the earlier one to the second, exact, detection.
    x1, y1 = q(rng.uniform(0, 400)), q(rng.uniform(0, 300))
    gts.append([5, 2, x1, y1, x1 + 64.0, y1 + 64.0])
    gts.append([5, 2, x1 + 32.0, y1, x1 + 96.0, y1 + 64.0])
    dets.append([5, 2, x1 + 16.0, y1, x1 + 80.0, y1 + 64.0, f32(0.7)])
    dets.append([5, 2, x1, y1, x1 + 64.0, y1 + 64.0, f32(0.4)])

    # Exact score ties between a true and a false positive, within an image and across images
    # (stable order: input order, then image order).
    for img, s in [(2, 0.555), (6, 0.445), (9, 0.335)]:
        box = random_box(rng)
        gts.append([img, 2] + box)
        dets.append([img, 2, 620.0, 460.0, 632.0, 472.0, f32(s)])  # false positive first
        dets.append([img, 2] + jitter(rng, box, 0.02) + [f32(s)])
        dets.append([img + 1, 2, 0.0, 460.0, 12.0, 472.0, f32(s)])  # and in the next image

    # Class 2 gets exactly 20 ground truths, so that recalls k / 20 fall exactly on the recall
    # points 0.35, 0.7 and 0.95, which numpy.linspace makes 0.35000000000000003,
    # 0.7000000000000001 and 0.9500000000000001.
    k = 0
    while sum(1 for g in gts if g[1] == 2) < 20:
        img = k % IMAGES
        box = random_box(rng)
        gts.append([img, 2] + box)
        dets.append([img, 2] + jitter(rng, box, 0.03) + [score(rng)])
        dets.append([img, 2] + random_box(rng) + [score(rng)])
        k += 1

    # A ground-truth-only class.
    gts.append([3, GT_ONLY] + random_box(rng))
    gts.append([7, GT_ONLY] + random_box(rng))

    # Image 11: more than 100 detections of class 0, the true positives scored lowest, so that
    # only the top 100 per image and class count.
    img = IMAGES - 1
    targets = [random_box(rng) for _ in range(3)]
    for box in targets:
        gts.append([img, 0] + box)
    for k in range(104):
        dets.append([img, 0] + random_box(rng) + [f32(0.31 + 0.0018 * (k % 100))])
    dets.append([img, 0] + jitter(rng, targets[0], 0.02) + [f32(0.3)])
    dets.append([img, 0] + jitter(rng, targets[1], 0.02) + [f32(0.99)])
    dets.append([img, 0] + jitter(rng, targets[2], 0.02) + [f32(0.2)])
    return gts, dets


def check_exact(gts, dets):
    """Every coordinate on the 1/16 grid and every score an f32 value, as promised above."""
    for row in gts + dets:
        for v in row[2:6]:
            assert v * 16.0 == np.round(v * 16.0) and float(np.float32(v)) == v, row
    for row in dets:
        assert f32(row[6]) == row[6], row


def coco_eval(gts, dets):
    """pycocotools COCOeval (bbox) on 0-based boxes; ids and categories are 1-based."""
    dataset = {
        "images": [{"id": i + 1, "width": WIDTH, "height": HEIGHT} for i in range(IMAGES)],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(NC)],
        "annotations": [],
    }
    for k, (img, c, x1, y1, x2, y2) in enumerate(gts):
        w, h = x2 - x1, y2 - y1
        dataset["annotations"].append({
            "id": k + 1, "image_id": img + 1, "category_id": c + 1,
            "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
        })
    results = [
        {"image_id": img + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
        for img, c, x1, y1, x2, y2, s in dets
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def main():
    rng = np.random.default_rng(SEED)
    gts, dets = build(rng)
    check_exact(gts, dets)
    ev = coco_eval(gts, dets)
    area_all = ev.params.areaRngLbl.index("all")
    max100 = ev.params.maxDets.index(100)
    precision = ev.eval["precision"][:, :, :, area_all, max100]  # T x R x K
    ap_per_class = []
    for k in range(NC):
        p = precision[:, :, k]
        ap_per_class.append(None if (p <= -1).all() else [float(v) for v in p.mean(axis=1)])
    out = {
        "source": "pycocotools COCOeval bbox, areaRng all, maxDets 100",
        "nc": NC,
        "iou_thrs": [float(v) for v in ev.params.iouThrs],
        "rec_thrs": [float(v) for v in ev.params.recThrs],
        "gts": gts,
        "dets": dets,
        "stats": {
            "map50_95": float(ev.stats[0]),
            "map50": float(ev.stats[1]),
            "map75": float(ev.stats[2]),
        },
        "ap_per_class": ap_per_class,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(gts)} gts, {len(dets)} dets, stats {out['stats']} -> {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
