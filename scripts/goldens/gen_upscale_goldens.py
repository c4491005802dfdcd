"""Goldens for comfyrs's upscale models, made by ComfyUI's own nodes and spandrel (issue 14).

Run on CPU with the reference env (ComfyUI v0.3.64, spandrel 0.4.2 from its requirements):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_upscale_goldens.py /path/to/comfyrs

It loads the three tiny fixtures of `fixtures/models/upscale_models/` (written by
`cargo run --bin gen_fixtures`) through ComfyUI's `UpscaleModelLoader` (folder_paths pointed
at that folder) and runs them through spandrel and ComfyUI's `ImageUpscaleWithModel` /
`comfy.utils.tiled_scale`.

spandrel builds every RRDBNet with growth channels gc = 32 (all released ESRGAN files use
32); the fixtures use gc = 4 to stay small, so this script wraps spandrel's `RRDB` block to
take the fixture's gc. Nothing else of spandrel or ComfyUI is touched.

Writes tests/data/upscale/:
  goldens.safetensors : inputs and outputs (f32):
    * `<fixture>.x` / `.net`: the network alone (`descriptor.model(x)`, unclamped) on an
      odd-sized input (the unshuffle model reflect-pads internally and crops);
    * `<fixture>.small_x` / `.small_call`: the descriptor's call (`descriptor(x)`: padding to
      its size requirements, clamp, crop) on a tiny image;
    * `tiled.new.x` / `.out`: `tiled_scale(x, descriptor, tile 20, overlap 8, ×2)` with the
      unshuffle ×2 model on a batch of 2 [2,3,46,50] (4×4 tiles, short last tiles whose
      feathers overlap);
    * `tiled.srvgg.x` / `.out`: the Compact ×4 model, tile 24, overlap 6, [1,3,30,40];
    * `node.image` / `node.out`: `ImageUpscaleWithModel.execute` (tile 512, overlap 32) with
      the ×2 model on a [1,8,530,3] IMAGE: two tiles, the second 50 wide.
  goldens.json : what spandrel detected for each fixture (architecture, scale, channels,
    tags, size requirements), and the ComfyUI commit.
  tiny_rrdb_new_x2.pth : the ×2 fixture as Real-ESRGAN saves its files
    (`torch.save({"params_ema": state_dict})`, f32), for the `.pth` reader.
"""
import json
import os
import sys

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import spandrel.architectures.__arch_helpers.block as B  # noqa: E402
import spandrel.architectures.ESRGAN as esrgan_arch  # noqa: E402

import folder_paths  # noqa: E402
import comfy.utils  # noqa: E402
from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel, UpscaleModelLoader  # noqa: E402

FIXTURES = os.path.join(ROOT, "fixtures/models/upscale_models")
OUT = os.path.join(ROOT, "tests/data/upscale")
os.makedirs(OUT, exist_ok=True)
folder_paths.add_model_folder_path("upscale_models", FIXTURES, is_default=True)

# The fixtures' growth channels (spandrel hard-codes 32).
GC = 4
_orig_rrdb = B.RRDB


def _rrdb(*args, **kw):
    kw["gc"] = GC
    return _orig_rrdb(*args, **kw)


B.RRDB = _rrdb

torch.manual_seed(20261205)
out = {}
info = {"comfyui_commit": "a125cd84b054a57729b5eecab930ca9408719832", "models": {}}


def load(name):
    m = UpscaleModelLoader.execute(name).result[0]
    rs = m.size_requirements
    info["models"][name] = {
        "architecture": m.architecture.id,
        "scale": m.scale,
        "input_channels": m.input_channels,
        "output_channels": m.output_channels,
        "tags": m.tags,
        "size_requirements": {"minimum": rs.minimum, "multiple_of": rs.multiple_of},
    }
    return m


cases = {
    "old": ("tiny_rrdb_old_x4.safetensors", (1, 3, 13, 17), (1, 3, 1, 1)),
    "new": ("tiny_rrdb_new_x2.safetensors", (1, 3, 13, 15), (1, 3, 5, 7)),
    "srvgg": ("tiny_srvgg_x4.safetensors", (1, 3, 11, 9), (1, 3, 2, 3)),
}
models = {}
with torch.inference_mode():
    for key, (name, shape, small) in cases.items():
        m = load(name)
        models[key] = m
        x = torch.rand(shape)
        out[f"{key}.x"] = x
        out[f"{key}.net"] = m.model(x)
        sx = torch.rand(small)
        out[f"{key}.small_x"] = sx
        out[f"{key}.small_call"] = m(sx)

    x = torch.rand(2, 3, 46, 50)
    out["tiled.new.x"] = x
    out["tiled.new.out"] = comfy.utils.tiled_scale(
        x, lambda a: models["new"](a), tile_x=20, tile_y=20, overlap=8, upscale_amount=2
    )
    x = torch.rand(1, 3, 30, 40)
    out["tiled.srvgg.x"] = x
    out["tiled.srvgg.out"] = comfy.utils.tiled_scale(
        x, lambda a: models["srvgg"](a), tile_x=24, tile_y=24, overlap=6, upscale_amount=4
    )

    image = torch.rand(1, 8, 530, 3)
    out["node.image"] = image
    out["node.out"] = ImageUpscaleWithModel.execute(models["new"], image).result[0]

save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(OUT, "goldens.safetensors"))
with open(os.path.join(OUT, "goldens.json"), "w") as f:
    json.dump(info, f, indent=1)
    f.write("\n")

sd = load_file(os.path.join(FIXTURES, "tiny_rrdb_new_x2.safetensors"))
torch.save({"params_ema": {k: v.float() for k, v in sd.items()}}, os.path.join(OUT, "tiny_rrdb_new_x2.pth"))
print(json.dumps(info, indent=1))
for k, v in out.items():
    print(k, tuple(v.shape), float(v.min()), float(v.max()))
