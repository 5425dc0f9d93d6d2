"""Checks by hand that Ultralytics loads what `gradscope export format=pt` writes (issue 13).

    venv/bin/pip install ultralytics safetensors onnx onnxslim onnxruntime
    gradscope export model=runs/detect/train/weights/best.safetensors
    venv/bin/python tools/reference/load_exported_pt.py runs/detect/train/weights/best.pt \
        runs/detect/train/weights/best.safetensors data.yaml 256

Prints: whether every tensor of the .safetensors is, bit for bit, the tensor of the same name in
the model Ultralytics loaded (`YOLO(pt).model.state_dict()`); Ultralytics' val metrics of the
.pt; then `YOLO(pt).export(format="onnx")` and the ONNX model's val metrics. Exits 1 on a
mismatch.
"""
import sys

import torch
from safetensors.torch import load_file
from ultralytics import YOLO

pt, st, data, imgsz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
y = YOLO(pt)
sd = y.model.state_dict()
ours = load_file(st)
differ = [k for k, v in ours.items() if k not in sd or not torch.equal(sd[k], v)]
extra = sorted(k for k in sd if k not in ours and not k.endswith("num_batches_tracked"))
print(f"task {y.task}, names {y.names}")
print(f"tensors: {len(ours)} in {st}, {len(sd)} in Ultralytics' state_dict "
      f"(+{len(sd) - len(ours)} num_batches_tracked); differ: {len(differ)} {differ[:3]}; "
      f"only in Ultralytics' model: {extra[:3]}")
r = y.val(data=data, imgsz=imgsz, batch=2, plots=False, verbose=False)
print(f"ultralytics val {pt}: P {r.box.mp:.4f} R {r.box.mr:.4f} mAP50 {r.box.map50:.4f} mAP50-95 {r.box.map:.4f}")
onnx = y.export(format="onnx", imgsz=imgsz)
r = YOLO(onnx, task="detect").val(data=data, imgsz=imgsz, batch=1, plots=False, verbose=False)
print(f"ultralytics val {onnx}: P {r.box.mp:.4f} R {r.box.mr:.4f} mAP50 {r.box.map50:.4f} mAP50-95 {r.box.map:.4f}")
sys.exit(1 if differ or extra else 0)
