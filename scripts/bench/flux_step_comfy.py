"""Times forward passes of ComfyUI's Flux transformer (comfy.ldm.flux.model.Flux) with the
real widths and a reduced block count on the CPU, f32 (as `--cpu --force-fp32` computes a
model that fits in memory), 2 threads; the ComfyUI side of `examples/flux_step.rs`.

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python /path/to/scripts/bench/flux_step_comfy.py \
        [SIZE_PX] [DOUBLE] [SINGLE] [PASSES]
"""
import os
import sys
import time

args = [int(a) for a in sys.argv[1:]]
px, depth, single, passes = (args + [256, 2, 2, 3][len(args):])[:4]
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402

import comfy.ldm.modules.attention as attn  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402

torch.set_num_threads(2)
assert attn.optimized_attention is attn.attention_sub_quad
t0 = time.time()
m = Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, in_channels=16,
         out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
         num_heads=24, depth=depth, depth_single_blocks=single, axes_dim=[16, 56, 56],
         theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)
with torch.no_grad():
    for k, p in m.named_parameters():
        if k.endswith(".scale"):
            p.fill_(1.0)
        else:
            p.normal_(0, 0.02)
print(f"build ({depth} double + {single} single blocks, f32): {time.time() - t0:.2f} s")
lat = px // 8
x = torch.randn(1, 16, lat, lat)
ctx = torch.randn(1, 256, 4096)
y = torch.randn(1, 768)
with torch.no_grad():
    for i in range(passes):
        t = time.time()
        out = m(x, torch.tensor([0.7]), ctx, y=y, guidance=torch.tensor([3.5]))
        float(out.sum())
        print(f"pass {i}: {time.time() - t:.3f} s")
