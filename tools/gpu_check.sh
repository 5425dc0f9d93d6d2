#!/usr/bin/env bash
# The GPU checks of issue 16, prepared on a machine without a GPU and run on one with it.
#
# Here (network for crates.io only; the Vulkan build is offline):
#   tools/gpu_check.sh pack            builds the gpu binary, the bench and the two reference test
#                                      binaries with --features gpu, and packs them into gpu/ (xz)
# There (no registry; the Vulkan loader .debs carried in .gl/, see the device README):
#   tools/gpu_check.sh run [OUT]       unpacks, loads Vulkan, and runs, each with a time limit:
#     1. the reference checks on the GPU: YOLO26n's gradients and BatchNorm statistics against
#        the Ultralytics fixture, and the loss fixtures (GRADSCOPE_TEST_DEVICE=0);
#     2. device=0 refused or accepted as the machine says (a missing GPU is an error, exit 2);
#     3. gradscope train data=coco8 epochs=10 device=0 (wall time, exit code, verdict);
#     4. gradscope val of that run on the GPU and on the CPU (the two tables side by side).
#     5. data-parallel on the one card: device=0,0 batch=4 against device=0 batch=2 with the same
#        nbs, warmup off (on the CPU these train the same bits; here the losses side by side);
#     6. bench/run.py --gpu (gradscope beside PyTorch on CUDA) where python3 has torch.
#   Everything it prints also goes to OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  cargo build --release -p gradscope-cli --features gpu
  cargo build --release -p gradscope --example bench --features gpu
  cargo test --release -p gradscope --features gpu --no-run \
    --test yolo_train_grads --test detect_loss 2>&1 | tee /tmp/gpu_tests.txt
  rm -rf gpu && mkdir -p gpu
  cp target/release/gradscope target/release/examples/bench gpu/
  for t in yolo_train_grads detect_loss; do
    f=$(grep -o "target/release/deps/${t}-[0-9a-f]*" /tmp/gpu_tests.txt | head -1)
    cp "$f" "gpu/$t"
  done
  strip gpu/*   # debug symbols are a third of each binary; the carry limit is 64 MiB in all
  xz -T0 -9 gpu/*
  ls -la gpu
  du -ch gpu/*.xz | tail -1
}

run() {
  local out="${1:-/tmp/gpu_out}"
  mkdir -p "$out"
  exec > >(tee "$out/gpu_check.log") 2>&1
  if [ -d .gl ]; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  for f in gpu/*.xz; do xz -dkf "$f"; done
  chmod +x gpu/gradscope gpu/bench gpu/yolo_train_grads gpu/detect_loss
  nvidia-smi --query-gpu=name,memory.total --format=csv || true

  echo "== 1. reference checks on the GPU"
  # the tests read their fixtures relative to the crate
  (cd crates/gradscope && GRADSCOPE_TEST_DEVICE=0 timeout 300 ../../gpu/yolo_train_grads --nocapture) \
    && echo "yolo_train_grads on the GPU: passed" || echo "yolo_train_grads on the GPU: FAILED ($?)"
  (cd crates/gradscope && GRADSCOPE_TEST_DEVICE=0 timeout 300 ../../gpu/detect_loss) \
    && echo "detect_loss on the GPU: passed" || echo "detect_loss on the GPU: FAILED ($?)"

  echo "== 2. device=0 as this machine has it"
  timeout 120 gpu/gradscope val model=missing.safetensors device=0 || echo "exit $?"

  echo "== 3. coco8, 10 epochs, on the GPU"
  local data
  data="$(pwd)/shared/data/coco8.yaml"
  [ -f "$data" ] || data="coco8"
  /usr/bin/time -f "wall %e s, max RSS %M KB" timeout 420 gpu/gradscope train \
    data="$data" epochs=10 device=0 project="$out/runs" name=coco8 exist_ok=true \
    | tail -25 || echo "train exit $?"

  echo "== 4. val of that run: GPU, then CPU"
  local best="$out/runs/coco8/weights/best.safetensors"
  if [ -f "$best" ]; then
    timeout 120 gpu/gradscope val model="$best" device=0 plots=false | tail -3 || true
    timeout 300 gpu/gradscope val model="$best" device=cpu plots=false | tail -3 || true
  fi

  echo "== 5. data-parallel: two replicas on one card against one process at half the batch"
  local common=(data="$data" epochs=2 imgsz=320 nbs=4 warmup_epochs=0 plots=false project="$out/runs" exist_ok=true)
  timeout 300 gpu/gradscope train "${common[@]}" device=0,0 batch=4 name=two | tail -3 || echo "exit $?"
  timeout 300 gpu/gradscope train "${common[@]}" device=0 batch=2 name=one | tail -3 || echo "exit $?"
  for r in two one; do
    echo "$r: $(cut -d, -f1,3-5 "$out/runs/$r/results.csv" 2>/dev/null | tr '\n' ' ')"
  done

  echo "== 6. the GPU benchmark beside PyTorch on CUDA (where python3 has torch and ultralytics)"
  if python3 -c "import torch, ultralytics" 2>/dev/null; then
    BENCH_BIN=gpu/bench GRADSCOPE_BIN=gpu/gradscope BENCH_DEVICE=0 timeout 900 python3 bench/run.py --gpu \
      && cp bench/GPU.md "$out/" || echo "bench exit $?"
  else
    echo "no torch/ultralytics here: skipped"
  fi
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: tools/gpu_check.sh pack | run [OUT]" >&2; exit 2 ;;
esac
