"""A small real Ultralytics checkpoint for the `.pt` reader's tests (issue 13).

Uses Ultralytics as a library (pip `ultralytics torch`); nothing of it is copied.

    venv/bin/python tools/reference/make_pt_fixture.py DATA.yaml OUT.pt [imgsz] [epochs]

Trains yolo26n from its yaml for a short run at a small image size with Ultralytics' own trainer
and copies the `last.pt` it writes: the same container as the released `yolo26n.pt` (a zip whose
pickle is a dict with a whole pickled DetectionModel in float16 under `model`, `train_args`, …).
The fixture committed as `tests/fixtures/yolo26n_coco8_ultralytics.pt` was made with
`../shared/data/coco8.yaml`, imgsz 64, 1 epoch (nc 80, like the released checkpoint).
"""
import shutil
import sys
import tempfile

from ultralytics import YOLO


def main():
    data, out = sys.argv[1], sys.argv[2]
    imgsz = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    with tempfile.TemporaryDirectory() as tmp:
        model = YOLO("yolo26n.yaml")
        model.train(data=data, epochs=epochs, imgsz=imgsz, batch=4, workers=0, device="cpu",
                    project=tmp, name="fixture", plots=False, val=False, seed=0, deterministic=True,
                    amp=False, verbose=False)
        shutil.copy(f"{tmp}/fixture/weights/last.pt", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
