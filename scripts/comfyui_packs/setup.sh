#!/usr/bin/env bash
# Puts real ComfyUI custom node packs into DEST/custom_nodes for `comfyrs serve --comfyui-packs`
# and for compare.py. The packs are GPL-3/MIT code: they live outside the repository and are
# never committed.
#
#   scripts/comfyui_packs/setup.sh /tmp/packs            # git clone from GitHub
#   MIRRORS=/work/.mirror scripts/comfyui_packs/setup.sh /tmp/packs   # from local git mirrors
#                                                          (OWNER+NAME/repo bare repositories)
set -euo pipefail
DEST="${1:?usage: setup.sh DEST}"
PACKS=(pythongosssss/ComfyUI-Custom-Scripts kijai/ComfyUI-KJNodes cubiq/ComfyUI_essentials)
mkdir -p "$DEST/custom_nodes"
for p in "${PACKS[@]}"; do
  name="${p#*/}"
  target="$DEST/custom_nodes/$name"
  rm -rf "$target"
  if [ -n "${MIRRORS:-}" ]; then
    git_dir="$MIRRORS/${p/\//+}/repo"
    mkdir -p "$target"
    git --git-dir="$git_dir" archive HEAD | tar -x -C "$target"
    echo "$name $(git --git-dir="$git_dir" rev-parse HEAD)"
  else
    git clone -q --depth 1 "https://github.com/$p" "$target"
    echo "$name $(git -C "$target" rev-parse HEAD)"
  fi
done
echo "packs in $DEST/custom_nodes; next:"
echo "  python3 scripts/comfyui_packs/compare.py --packs $DEST/custom_nodes"
