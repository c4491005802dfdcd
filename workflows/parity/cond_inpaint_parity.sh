#!/usr/bin/env bash
# Parity of the image-to-image, inpainting, hires-fix and conditioning workflows in this folder
# against ComfyUI (full-size random SD1.5 checkpoint, CPU fp32; bar: mean |Δ| ≤ 0.5, max |Δ| ≤ 4).
#
#   workflows/parity/cond_inpaint_parity.sh [WORKFLOW_NAME ...]    (default: all sd15_*.json here)
#
# For each workflow: ComfyUI's output is REFS/NAME.png (made with $COMFY_RUN against a running
# ComfyUI reference server when missing), ours comes from target/release/comfyrs, and
# $COMPARE prints mean/max |Δ|. Inputs: the test image ($GEN_IMAGE, 256x256) and the mask of
# gen_test_mask.py, written to $INPUT (ours) and $COMFY_INPUT (ComfyUI's input folder).
# Full-size runs hold $LOCK (one 5-8 GiB run at a time on a shared machine).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODELS=${MODELS:-/work/ref/models}
REFS=${REFS:-/work/ref/refs/condsem}
OUT=${OUT:-/tmp/comfyrs_parity_condsem}
INPUT=${INPUT:-$OUT/input}
COMFY_INPUT=${COMFY_INPUT:-/work/ref/ComfyUI/input}
COMFY_RUN=${COMFY_RUN:-/work/ref/run_comfy.sh}
GEN_IMAGE=${GEN_IMAGE:-/work/shared/parity/gen_test_image.py}
COMPARE=${COMPARE:-/work/shared/parity/compare.py}
LOCK=${LOCK:-/work/ref/fullsize.lock}
BIN=${BIN:-$ROOT/target/release/comfyrs}

mkdir -p "$REFS" "$OUT" "$INPUT"
python3 "$GEN_IMAGE" "$INPUT/comfyrs_test_256.png"
python3 "$HERE/gen_test_mask.py" "$INPUT/comfyrs_test_mask_256.png"
if [ -d "$COMFY_INPUT" ]; then cp "$INPUT"/comfyrs_test_*.png "$COMFY_INPUT/"; fi

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$HERE"/sd15_*.json; do names+=("$(basename "$f" .json)"); done
fi

for name in "${names[@]}"; do
  wf="$HERE/$name.json"
  ref="$REFS/$name.png"
  if [ ! -f "$ref" ]; then
    echo "== $name: ComfyUI reference" >&2
    flock "$LOCK" "$COMFY_RUN" "$wf" "$ref" >&2
  fi
  echo "== $name: comfyrs" >&2
  rm -rf "$OUT/$name"
  start=$(date +%s.%N)
  flock "$LOCK" "$BIN" run "$wf" --models-dir "$MODELS" --input-dir "$INPUT" \
    --output-dir "$OUT/$name" >&2
  end=$(date +%s.%N)
  ours=$(ls "$OUT/$name"/*.png | head -1)
  printf '%s (comfyrs %.1f s): ' "$name" "$(echo "$end - $start" | bc)"
  python3 "$COMPARE" "$ref" "$ours"
done
