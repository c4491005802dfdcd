#!/usr/bin/env python3
"""Golden values for the LoRA adapter math, computed by ComfyUI itself (tests/data/lora_comfy_golden.safetensors).

Run with ComfyUI's venv (ComfyUI is not part of this repository):
  COMFYUI_DIR=/path/to/ComfyUI venv/bin/python scripts/gen_lora_comfy_golden.py tests/data/lora_comfy_golden.safetensors

For each case NAME the file holds the LoRA tensors under `NAME.<suffix>` (ComfyUI's key names),
the base weight `W.NAME`, the strength `S.NAME` and ComfyUI's result `OUT.NAME` from
`comfy.lora.load_lora` + `comfy.lora.calculate_weight` (float32, CPU). Made with ComfyUI a125cd84,
torch 2.8.0. Note `lokr_t2`: that ComfyUI fails on a LoKr with a Tucker core ("view size is not
compatible ...", logged) and returns W unchanged; comfyrs applies the delta (see docs/lora.md).
"""
import os
import sys
import torch

sys.path.insert(0, os.environ.get("COMFYUI_DIR", "/work/ref/ComfyUI"))
out_path = sys.argv[1] if len(sys.argv) > 1 else "lora_comfy_golden.safetensors"
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options; comfy.options.enable_args_parsing()
import comfy.lora, comfy.weight_adapter as wa
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
def r(*s, sc=0.5): return (torch.rand(*s, generator=g) * 2 - 1) * sc
out = {}
cases = []
# name: (weight shape, lora dict for key x, strength)
cases.append(("lora_mid", (16, 8, 3, 3), {"lora_down.weight": r(4, 8, 1, 1), "lora_mid.weight": r(4, 4, 3, 3), "lora_up.weight": r(16, 4, 1, 1), "alpha": torch.tensor(2.0)}, 0.7))
cases.append(("loha_tucker", (16, 8, 3, 3), {"hada_w1_a": r(3, 16), "hada_w1_b": r(3, 8), "hada_t1": r(3, 3, 3, 3), "hada_w2_a": r(3, 16), "hada_w2_b": r(3, 8), "hada_t2": r(3, 3, 3, 3), "alpha": torch.tensor(1.5)}, -0.6))
cases.append(("lokr_t2", (16, 8, 3, 3), {"lokr_w1_a": r(4, 2), "lokr_w1_b": r(2, 2), "lokr_w2_a": r(3, 4), "lokr_w2_b": r(3, 4), "lokr_t2": r(3, 3, 3, 3), "alpha": torch.tensor(3.0)}, 0.9))
cases.append(("dora_out", (16, 12), {"lora_down.weight": r(4, 12), "lora_up.weight": r(16, 4), "alpha": torch.tensor(8.0), "dora_scale": r(16, 1) + 1.5}, 0.6))
cases.append(("dora_in_conv", (16, 8, 3, 3), {"lora_down.weight": r(4, 8, 3, 3), "lora_up.weight": r(16, 4, 1, 1), "dora_scale": r(1, 8, 1, 1) + 1.5}, 1.0))
cases.append(("lokr_dora", (16, 12), {"lokr_w1": r(4, 3), "lokr_w2": r(4, 4), "dora_scale": r(16, 1) + 1.0}, -0.4))
for name, shape, d, s in cases:
    x = name
    lora = {f"{x}.{k}": v for k, v in d.items()}
    w = r(*shape, sc=1.0)
    patches = comfy.lora.load_lora(lora, {x: name + ".weight"})
    p = patches[name + ".weight"]
    res = comfy.lora.calculate_weight([(s, p, 1.0, None, None)], w.clone(), name + ".weight")
    for k, v in lora.items(): out[k] = v.float().contiguous()
    out[f"W.{name}"] = w.contiguous()
    out[f"OUT.{name}"] = res.contiguous()
    out[f"S.{name}"] = torch.tensor(float(s))
    print(name, type(p).__name__, (res - w).abs().max().item())
save_file(out, out_path)
