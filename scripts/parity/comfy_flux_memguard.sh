#!/bin/bash
# ComfyUI's python under a memory guard, for the real-size Flux memory check (docs/parity.md):
# pass it to scripts/parity/comfy_run.py as --python. It starts /work/ref/venv/bin/python with the
# given arguments, writes that process's VmHWM (peak RSS, kB) to $HWM_FILE every half second,
# and kills it (only it) when the machine's MemAvailable drops under 1.2 GiB, so a run that
# cannot fit fails instead of pushing the shared machine into the OOM killer. (An
# address-space limit would not do: ComfyUI maps the safetensors files, which counts against it.)
PY=${PY:-/work/ref/venv/bin/python}
HWM_FILE=${HWM_FILE:-/tmp/comfy_flux_hwm}
"$PY" "$@" &
child=$!
trap 'kill $child 2>/dev/null' TERM INT
while kill -0 $child 2>/dev/null; do
  avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$child/status 2>/dev/null)
  [ -n "$hwm" ] && echo "$hwm" > "$HWM_FILE"
  if [ "$avail" -lt 1258291 ]; then
    echo "memguard: MemAvailable ${avail} kB, killing ComfyUI (VmHWM ${hwm} kB)" >> "$HWM_FILE.log"
    kill -9 $child
  fi
  sleep 0.5
done
wait $child
