"""The ComfyUI side of the 4x upscale benchmark and pixel parity (`examples/upscale_bench.rs`).

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python /path/to/scripts/bench/upscale_comfy.py \
        DIR [SIZE_PX] [RUNS]

On first use it writes, into DIR:
  * `rrdb_x4_random.safetensors`: a random full-size RRDBNet in ESRGAN's old layout (as
    4x-UltraSharp: nf 64, gc 32, 23 blocks, x4), f32, seeded (torch.manual_seed(14));
    convs N(0, (0.1·sqrt(2/fan_in))²) in the RRDB trunk (BasicSR's init scale), N(0,
    2/fan_in) elsewhere, the last conv ×0.003 with bias 0.5 (the 23 blocks grow the features
    about 1.2^23-fold), so the output sits mostly in
    [0, 1];
  * `image_SIZE.safetensors`: `image` [1, SIZE, SIZE, 3] uniform in [0, 1] (seeded).
Then loads the model through ComfyUI's `UpscaleModelLoader` and times
`ImageUpscaleWithModel.execute` RUNS times (2 threads, f32, as `--cpu --force-fp32`),
saving the last output as `comfy_out_SIZE.safetensors` (`image`).
"""
import os
import sys
import time

DIR = os.path.abspath(sys.argv[1])
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 512
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import folder_paths  # noqa: E402
from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel, UpscaleModelLoader  # noqa: E402

torch.set_num_threads(2)
os.makedirs(DIR, exist_ok=True)
model_file = os.path.join(DIR, "rrdb_x4_random.safetensors")
if not os.path.exists(model_file):
    torch.manual_seed(14)
    nf, gc, nb = 64, 32, 23
    sd = {}

    def conv(name, o, i, std, bias_mean=0.0):
        sd[f"{name}.weight"] = torch.randn(o, i, 3, 3) * std
        sd[f"{name}.bias"] = torch.randn(o) * 0.01 + bias_mean

    he = lambda fan: (2.0 / fan) ** 0.5  # noqa: E731
    conv("model.0", nf, 3, he(27))
    for b in range(nb):
        for r in range(1, 4):
            for j in range(1, 6):
                i = nf + (j - 1) * gc
                conv(f"model.1.sub.{b}.RDB{r}.conv{j}.0", gc if j < 5 else nf, i, 0.1 * he(9 * i))
    conv(f"model.1.sub.{nb}", nf, nf, he(9 * nf))
    conv("model.3", nf, nf, he(9 * nf))
    conv("model.6", nf, nf, he(9 * nf))
    conv("model.8", nf, nf, he(9 * nf))
    conv("model.10", 3, nf, 0.003 * he(9 * nf), bias_mean=0.5)
    save_file(sd, model_file)
image_file = os.path.join(DIR, f"image_{SIZE}.safetensors")
if not os.path.exists(image_file):
    g = torch.Generator().manual_seed(SIZE)
    save_file({"image": torch.rand(1, SIZE, SIZE, 3, generator=g)}, image_file)

folder_paths.add_model_folder_path("upscale_models", DIR, is_default=True)
model = UpscaleModelLoader.execute("rrdb_x4_random.safetensors").result[0]
image = load_file(image_file)["image"]
for run in range(RUNS):
    t0, c0 = time.time(), time.process_time()
    out = ImageUpscaleWithModel.execute(model, image).result[0]
    print(f"run {run}: {time.time() - t0:.2f} s, CPU {time.process_time() - c0:.2f} s", flush=True)
save_file({"image": out.contiguous()}, os.path.join(DIR, f"comfy_out_{SIZE}.safetensors"))
print("out", tuple(out.shape), "mean", float(out.mean()), "min", float(out.min()), "max",
      float(out.max()), "clamped share", float(((out == 0) | (out == 1)).float().mean()))
