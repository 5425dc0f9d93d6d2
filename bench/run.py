"""Runs every benchmark in its own process, gradscope and PyTorch/Ultralytics one after the other,
and writes bench/RESULTS.md (date, CPU, versions, ms per step, ratio gradscope ÷ peer, peak RSS).
Called by bench/run.sh, which builds the binaries and the venv first."""

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target/release/examples/bench")
GRADSCOPE = os.path.join(ROOT, "target/release/gradscope")
PY = sys.executable
QUICK = "--quick" in sys.argv
COCO8 = os.environ.get("COCO8_YAML", os.path.join(ROOT, "../shared/data/coco8.yaml"))


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed_child(cmd, cwd):
    """Wall time and peak RSS (MB) of one command, run in a fresh wrapper process."""
    code = (
        "import resource,subprocess,sys,time\n"
        "t=time.perf_counter()\n"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)\n"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024, r.returncode)\n"
    )
    out = subprocess.run([PY, "-c", code, *cmd], capture_output=True, text=True, check=True, cwd=cwd).stdout.split()
    if out[2] != "0":
        raise RuntimeError(f"{cmd} failed with {out[2]}")
    return float(out[0]), float(out[1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    import torch
    import ultralytics

    steps = {"mlp": 20, "conv": 20, "lstm": 20, "yolo_step": 5, "yolo_infer": 10}
    if QUICK:
        steps = {k: max(2, v // 4) for k, v in steps.items()}
    rows = []
    for name, n in steps.items():
        g = run_json([BENCH, name, str(n)])
        t = run_json([PY, os.path.join(ROOT, "bench/torch_bench.py"), name, str(n)])
        rows.append((name, g, t))
        print(f"{name}: gradscope {g['ms']:.1f} ms, pytorch {t['ms']:.1f} ms", flush=True)
    probe = run_json([BENCH, "yolo_step_probe", str(steps["yolo_step"])])
    base = next(g for n, g, _ in rows if n == "yolo_step")

    train = None
    if not QUICK and os.path.isfile(COCO8):
        work = os.path.join(ROOT, "bench/runs")
        os.makedirs(work, exist_ok=True)
        # Ultralytics reads a relative `path:` against its own datasets dir: give it an absolute one
        root = os.path.join(os.path.dirname(os.path.abspath(COCO8)), "coco8")
        text = open(COCO8).read().replace("path: coco8", f"path: {root}")
        abs_yaml = os.path.join(work, "coco8.yaml")
        with open(abs_yaml, "w") as f:
            f.write(text)
        g_s, g_rss = timed_child([GRADSCOPE, "train", f"data={abs_yaml}", "epochs=10", "exist_ok=true", "plots=false"], work)
        u_code = (
            "import sys, ultralytics.utils.torch_utils as tu; tu.NUM_THREADS = 2\n"
            "from ultralytics import YOLO\n"
            "YOLO('yolo26n.yaml').train(data=sys.argv[1], epochs=10, imgsz=640, device='cpu', workers=0, "
            "plots=False, exist_ok=True, project='ultra', name='coco8', verbose=False)\n"
        )
        u_s, u_rss = timed_child([PY, "-c", u_code, abs_yaml], work)
        train = (g_s, g_rss, u_s, u_rss)

    label = {
        "mlp": "MLP 784→256×18→10 sigmoid, batch 128, training step",
        "conv": "Conv+BN+SiLU+residual 8×3×160², training step",
        "lstm": "LSTM hidden 128, 32×100×8, training step",
        "yolo_step": "YOLO26n training step, batch 4 at 640 (loss, clip, AdamW, EMA)",
        "yolo_infer": "YOLO26n inference, batch 1 at 640 (end-to-end top-k)",
    }
    today = datetime.date.today().isoformat()
    md = [
        f"# gradscope vs PyTorch / Ultralytics — {today}",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; PyTorch {torch.__version__} (2 threads), "
        f"Ultralytics {ultralytics.__version__}, Python {platform.python_version()}; gradscope "
        "(burn 0.22.1, flex backend), release build. Median of the timed steps, each benchmark in its "
        "own process; ratio = gradscope ÷ peer (below 1 = gradscope faster). `bench/run.sh` wrote this.",
        "",
        "| benchmark | gradscope ms | peer ms | ratio | gradscope RSS MB | peer RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, g, t in rows:
        md.append(
            f"| {label[name]} | {g['ms']:.1f} | {t['ms']:.1f} | **{g['ms'] / t['ms']:.2f}×** | {g['rss_mb']:.0f} | {t['rss_mb']:.0f} |"
        )
    md.append(
        f"| probe overhead: YOLO26n step with the probe on ÷ off | {probe['ms']:.1f} | {base['ms']:.1f} (off) | "
        f"**{probe['ms'] / base['ms']:.2f}×** | {probe['rss_mb']:.0f} | {base['rss_mb']:.0f} |"
    )
    if train:
        g_s, g_rss, u_s, u_rss = train
        md.append(
            f"| `train data=coco8.yaml epochs=10` (640, wall time s) | {g_s:.1f} s | {u_s:.1f} s | "
            f"**{g_s / u_s:.2f}×** | {g_rss:.0f} | {u_rss:.0f} |"
        )
    md.append("")
    text = "\n".join(md)
    with open(os.path.join(ROOT, "bench/RESULTS.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
