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
# BENCH_BIN / GRADSCOPE_BIN: binaries built elsewhere (tools/gpu_check.sh carries them)
BENCH = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target/release/examples/bench"))
GRADSCOPE = os.environ.get("GRADSCOPE_BIN", os.path.join(ROOT, "target/release/gradscope"))
PY = sys.executable
QUICK = "--quick" in sys.argv
# Rounds per benchmark: gradscope and the peer alternate, each round in fresh processes, so a
# machine that drifts (these are shared) moves both sides alike. The table gives the median over
# rounds of each side's median step and the range of the per-round ratios.
ROUNDS = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--rounds=")), "3"))
COCO8 = os.environ.get("COCO8_YAML", os.path.join(ROOT, "../shared/data/coco8.yaml"))


LABEL = {
    "mlp": "MLP 784→256×18→10 sigmoid, batch 128, training step",
    "conv": "Conv+BN+SiLU+residual 8×3×160², training step",
    "lstm": "LSTM hidden 128, 32×100×8, training step",
    "yolo_step": "YOLO26n training step, batch 4 at 640 (loss, clip, AdamW, EMA)",
    "yolo_infer": "YOLO26n inference, batch 1 at 640 (end-to-end top-k)",
}


# --threads=N: the thread count of every run in the main table, gradscope's and the peer's
# (default 2, the development machines' cores); --sweep=1,2,4,…: the thread counts of --scaling
# (default 1,2)
THREADS = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "2"))
SWEEP = [int(p) for p in next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--sweep=")), "1,2").split(",")]


def run_json(cmd, threads=THREADS):
    """One benchmark process on `threads` threads (rayon's and PyTorch's; None: their defaults,
    all cores for gradscope and 2 for PyTorch)."""
    env = dict(os.environ)
    if threads is not None:
        env["RAYON_NUM_THREADS"] = str(threads)
        env["BENCH_THREADS"] = str(threads)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_table(md, path):
    """Writes the markdown lines `md` to `path` (relative to the repository) and prints them."""
    text = "\n".join(md + [""])
    with open(os.path.join(ROOT, path), "w") as f:
        f.write(text)
    print(text)


def karp_flatt(t_base, t_p, base, p):
    """The serial fraction that going from `base` to `p` threads with times t_base → t_p implies
    (Karp–Flatt, with the `base`-thread run as the unit of work): S = t_base / t_p on q = p / base
    times the threads, e = (1/S − 1/q) / (1 − 1/q). From one thread it is the share of a
    one-thread step that did not run in parallel."""
    s, q = t_base / t_p, p / base
    return (1 / s - 1 / q) / (1 - 1 / q)


def scaling(steps):
    """--scaling: each step benchmark on each thread count of --sweep (default 1 and 2), gradscope
    and PyTorch, alternating for ROUNDS rounds; writes bench/SCALING.md with the times, the
    speed-ups and the serial fractions from the first thread count, and gradscope ÷ PyTorch at
    each count."""
    import torch

    base = SWEEP[0]
    counts = ", ".join(map(str, SWEEP))
    md = [
        f"# Scaling over {counts} threads — {datetime.date.today().isoformat()}",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; PyTorch {torch.__version__}; gradscope (burn 0.22.1, "
        f"flex backend). Each benchmark in its own process at {counts} threads (RAYON_NUM_THREADS, "
        f"torch.set_num_threads), the runs alternating for {ROUNDS} rounds; ms = median over the "
        f"rounds. Speed-up S = t{base} / tp; serial fraction "
        + ("e = (1/S − 1/p) / (1 − 1/p) (Karp–Flatt): the share of a one-thread step that did not "
           "run in parallel, which caps the speed-up on p threads at 1 / (e + (1 − e) / p). "
           if base == 1 else
           f"e = (1/S − 1/q) / (1 − 1/q) with q = p / {base} (Karp–Flatt, from the {base}-thread "
           "run): the share of that run that did not run in parallel, which caps the speed-up on q "
           "times the threads at 1 / (e + (1 − e) / q). ")
        + "Timed steps per process: "
        + ", ".join(f"{k} {v}" for k, v in steps.items())
        + (" (--quick: few steps, so single runs are noisy)" if QUICK else "")
        + f". `bench/run.sh --scaling{' --quick' if QUICK else ''} --sweep={','.join(map(str, SWEEP))}` wrote this.",
        "",
        "| benchmark | threads | gradscope ms | S | serial e | PyTorch ms | S | serial e | gradscope ÷ PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n in steps.items():
        runs = {(e, p): [] for e in "gt" for p in SWEEP}
        for r in range(ROUNDS):
            for p in SWEEP:
                runs[("g", p)].append(run_json([BENCH, name, str(n)], threads=p)["ms"])
                runs[("t", p)].append(run_json([PY, os.path.join(ROOT, "bench/torch_bench.py"), name, str(n)], threads=p)["ms"])
            print(f"{name} round {r + 1}: " + ", ".join(f"{e}{p} {v[-1]:.1f}" for (e, p), v in runs.items()), flush=True)
        ms = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}

        def cells(e, p):
            if p == base:
                return f"{ms[(e, p)]:.1f} | – | –"
            kf = karp_flatt(ms[(e, base)], ms[(e, p)], base, p)
            return f"{ms[(e, p)]:.1f} | {ms[(e, base)] / ms[(e, p)]:.2f}× | {100 * kf:.0f}%"

        for p in SWEEP:
            md.append(
                f"| {LABEL[name] if p == base else ''} | {p} | {cells('g', p)} | {cells('t', p)} | "
                f"**{ms[('g', p)] / ms[('t', p)]:.2f}×** |"
            )
    for p in sorted({p for p in SWEEP if p > 1} & {2, max(SWEEP)}):
        md += phase_serial(steps["yolo_step"], p)
    write_table(md, "bench/SCALING.md")


def phase_serial(n, p):
    """The YOLO26n step's phases on `p` threads with the serial fraction of each, measured inside
    one run from the time the second thread waited for work (`gradscope::idle_seconds`): less
    exposed to a drifting machine than two separate runs, and it says where the serial part is.
    The waiting counts the other threads while the job's thread works alone or ends a loop's
    last run alone, not a machine's shared memory or caches slowing both (Karp–Flatt counts those)."""
    phases = ("forward", "loss", "backward", "clip_optimizer_ema")
    rows = []
    for r in range(ROUNDS):
        d = run_json([BENCH, "yolo_phases", str(n)], threads=p)
        rows.append(d)
        print(f"yolo_phases round {r + 1}: serial " + ", ".join(f"{k} {v:.3f}" for k, v in d["serial"].items()), flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    md = [
        "",
        f"Where the serial part of a YOLO26n training step is (batch 4 at 640, {p} threads, "
        f"`bench yolo_phases {n}`, median of {ROUNDS} runs): each phase's serial fraction e from the "
        + ("time the other thread waited for work inside the run, e = s / (s + 2·(W − s)) with s "
           "that waiting time and W the phase's wall time." if p == 2 else
           f"time the other {p - 1} threads waited for work inside the run, e = s / (s + {p}·(W − s)) "
           f"with s that waiting time ÷ {p - 1} and W the phase's wall time."),
        "",
        f"| phase | ms ({p} threads) | serial e |",
        "|---|---|---|",
    ]
    for k in phases:
        md.append(f"| {k.replace('_', ' + ')} | {med([d[k + '_ms'] for d in rows]):.1f} | {100 * med([d['serial'][k] for d in rows]):.0f}% |")
    md.append(f"| whole step | {med([sum(d[k + '_ms'] for k in phases) for d in rows]):.1f} | **{100 * med([d['serial']['step'] for d in rows]):.0f}%** |")
    return md


def gpu(steps):
    """--gpu: YOLO26n on BENCH_DEVICE (default 0: gradscope's device=0, PyTorch's cuda:0) — the
    training step at batch 4 and 16, inference, where gradscope's step goes (its phases), and
    coco8 for 10 epochs — beside PyTorch/Ultralytics on the same card; writes bench/GPU.md. The
    gradscope binaries must be built with --features gpu."""
    import torch

    dev = os.environ.setdefault("BENCH_DEVICE", "0")
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"no CUDA device ({dev})"
    md = [
        f"# gradscope vs PyTorch on a GPU — {datetime.date.today().isoformat()}",
        "",
        f"GPU: {name}; device={dev}; PyTorch {torch.__version__}; gradscope (burn 0.22.1, built with "
        f"--features gpu: Vulkan). Each benchmark in its own process, the two alternating for {ROUNDS} "
        "rounds; ms = median over the rounds; ratio = gradscope ÷ PyTorch. "
        f"`bench/run.sh --gpu{' --quick' if QUICK else ''}` wrote this.",
        "",
        "| benchmark | gradscope ms | PyTorch ms | ratio | per-round ratios |",
        "|---|---|---|---|---|",
    ]
    for bench, batch in (("yolo_step", 4), ("yolo_step", 16), ("yolo_infer", 1)):
        os.environ["BENCH_BATCH"] = str(batch)
        n = str(steps[bench])
        g, t = [], []
        for r in range(ROUNDS):
            g.append(run_json([BENCH, bench, n], threads=None)["ms"])
            t.append(run_json([PY, os.path.join(ROOT, "bench/torch_bench.py"), bench, n], threads=None)["ms"])
            print(f"{bench} batch {batch} round {r + 1}: {g[-1]:.1f} vs {t[-1]:.1f} ms", flush=True)
        gm, tm = sorted(g)[len(g) // 2], sorted(t)[len(t) // 2]
        ratios = [a / b for a, b in zip(g, t)]
        label = LABEL[bench].replace("batch 4", f"batch {batch}")
        md.append(f"| {label} | {gm:.1f} | {tm:.1f} | **{gm / tm:.2f}×** | {min(ratios):.2f}–{max(ratios):.2f}× |")
    os.environ["BENCH_BATCH"] = "4"
    ph = run_json([BENCH, "yolo_phases", str(steps["yolo_step"])], threads=None)
    md += [
        "",
        "gradscope's step at batch 4, by phase (ms; forward and loss end with a read of their "
        "result, so the device has finished them; what backward queues finishes in the last phase, "
        f"whose first read is clipping's norm): forward {ph['forward_ms']}, loss (with the "
        f"assigners on the host) {ph['loss_ms']}, backward {ph['backward_ms']}, clip + optimizer + "
        f"EMA {ph['clip_optimizer_ema_ms']}.",
    ]
    if not QUICK and os.path.isfile(COCO8):
        g_s, _, u_s, _ = coco8_runs(dev, "0", "gpu")
        md.append("")
        md.append(f"`train data=coco8.yaml epochs=10` on the GPU, wall time: gradscope {g_s:.1f} s, "
                  f"Ultralytics {u_s:.1f} s ({g_s / u_s:.2f}×, one round).")
    write_table(md, "bench/GPU.md")


def coco8_runs(device, ultra_device, name, ultra_prelude=""):
    """`train data=coco8.yaml epochs=10` by gradscope on `device` and by Ultralytics on
    `ultra_device` (a Python expression, with further arguments if need be): (gradscope s, its peak
    RSS MB, Ultralytics s, its peak RSS MB)."""
    work = os.path.join(ROOT, "bench/runs")
    abs_yaml = absolute_coco8(work)
    g_s, g_rss = timed_child([GRADSCOPE, "train", f"data={abs_yaml}", "epochs=10", f"device={device}",
                              "exist_ok=true", "plots=false", f"name={name}"], work)
    u_code = (
        "import sys\n" + ultra_prelude + "from ultralytics import YOLO\n"
        f"YOLO('yolo26n.yaml').train(data=sys.argv[1], epochs=10, imgsz=640, device={ultra_device}, "
        f"plots=False, exist_ok=True, project='ultra', name='{name}', verbose=False)\n"
    )
    u_s, u_rss = timed_child([PY, "-c", u_code, abs_yaml], work)
    return g_s, g_rss, u_s, u_rss


def absolute_coco8(work):
    """coco8.yaml with an absolute `path:` (Ultralytics reads a relative one against its own
    datasets dir), written into `work`."""
    os.makedirs(work, exist_ok=True)
    root = os.path.join(os.path.dirname(os.path.abspath(COCO8)), "coco8")
    text = open(COCO8).read().replace("path: coco8", f"path: {root}")
    abs_yaml = os.path.join(work, "coco8.yaml")
    with open(abs_yaml, "w") as f:
        f.write(text)
    return abs_yaml


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
    """The CPU's model name, family and model, and the vector extensions the kernels can use."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model", "flags") and key not in info:
                info[key] = value.strip()
    except OSError:
        return platform.processor()
    flags = set(info.get("flags", "").split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        extra = [n for f, n in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI"),
                                ("avx512_vbmi2", "VBMI2"), ("amx_tile", "AMX")) if f in flags]
        vec = "AVX-512" + (" with " + ", ".join(extra) if extra else "")
    elif {"avx2", "fma"} <= flags:
        vec = "AVX2 + FMA, no AVX-512"
    else:
        vec = "no AVX2"
    name = info.get("model name", platform.processor())
    return f"{name} (family {info.get('cpu family', '?')} model {info.get('model', '?')}; {vec})"


def main():
    import torch
    import ultralytics

    steps = {"mlp": 20, "conv": 20, "lstm": 20, "yolo_step": 5, "yolo_infer": 10}
    if QUICK:
        steps = {k: max(2, v // 4) for k, v in steps.items()}
    if "--scaling" in sys.argv:
        scaling(steps)
        return
    if "--gpu" in sys.argv:
        gpu(steps)
        return
    rows = []
    def median(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2

    def rounds(cmd_a, cmd_b, label):
        """Alternates two commands ROUNDS times: (median a, median b, ratios a÷b, max RSS a, b)."""
        a, b = [], []
        for r in range(ROUNDS):
            a.append(run_json(cmd_a))
            b.append(run_json(cmd_b))
            print(f"{label} round {r + 1}: {a[-1]['ms']:.1f} vs {b[-1]['ms']:.1f} ms", flush=True)
        ratios = [x["ms"] / y["ms"] for x, y in zip(a, b)]
        return {
            "a_ms": median([x["ms"] for x in a]),
            "b_ms": median([y["ms"] for y in b]),
            "ratios": ratios,
            "a_rss": max(x["rss_mb"] for x in a),
            "b_rss": max(y["rss_mb"] for y in b),
        }

    for name, n in steps.items():
        res = rounds(
            [BENCH, name, str(n)],
            [PY, os.path.join(ROOT, "bench/torch_bench.py"), name, str(n)],
            name,
        )
        rows.append((name, res))
    probe = rounds(
        [BENCH, "yolo_step_probe", str(steps["yolo_step"])],
        [BENCH, "yolo_step", str(steps["yolo_step"])],
        "probe on/off",
    )
    probe_mlp = rounds(
        [BENCH, "mlp_probe", str(steps["mlp"])],
        [BENCH, "mlp", str(steps["mlp"])],
        "MLP probe on/off",
    )

    def alternating(name, pairs):
        """The probe's cost within one process, ROUNDS times: each probed step ÷ the unprobed step
        right after it (noise between processes and over minutes cancels)."""
        res = []
        for r in range(ROUNDS):
            res.append(run_json([BENCH, name, str(pairs)]))
            print(f"{name} round {r + 1}: ratio {res[-1]['ratio']:.3f}", flush=True)
        return {
            "a_ms": median([x["probed_ms"] for x in res]),
            "b_ms": median([x["plain_ms"] for x in res]),
            "ratio": median([x["ratio"] for x in res]),
            "ratios": [x["ratio"] for x in res],
        }

    alt_yolo = alternating("yolo_probe_alt", 4 if QUICK else 8)
    alt_mlp = alternating("mlp_probe_alt", 100)
    alt_conv = alternating("conv_probe_alt", 30)
    alt_lstm = alternating("lstm_probe_alt", 60)

    train = None
    if not QUICK and os.path.isfile(COCO8):
        os.environ["RAYON_NUM_THREADS"] = str(THREADS)
        prelude = f"import torch; torch.set_num_threads({THREADS})\nimport ultralytics.utils.torch_utils as tu; tu.NUM_THREADS = {THREADS}\n"
        train = coco8_runs("cpu", "'cpu', workers=0", "coco8", prelude)

    today = datetime.date.today().isoformat()
    md = [
        f"# gradscope vs PyTorch / Ultralytics — {today}",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; PyTorch {torch.__version__}; both engines on {THREADS} threads, "
        f"Ultralytics {ultralytics.__version__}, Python {platform.python_version()}; gradscope "
        "(burn 0.22.1, flex backend), release build. Each benchmark in its "
        f"own process, gradscope and the peer alternating for {ROUNDS} rounds: ms = median over the rounds "
        "of each side's median step; ratio = gradscope ÷ peer of those (below 1 = gradscope faster), "
        "with the range of the per-round ratios. `bench/run.sh` wrote this.",
        "",
        "| benchmark | gradscope ms | peer ms | ratio | per-round ratios | gradscope RSS MB | peer RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    def spread(r):
        return f"{min(r['ratios']):.2f}–{max(r['ratios']):.2f}×"

    for name, r in rows:
        md.append(
            f"| {LABEL[name]} | {r['a_ms']:.1f} | {r['b_ms']:.1f} | **{r['a_ms'] / r['b_ms']:.2f}×** | "
            f"{spread(r)} | {r['a_rss']:.0f} | {r['b_rss']:.0f} |"
        )
    md.append(
        f"| probe overhead: YOLO26n step with the probe on ÷ off | {probe['a_ms']:.1f} | {probe['b_ms']:.1f} (off) | "
        f"**{probe['a_ms'] / probe['b_ms']:.2f}×** | {spread(probe)} | {probe['a_rss']:.0f} | {probe['b_rss']:.0f} |"
    )
    md.append(
        f"| probe overhead: MLP step with the probe on ÷ off | {probe_mlp['a_ms']:.1f} | {probe_mlp['b_ms']:.1f} (off) | "
        f"**{probe_mlp['a_ms'] / probe_mlp['b_ms']:.2f}×** | {spread(probe_mlp)} | {probe_mlp['a_rss']:.0f} | {probe_mlp['b_rss']:.0f} |"
    )
    for what, r in [("YOLO26n", alt_yolo), ("MLP", alt_mlp), ("Conv+BN+SiLU+residual", alt_conv), ("LSTM", alt_lstm)]:
        md.append(
            f"| probe overhead, alternating steps: {what} step probed ÷ the unprobed step after it | "
            f"{r['a_ms']:.1f} | {r['b_ms']:.1f} (off) | **{r['ratio']:.3f}×** | {spread(r)} | – | – |"
        )
    if train:
        g_s, g_rss, u_s, u_rss = train
        md.append(
            f"| `train data=coco8.yaml epochs=10` (640, wall time s) | {g_s:.1f} s | {u_s:.1f} s | "
            f"**{g_s / u_s:.2f}×** | one round | {g_rss:.0f} | {u_rss:.0f} |"
        )
    write_table(md, "bench/RESULTS.md")


if __name__ == "__main__":
    main()
