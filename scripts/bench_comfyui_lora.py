#!/usr/bin/env python3
"""Time ComfyUI applying a LoRA to a full-size SD1.5 checkpoint, for BENCHMARKS.md.

Run with ComfyUI's own venv (nothing of ComfyUI is in this repository):
  COMFYUI_DIR=/path/to/ComfyUI venv/bin/python scripts/bench_comfyui_lora.py CHECKPOINT LORA

Same flags as the parity reference server (--cpu --force-fp32 --fp32-text-enc). Measures what a
LoraLoader + first use costs in ComfyUI: reading the file (comfy.utils.load_torch_file),
load_lora_for_models (key map + patch dict), then load_models_gpu on the patched UNet and the
patched CLIP (where ComfyUI computes and writes the patched weights). Then the same with only
strength_model changed (ComfyUI re-patches both models: LoraLoader makes new clones).
"""

import os
import sys
import time

comfy_dir = os.environ.get("COMFYUI_DIR", "/work/ref/ComfyUI")
sys.path.insert(0, comfy_dir)
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"] + sys.argv[1:]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
ckpt, lora_path = sys.argv[-2], sys.argv[-1]
sys.argv = sys.argv[:4]

import comfy.model_management as mm  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


(model, clip, _vae, _), t_ck = timed(lambda: comfy.sd.load_checkpoint_guess_config(ckpt)[:4])
_, t_base = timed(lambda: (mm.load_models_gpu([model]), clip.load_model()))
print(f"checkpoint load {t_ck:.2f} s, base models to device {t_base:.2f} s (not LoRA cost)")

lora, t_read = timed(lambda: comfy.utils.load_torch_file(lora_path, safe_load=True))
(m1, c1), t_map = timed(lambda: comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0))
_, t_unet = timed(lambda: mm.load_models_gpu([m1]))
_, t_clip = timed(lambda: c1.load_model())
print(f"read LoRA {t_read:.3f} s; load_lora_for_models {t_map:.3f} s")
print(f"first application: UNet {t_unet:.2f} s + CLIP {t_clip:.2f} s = {t_unet + t_clip:.2f} s")

(m2, c2), t_map2 = timed(lambda: comfy.sd.load_lora_for_models(model, clip, lora, 0.5, 1.0))
_, t_unet2 = timed(lambda: mm.load_models_gpu([m2]))
_, t_clip2 = timed(lambda: c2.load_model())
print(
    f"strength_model 1.0 -> 0.5: load_lora_for_models {t_map2:.3f} s, UNet {t_unet2:.2f} s, "
    f"CLIP {t_clip2:.2f} s"
)
