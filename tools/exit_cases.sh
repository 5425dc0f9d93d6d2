#!/usr/bin/env bash
# Every case of issue 14 ("honest runs") run through one gradscope binary: a markdown table of
# the exit code, the last line printed and the first warning. Run it on two builds to compare:
#   tools/exit_cases.sh target/release/gradscope /tmp/cases-after > after.md
# Needs python3 with safetensors and numpy (the NaN checkpoint) and a free loopback port 8765.
set -u
BIN=$(realpath "$1")
OUT=$2
PY=${PYTHON:-python3}
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT" || exit 1
export GRADSCOPE_DATASETS=$OUT/datasets
export GRADSCOPE_WEIGHTS=$OUT/noweights GRADSCOPE_RELEASES_URL=http://127.0.0.1:9
mkdir -p noweights
QUICK="epochs=1 imgsz=64 batch=8"

# the embedded tree set, unpacked once; broken copies of it
"$BIN" train data=trees epochs=1 imgsz=64 batch=8 project="$OUT/setup" >/dev/null 2>&1
TREES=$GRADSCOPE_DATASETS/trees
GOOD=$OUT/setup/train/weights/best.safetensors
broken() { rm -rf "$OUT/$1" && cp -r "$TREES" "$OUT/$1" && echo "$OUT/$1"; }
d=$(broken garbage_label); head -c 300 /dev/urandom > "$d/labels/train/$(ls "$d/labels/train" | head -1)"
d=$(broken no_labels); rm -rf "$d/labels"
d=$(broken bom); f="$d/labels/train/$(ls "$d/labels/train" | head -1)"; printf '\xef\xbb\xbf' | cat - "$f" > "$f.x" && mv "$f.x" "$f"
d=$(broken bad_jpeg); f="$d/images/train/$(ls "$d/images/train" | head -1)"; head -c 500 "$f" > "$f.x" && mv "$f.x" "$f"
printf 'path: %s\nval: images/val\nnames:\n  0: tree\n' "$TREES" > no_train.yaml
for b in garbage_label no_labels bom bad_jpeg; do
  printf 'path: %s\ntrain: images/train\nval: images/val\nnames:\n  0: tree\n' "$OUT/$b" > "$b.yaml"
done
# a checkpoint with NaN in 75 tensors
$PY - "$GOOD" nan.safetensors <<'EOF'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
for k in sorted(t)[:75]:
    t[k] = np.full_like(t[k], np.nan)
save_file(t, sys.argv[2])
EOF
mkdir -p nan_run/weights && cp "$OUT/setup/train/args.yaml" nan_run/ && mv nan.safetensors nan_run/weights/
head -c 2000 "$TREES/images/val/$(ls "$TREES/images/val" | head -1)" > corrupt.jpg
echo "not an image" > notes.txt
mkdir -p empty
# a user yaml whose download: is a zip served on loopback
mkdir -p serve && (cd "$OUT" && cp -r "$TREES" mini && $PY -c "import shutil; shutil.make_archive('serve/mini', 'zip', '.', 'mini')" && rm -rf mini)
printf 'path: mini\ntrain: images/train\nval: images/val\nnames:\n  0: tree\ndownload: http://127.0.0.1:8765/mini.zip\n' > dl.yaml
(cd serve && exec $PY -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1) &
SERVER=$!
sleep 1

row() {
  local name=$1; shift
  local log="$OUT/log.$(echo "$name" | tr -c 'a-zA-Z0-9' _)"
  "$BIN" "$@" > "$log" 2>&1
  local rc=$?
  local last warn
  last=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-220 | sed 's/|/\\|/g')
  warn=$(grep -im1 'warn\|skipp\|dropped\|no label\|background' "$log" | cut -c1-160 | sed 's/|/\\|/g')
  echo "| $name | \`$*\` | $rc | $last | $warn |"
}

echo "| case | command | exit | last line | first warning |"
echo "|---|---|---|---|---|"
row "lr0=1000 (SGD)" train data=trees epochs=2 imgsz=160 optimizer=SGD lr0=1000 project="$OUT/r"
row "lr0=1e6 (SGD)" train data=trees epochs=2 imgsz=160 optimizer=SGD lr0=1e6 project="$OUT/r"
row "lr0=1000, NaN recovery" train data=trees epochs=2 imgsz=160 optimizer=SGD lr0=1000 batch=2 nbs=2 project="$OUT/r"
row "lr0=1 diverges (SGD, no warmup)" train data=trees epochs=3 imgsz=160 optimizer=SGD lr0=1 warmup_epochs=0 batch=2 nbs=2 project="$OUT/r"
row "accumulate > iterations" train data=trees epochs=1 imgsz=160 batch=16 nbs=64 project="$OUT/r"
row "val: NaN checkpoint" val model="$OUT/nan_run/weights/nan.safetensors" data=trees
row "predict: corrupt JPEG" predict model="$GOOD" source="$OUT/corrupt.jpg" project="$OUT/p"
row "predict: text file" predict model="$GOOD" source="$OUT/notes.txt" project="$OUT/p"
row "predict: empty folder" predict model="$GOOD" source="$OUT/empty" project="$OUT/p"
row "model=yolo26n.pt missing" train model=yolo26n.pt data=trees $QUICK project="$OUT/r"
row "model=<.safetensors>" train model="$GOOD" data=trees $QUICK project="$OUT/r"
for kv in scale=100 translate=50 fliplr=7 conf=2 iou=5 momentum=5 hsv_v=50; do
  row "$kv" train data=trees $QUICK "$kv" project="$OUT/r"
done
n=$(ls "$OUT/r" 2>/dev/null | wc -l)
row "imgsz=100000" train data=trees epochs=1 imgsz=100000 project="$OUT/big"
echo "| (run folders left by imgsz=100000) | | | $(ls "$OUT/big" 2>/dev/null | wc -l) | |"
row "label file of binary garbage" train data="$OUT/garbage_label.yaml" $QUICK project="$OUT/r"
row "no labels folder" train data="$OUT/no_labels.yaml" $QUICK project="$OUT/r"
row "label file with a BOM" train data="$OUT/bom.yaml" $QUICK project="$OUT/r"
row "an image that does not decode" train data="$OUT/bad_jpeg.yaml" $QUICK project="$OUT/r"
row "yaml without train:" train data="$OUT/no_train.yaml" $QUICK project="$OUT/r"
row "data=<a folder>" train data="$TREES" $QUICK project="$OUT/r"
row "user yaml with download:" train data="$OUT/dl.yaml" $QUICK project="$OUT/r"
kill $SERVER 2>/dev/null
