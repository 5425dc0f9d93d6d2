#!/usr/bin/env bash
# gradscope side by side with PyTorch 2.x and Ultralytics on this machine: the three engine
# benches, a YOLO26n training step and inference, coco8 for 10 epochs, the probe's overhead and
# peak memory. Makes its own venv (bench/.venv: torch + ultralytics from pip) on the first run.
# Writes bench/RESULTS.md and prints it. BENCH_VENV=path uses an existing venv instead.
#
#   bench/run.sh [--quick] [--rounds=N] [--scaling]
#                                         (--scaling: each step bench on 1 and 2 threads, the
#                                         serial fraction it implies; writes bench/SCALING.md;
#                                         --quick: fewer timed steps, no coco8 runs;
#                                         --rounds: alternating rounds per benchmark, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-bench/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch ultralytics
fi
cargo build --release -p gradscope --example bench
cargo build --release -p gradscope-cli
"$VENV/bin/python" bench/run.py "$@"
