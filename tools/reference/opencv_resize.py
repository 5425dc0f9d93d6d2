"""Fixture for `data::resize` (issue 13): what OpenCV's cv2.resize gives for INTER_LINEAR and
INTER_AREA on a synthetic 124x78 RGB image (noise above, gradients below, the formula repeated in
the Rust test) and on a real tree tile (400x400 -> 256x256, as Ultralytics' loaders shrink them).

    venv/bin/pip install opencv-python-headless pillow
    venv/bin/python tools/reference/opencv_resize.py <trees images/val folder> \
        crates/gradscope/tests/fixtures/opencv_resize

Writes <case>.png per case and cases.json ({name, interp, w, h, source}). Channel order does
not matter to a resize, so images are handled as RGB throughout.
"""
import json, os, sys

import cv2
import numpy as np
from PIL import Image

trees, out = sys.argv[1], sys.argv[2]


def synthetic(w=124, h=78):
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint64), np.arange(w, dtype=np.uint64),
                          np.arange(3, dtype=np.uint64), indexing="ij")
    noise = (((x * 73856093) ^ (y * 19349663) ^ (c * 83492791)) * 2654435761 % 2**32) >> 24
    grad = (x * 255 // (w - 1) + y * 3 + c * 40) % 256
    return np.where(y < h // 2, noise, grad).astype(np.uint8)


tile = sorted(os.listdir(trees))[0]
sources = {"synthetic": synthetic(), "tree": np.array(Image.open(os.path.join(trees, tile)).convert("RGB"))}
modes = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}
cases = [("synthetic", m, w, h) for m in modes for (w, h) in
         [(50, 31), (62, 39), (200, 130), (97, 78), (41, 26), (31, 26), (80, 50)]]
cases += [("tree", m, 256, 256) for m in modes]
rows = []
for src, m, w, h in cases:
    name = f"{src}_{m}_{w}x{h}"
    Image.fromarray(cv2.resize(sources[src], (w, h), interpolation=modes[m])).save(os.path.join(out, name + ".png"))
    rows.append({"name": name, "interp": m, "w": w, "h": h, "source": src if src == "synthetic" else tile})
json.dump({"opencv": cv2.__version__, "cases": rows}, open(os.path.join(out, "cases.json"), "w"), indent=1)
print(f"{len(rows)} cases, OpenCV {cv2.__version__}, tree tile {tile}")
