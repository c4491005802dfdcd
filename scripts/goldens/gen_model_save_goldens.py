#!/usr/bin/env python3
"""Writes tests/data/model_save/comfyui_files.json: what ComfyUI's own saver nodes
(CheckpointSave, CLIPSave, VAESave, ModelSave of comfy_extras/nodes_model_merging.py) write for
the tiny SD1.5 and SDXL fixtures: each file's name (relative to the output folder), its
tensors' names, dtypes and shapes, and its metadata.

The models are ComfyUI's own classes built on the fixtures (the tiny widths do not match
ComfyUI's fixed configs, so the modules are made with configs read off the weights):
the diffusion model through model_detection + supported_models (f32, as --force-fp32 holds
it), the CLIP members as sd1_clip.SDClipModel (fp16, ComfyUI's CPU text-encoder dtype) loaded
with the model config's process_clip_state_dict, the VAE as comfy.sd.VAE. Only the GPU
loading call (load_models_gpu) is replaced by a no-op.

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_model_save_goldens.py [OUT.json]
"""
import json
import os
import sys
import tempfile

OUT = [a for a in sys.argv[1:] if not a.startswith("--")]
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402
comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
from comfy_extras import nodes_model_merging as mm  # noqa: E402

comfy.model_management.load_models_gpu = lambda *a, **k: None
FIX = os.path.join(REPO, "fixtures", "models", "checkpoints")


def clip_member(sd, name):
    """An SDClipModel over `sd`'s `{name}.transformer.*` weights (config read off them)."""
    p = f"{name}.transformer.text_model."
    tok = sd[p + "embeddings.token_embedding.weight"]
    layers = 0
    while f"{p}encoder.layers.{layers}.mlp.fc1.weight" in sd:
        layers += 1
    cfg = {"hidden_act": "quick_gelu" if name == "clip_l" else "gelu", "hidden_size": tok.shape[1],
           "intermediate_size": sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
           "layer_norm_eps": 1e-05, "max_position_embeddings": sd[p + "embeddings.position_embedding.weight"].shape[0],
           "num_attention_heads": 2, "num_hidden_layers": layers, "vocab_size": tok.shape[0],
           "projection_dim": tok.shape[1], "eos_token_id": 49407, "bos_token_id": 0, "pad_token_id": 1}
    return comfy.sd1_clip.SDClipModel(textmodel_json_config=cfg, dtype=torch.float16)


class ClipHolder(torch.nn.Module):
    def __init__(self, sd, names):
        super().__init__()
        for n in names:
            self.add_module(n, clip_member(sd, n))
        missing, unexpected = self.load_state_dict(sd, strict=False)
        print("clip load: missing", missing, "unexpected", unexpected)


class FakeClip:
    """The part of comfy.sd.CLIP the savers use."""

    def __init__(self, module):
        self.module = module

    def load_model(self):
        return None

    def get_sd(self):
        return self.module.state_dict()


def tiny_vae(ckpt):
    p = "first_stage_model."
    sd = {k[len(p):]: v for k, v in ckpt.items() if k.startswith(p)}
    ch = sd["encoder.conv_in.weight"].shape[0]
    ch_mult, lvl = [], 0
    while f"encoder.down.{lvl}.block.0.conv1.weight" in sd:
        ch_mult.append(sd[f"encoder.down.{lvl}.block.0.conv1.weight"].shape[0] // ch)
        lvl += 1
    nrb = 0
    while f"encoder.down.0.block.{nrb}.conv1.weight" in sd:
        nrb += 1
    real = comfy.sd.AutoencoderKL

    def kl(**kw):
        kw["ddconfig"] = dict(kw["ddconfig"], ch=ch, ch_mult=ch_mult, num_res_blocks=nrb)
        return real(**kw)
    comfy.sd.AutoencoderKL = kl
    try:
        vae = comfy.sd.VAE(sd=sd)
    finally:
        comfy.sd.AutoencoderKL = real
    return vae


def load(name, cls, clip_names):
    ckpt = load_file(os.path.join(FIX, name))
    prefix = "model.diffusion_model."
    uc = comfy.model_detection.detect_unet_config(ckpt, prefix)
    mc = cls(uc)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(ckpt, prefix)
    model.load_model_weights(ckpt, prefix)
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    clip_sd = mc.process_clip_state_dict({k: v for k, v in ckpt.items()})
    clip_sd = {k: v for k, v in clip_sd.items() if k.split(".")[0] in clip_names}
    clip = FakeClip(ClipHolder(clip_sd, clip_names))
    return patcher, clip, tiny_vae(ckpt)


def describe(out_dir):
    files = {}
    for dirpath, _, names in os.walk(out_dir):
        for n in sorted(names):
            path = os.path.join(dirpath, n)
            rel = os.path.relpath(path, out_dir)
            with safe_open(path, "pt") as f:
                tensors = {k: [str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())] for k in f.keys()}
                files[rel] = {"tensors": tensors, "metadata": f.metadata()}
    return files


def main():
    # inputs before class_type, as the frontend sends a prompt (and comfyrs records it)
    prompt = {"1": {"inputs": {"filename_prefix": "x"}, "class_type": "CheckpointSave"}}
    extra = {"workflow": {"links": [], "nodes": []}}  # sorted: the JSON file is written with sort_keys
    res = {}
    for fam, name, cls, clips in (("sd15", "tiny_sd15.safetensors", comfy.supported_models.SD15, ["clip_l"]),
                                  ("sdxl", "tiny_sdxl.safetensors", comfy.supported_models.SDXL, ["clip_l", "clip_g"])):
        model, clip, vae = load(name, cls, clips)
        with tempfile.TemporaryDirectory() as out:
            for node in (mm.CheckpointSave, mm.CLIPSave, mm.VAESave, mm.ModelSave):
                n = node()
                n.output_dir = out
                kw = {"prompt": prompt, "extra_pnginfo": extra}
                if node is mm.CheckpointSave:
                    n.save(model, clip, vae, "checkpoints/ComfyUI", **kw)
                    n.save(model, clip, vae, "checkpoints/ComfyUI", **kw)  # the counter
                elif node is mm.CLIPSave:
                    n.save(clip, "clip/ComfyUI", **kw)
                elif node is mm.VAESave:
                    n.save(vae, "vae/ComfyUI_vae", **kw)
                else:
                    n.save(model, "diffusion_models/ComfyUI", **kw)
            res[fam] = describe(out)
    out = OUT[0] if OUT else os.path.join(REPO, "tests", "data", "model_save", "comfyui_files.json")
    with open(out, "w") as f:
        json.dump({"prompt": prompt, "extra_pnginfo": extra, "files": res}, f, indent=1, sort_keys=True)
        f.write("\n")
    print("->", out)


if __name__ == "__main__":
    main()
