#!/usr/bin/env bash
# gradscope side by side with PyTorch 2.x and Ultralytics on this machine: the three engine
# benches, a YOLO26n training step and inference, coco8 for 10 epochs, the probe's overhead and
# peak memory. Makes its own venv (bench/.venv: torch + ultralytics from pip) on the first run.
# Writes bench/RESULTS.md and prints it. BENCH_VENV=path uses an existing venv instead.
#
#   bench/run.sh [--quick] [--rounds=N] [--threads=N] [--scaling [--sweep=1,2,…] | --gpu]
#                                         (--threads: both engines' thread count in the main
#                                         table, default 2;
#                                         --scaling: each step bench on each thread count of
#                                         --sweep (default 1,2), the speed-ups and the serial
#                                         fractions they imply; writes bench/SCALING.md;
#                                         --gpu: YOLO26n step at batch 4 and 16, inference, the
#                                         step's phases and coco8 on BENCH_DEVICE (default 0) beside
#                                         PyTorch on CUDA; builds with --features gpu; writes
#                                         bench/GPU.md;
#                                         --quick: fewer timed steps, no coco8 runs;
#                                         --rounds: alternating rounds per benchmark, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-bench/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch ultralytics
fi
FEATURES=()
case " $* " in *" --gpu "*) FEATURES=(--features gpu) ;; esac
cargo build --release -p gradscope --example bench "${FEATURES[@]}"
cargo build --release -p gradscope-cli "${FEATURES[@]}"
"$VENV/bin/python" bench/run.py "$@"
