#!/usr/bin/env bash
# Puts what scripts/gpu_check.py needs on the GPU machine into .device/ (git-ignored), which the
# device tool carries: the cuda build of comfyrs, stripped, and copies of the parity files
# (../shared does not travel). See docs/gpu.md.
#
#   scripts/gpu_prepare.sh [CUDA_BINARY] [PARITY_DIR]
#
# CUDA_BINARY defaults to $CARGO_TARGET_DIR/release/comfyrs (build it with
# `cargo build --release --features cuda`); PARITY_DIR to ../shared/parity.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/release/comfyrs}
parity=${2:-$root/../shared/parity}
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
[ -f "$parity/gen_sd15.py" ] || { echo "no gen_sd15.py in $parity" >&2; exit 1; }
if ! nm -D "$bin" 2>/dev/null | grep -q ' U cuInit'; then
  echo "$bin does not link the CUDA driver: not a --features cuda build" >&2
  exit 1
fi
dev=$root/.device
rm -rf "$dev/parity" "$dev/comfyrs"
mkdir -p "$dev/parity/workflows" "$dev/parity/reference"
strip -o "$dev/comfyrs" "$bin"
cp "$parity/gen_sd15.py" "$parity/sd15_layout.json" "$parity/compare.py" "$dev/parity/"
cp "$parity/workflows/sd15_txt2img.json" "$parity/workflows/bench_sd15_512_euler20.json" \
   "$parity/workflows/bench_sd15_256_euler20.json" "$dev/parity/workflows/"
cp "$parity/reference/sd15_txt2img.png" "$dev/parity/reference/"
echo "binary: $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$dev/comfyrs") bytes"
echo ".device/ holds $(du -sb "$dev" | cut -f1) bytes (the device tool carries 64 MiB in all)"
echo 'now: run(command="python3 scripts/gpu_check.py", carry=[".device"], timeout_s=540)'
