"""Times one sampler step's model work with and without a ControlNet in ComfyUI on the CPU,
f32, 2 threads: the SD1.5 UNet forward (batch 2) alone, then the cldm ControlNet forward and
the UNet forward with its residuals; the ComfyUI side of `examples/controlnet_step.rs`.

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python /path/to/scripts/bench/controlnet_step_comfy.py \
        CHECKPOINT CONTROLNET [SIZE_PX] [PASSES]
"""
import os
import sys
import time

ckpt, cnet = sys.argv[1], sys.argv[2]
px, passes = ([int(a) for a in sys.argv[3:]] + [256, 3][len(sys.argv[3:]):])[:2]
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402

import comfy.controlnet  # noqa: E402
import comfy.sd  # noqa: E402

torch.set_num_threads(2)
t0 = time.time()
model = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=False, output_clip=False)[0]
unet = model.model.diffusion_model.float()
cn = comfy.controlnet.load_controlnet(cnet).control_model.float()
print(f"load: {time.time() - t0:.2f} s")
lat = px // 8
x = torch.randn(2, 4, lat, lat)
hint = torch.rand(1, 3, px, px)
ctx = torch.randn(2, 77, 768)
ts = torch.tensor([500.0, 500.0])
with torch.no_grad():
    for i in range(passes):
        t, c0 = time.time(), time.process_time()
        float(unet(x, ts, ctx).sum())
        plain, plain_cpu = time.time() - t, time.process_time() - c0
        t, c0 = time.time(), time.process_time()
        c = cn(x=x, hint=hint, timesteps=ts, context=ctx)
        cn_s, cn_cpu = time.time() - t, time.process_time() - c0
        float(unet(x, ts, ctx, control={"input": [], "middle": c["middle"], "output": c["output"]}).sum())
        w, w_cpu = time.time() - t, time.process_time() - c0
        print(f"pass {i}: UNet {plain:.3f} s, ControlNet {cn_s:.3f} s + UNet with control = {w:.3f} s; "
              f"CPU {plain_cpu:.2f} s, {cn_cpu:.2f} s, {w_cpu:.2f} s", flush=True)
