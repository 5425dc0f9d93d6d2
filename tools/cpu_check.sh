#!/usr/bin/env bash
# The many-core checks of issue 17, prepared on a 2-core machine and run on one with more cores
# (the device machine: 16 cores, PyTorch installed, no registry, nothing fetched there).
#
# Here (crates.io and PyPI reachable):
#   tools/cpu_check.sh pack            builds the gradscope binary and the bench, strips and packs
#                                      them into cpu/ (xz), and downloads the Ultralytics wheel
#                                      (no dependencies: the ones the benchmark imports are
#                                      there) into .whl/; both ignored by git, both carried
# There (carry cpu and .whl):
#   tools/cpu_check.sh run [OUT]       unpacks, installs the wheel under /tmp/site, and runs, each
#                                      with a time limit so that what finished comes back:
#     1. the machine: cores, CPU, PyTorch's version and threads;
#     2. the default `gradscope train` (batch 2 at 256) at 1, 2 and N threads (N = the cores):
#        wall time, exit code, last line;
#     3. the harness's table at N threads (`bench/run.py --quick --threads=N`): gradscope ÷
#        PyTorch on each benchmark, the probe's cost → OUT/RESULTS-cpuN.md;
#     4. the thread sweep 1/2/4/8/N of every step benchmark, both engines, with the speed-ups
#        and Karp–Flatt serial fractions, and the YOLO26n step's serial share measured inside
#        the run at 2 and N threads (`bench/run.py --scaling --sweep=…`) → OUT/SCALING-cpuN.md.
#   Everything it prints also goes to OUT/cpu_check.log. CPU_CHECK_ROUNDS (default 2) sets the
#   harness's rounds; CPU_CHECK_SECONDS (default 540) the time all steps together may take.
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  cargo build --release -p gradscope-cli
  cargo build --release -p gradscope --example bench
  rm -rf cpu && mkdir -p cpu
  cp target/release/gradscope target/release/examples/bench cpu/
  strip cpu/*
  xz -T0 -9 cpu/*
  # the Ultralytics the development venv holds, else the newest
  local py="${BENCH_VENV:-bench/.venv}/bin/python"
  local version=""
  if [ -x "$py" ]; then
    version="$("$py" -c 'import ultralytics; print(ultralytics.__version__)' 2>/dev/null || true)"
  fi
  rm -rf .whl && mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "ultralytics${version:+==$version}"
  ls -la cpu .whl
  du -ch cpu/*.xz .whl/* | tail -1
}

run() {
  local out="${1:-/tmp/cpu_out}"
  mkdir -p "$out"
  exec > >(tee "$out/cpu_check.log") 2>&1
  local rounds="${CPU_CHECK_ROUNDS:-2}"
  for f in cpu/*.xz; do xz -dkf "$f"; done
  chmod +x cpu/gradscope cpu/bench
  if ! python3 -c "import ultralytics" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  # Ultralytics offline, its settings in a scratch folder
  export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/ultralytics
  export BENCH_BIN="$PWD/cpu/bench" GRADSCOPE_BIN="$PWD/cpu/gradscope"
  local n
  n="$(nproc)"

  echo "== 1. the machine"
  grep -m1 "model name" /proc/cpuinfo || true
  echo "vector extensions: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fma|avx2|avx512|amx)' | tr '\n' ' ')"
  echo "cores: $n"
  python3 -c "import torch, ultralytics; print('PyTorch', torch.__version__, 'threads', torch.get_num_threads(), '· Ultralytics', ultralytics.__version__)"

  local counts
  counts="$(printf '%s\n' 1 2 "$n" | sort -nu | tr '\n' ' ')"
  echo "== 2. the default gradscope train at each of: ${counts}threads"
  for p in $counts; do
    local dir="/tmp/default-$p"
    rm -rf "$dir" && mkdir -p "$dir"
    local t0 t1 rc=0
    t0="$(date +%s.%N)"
    (cd "$dir" && RAYON_NUM_THREADS="$p" timeout "$(left 120)" "$GRADSCOPE_BIN" train > train.log 2>&1) || rc=$?
    t1="$(date +%s.%N)"
    echo "threads $p: exit $rc, wall $(python3 -c "print(f'{$t1 - $t0:.1f}')") s, last line: $(grep -v '^[[:space:]]*$' "$dir/train.log" | tail -1)"
  done

  echo "== 3. the harness at $n threads"
  timeout "$(left 240)" python3 bench/run.py --quick --rounds="$rounds" --threads="$n" \
    && cp bench/RESULTS.md "$out/RESULTS-cpu$n.md" || echo "harness exit $?"

  local sweep=1
  for p in 2 4 8; do [ "$p" -lt "$n" ] && sweep="$sweep,$p"; done
  sweep="$sweep,$n"
  echo "== 4. the thread sweep $sweep"
  timeout "$(left 300)" python3 bench/run.py --scaling --quick --rounds=1 --sweep="$sweep" \
    && cp bench/SCALING.md "$out/SCALING-cpu$n.md" || echo "sweep exit $?"
  echo "== done in $SECONDS s"
}

# Seconds a step may take: at most $1, and no more than what is left of CPU_CHECK_SECONDS
# (default 540: a device call's command may run 600) since the script began; at least 1.
left() {
  local rest=$(( ${CPU_CHECK_SECONDS:-540} - SECONDS ))
  [ "$rest" -lt "$1" ] && echo $(( rest > 1 ? rest : 1 )) || echo "$1"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: tools/cpu_check.sh pack | run [OUT]" >&2; exit 2 ;;
esac
