"""PyTorch / Ultralytics side of gradscope's benchmarks: the same shapes and maths as
crates/gradscope/examples/bench.rs, one benchmark per process, 2 threads (BENCH_THREADS=n: n).

    python bench/torch_bench.py <mlp|conv|lstm|yolo_step|yolo_infer> [timed steps]

Prints one JSON line: engine, bench, median and minimum ms per step, peak RSS, first loss.
"""

import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
# BENCH_DEVICE=cuda (or cuda:0): the YOLO benchmarks on that GPU; BENCH_BATCH: the training
# step's batch (default 4)
def bench_device():
    """gradscope's device= forms in PyTorch's: 0 and vulkan:0 are cuda:0."""
    v = os.environ.get("BENCH_DEVICE", "cpu")
    if v.isdigit():
        return torch.device(f"cuda:{v}")
    if v.startswith("vulkan"):
        return torch.device("cuda:" + (v.split(":")[1] if ":" in v else "0"))
    return torch.device(v)


DEVICE = bench_device()
BATCH = int(os.environ.get("BENCH_BATCH", "4"))


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def det(n, lo, hi, salt):
    """Deterministic values in [lo, hi): the formula of bench.rs (splitmix64's finaliser on the
    index, in wrapping 64-bit arithmetic), vectorised."""
    u = np.uint64
    z = (np.arange(n, dtype=u) ^ u(salt << 40)) + u(0x9E3779B97F4A7C15)
    z = (z ^ (z >> u(30))) * u(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u(27))) * u(0x94D049BB133111EB)
    z ^= z >> u(31)
    v = lo + (hi - lo) * ((z >> u(40)).astype(np.float64) / 16777216.0)
    return torch.from_numpy(v).to(torch.float32)


def timed_run(warmup, timed, step):
    loss0 = step()
    for _ in range(1, warmup):
        step()
    ms = []
    for _ in range(timed):
        t = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    mid = len(ms) // 2
    # the mean of the two middle values of an even count, as gradscope's bench does
    median = ms[mid] if len(ms) % 2 else (ms[mid - 1] + ms[mid]) / 2
    return median, ms[0], loss0


class ConvBnSilu(nn.Module):
    def __init__(self, c1, c2, s):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, s, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)

    def forward(self, x):
        return F.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = ConvBnSilu(c, c, 1), ConvBnSilu(c, c, 1)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            ConvBnSilu(3, 16, 2), ConvBnSilu(16, 32, 2), Bottleneck(32), ConvBnSilu(32, 64, 2), Bottleneck(64)
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def labels(n, classes):
    return torch.tensor([(i * 7 + 3) % classes for i in range(n)])


def sgd_bench(model, x, loss_fn, timed):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.backward()
        opt.step()
        return loss.item()

    return timed_run(3, timed, step)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "mlp"
    timed = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    if name == "mlp":
        layers = [nn.Linear(784, 256), nn.Sigmoid()]
        for _ in range(18):
            layers += [nn.Linear(256, 256), nn.Sigmoid()]
        layers += [nn.Linear(256, 10)]
        x = det(128 * 784, 0.0, 1.0, 1).reshape(128, 784)
        y = labels(128, 10)
        r = sgd_bench(nn.Sequential(*layers), x, lambda o: F.cross_entropy(o, y), timed)
    elif name == "conv":
        x = det(8 * 3 * 160 * 160, 0.0, 1.0, 2).reshape(8, 3, 160, 160)
        y = labels(8, 10)
        r = sgd_bench(ConvNet(), x, lambda o: F.cross_entropy(o, y), timed)
    elif name == "lstm":

        class Seq(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(8, 128, batch_first=True)
                self.fc = nn.Linear(128, 1)

            def forward(self, x):
                return self.fc(self.lstm(x)[0][:, -1])

        x = det(32 * 100 * 8, -1.0, 1.0, 3).reshape(32, 100, 8)
        y = det(32, -1.0, 1.0, 4).reshape(32, 1)
        r = sgd_bench(Seq(), x, lambda o: F.mse_loss(o, y), timed)
    elif name in ("yolo_step", "yolo_infer"):
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils.torch_utils import ModelEMA

        torch.manual_seed(0)
        model = DetectionModel("yolo26n.yaml", nc=80, verbose=False).to(DEVICE)
        model.args = get_cfg()
        s = 640
        if name == "yolo_infer":
            model.eval()
            x = det(3 * s * s, 0.0, 1.0, 6).reshape(1, 3, s, s).to(DEVICE)

            def infer():
                with torch.no_grad():
                    out = model(x)
                sync()
                return float(out[0].shape[1] if isinstance(out, (tuple, list)) else out.shape[1])

            r = timed_run(3, timed, infer)
        else:
            model.train()
            x = det(BATCH * 3 * s * s, 0.0, 1.0, 5).reshape(BATCH, 3, s, s).to(DEVICE)
            rows = []
            for i in range(BATCH):
                for k in range(3):
                    o = 60 * k + 40 * (i % 4)
                    x1, y1, x2, y2 = o + 20, o + 30, o + 140, o + 200
                    rows.append((i, (i * 3 + k) % 80, (x1 + x2) / 2 / s, (y1 + y2) / 2 / s, (x2 - x1) / s, (y2 - y1) / s))
            batch = {
                "img": x,
                "batch_idx": torch.tensor([r[0] for r in rows], dtype=torch.float32).to(DEVICE),
                "cls": torch.tensor([[r[1]] for r in rows], dtype=torch.float32).to(DEVICE),
                "bboxes": torch.tensor([r[2:] for r in rows], dtype=torch.float32).to(DEVICE),
            }
            opt = torch.optim.AdamW(model.parameters(), lr=0.001, betas=(0.9, 0.999), weight_decay=5e-4)
            ema = ModelEMA(model)

            def step():
                loss, _ = model.loss(batch)
                loss = loss.sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                ema.update(model)
                return loss.item()

            r = timed_run(2, timed, step)
    else:
        sys.exit(f"unknown bench '{name}'")
    median, low, loss0 = r
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {"engine": "pytorch", "bench": name, "ms": round(median, 3), "ms_min": round(low, 3), "rss_mb": round(rss, 1), "loss0": loss0}
        )
    )


if __name__ == "__main__":
    main()
