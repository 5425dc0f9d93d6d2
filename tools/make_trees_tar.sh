#!/usr/bin/env bash
# Packs the NEON tree-crown tiles (../shared/data/deepforest_trees_yolo: images, labels, data.yaml,
# licence and source notes) into crates/gradscope/embedded/trees.tar, the dataset that
# `gradscope train` uses with no arguments. Deterministic (sorted names, fixed times and owners).
set -euo pipefail
src="${1:-../shared/data/deepforest_trees_yolo}"
out="$(dirname "$0")/../crates/gradscope/embedded/trees.tar"
tar --sort=name --mtime='2026-01-01 00:00Z' --owner=0 --group=0 --numeric-owner \
    -C "$src" -cf "$out" data.yaml LICENSE.deepforest SOURCE.md images labels
ls -l "$out"
