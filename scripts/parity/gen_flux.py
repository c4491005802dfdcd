"""Deterministic random-weight Flux.1 files for full-size parity and memory checks (issue 13).

    cd /work/ref/ComfyUI && flock /tmp/bigmem.lock /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/parity/gen_flux.py WHAT OUT_DIR

WHAT (each writes under OUT_DIR/<folder>/, folders as ComfyUI's models/ tree):

  small     the 2 double + 2 single block Flux at the real widths (hidden 3072, 24 heads of 128,
            context 4096, vec 768, axes [16, 56, 56]):
            diffusion_models/flux_2x2_dev_random.safetensors      bf16, with guidance_in (dev)
            diffusion_models/flux_2x2_schnell_random.safetensors  fp8 e4m3fn, no guidance_in
            text_encoders/clip_l_random.safetensors               the real CLIP-L, fp16
            text_encoders/t5xxl_fp8_e4m3fn_random.safetensors     full-depth T5-XXL (24 blocks),
                                                                  fp8 e4m3fn, every tensor (the
                                                                  stock file's layout)
            text_encoders/t5xxl_depth2_random.safetensors         T5-XXL at 2 blocks, fp16 (ComfyUI
                                                                  needs model_options
                                                                  t5xxl_model_config num_layers 2)
            vae/ae_random.safetensors                             the real 16-channel VAE, f32
            loras/flux_2x2_kohya_random.safetensors               a kohya-keyed rank-16 LoRA
  ckpt      checkpoints/flux1_dev_fp8_2x2_random.safetensors: the 2+2 dev model in the
            flux1-dev-fp8 all-in-one layout (model.diffusion_model. fp8 e4m3fn,
            text_encoders.clip_l.transformer. fp16, text_encoders.t5xxl.transformer. fp8 e4m3fn
            full depth, vae. bf16)
  t5fp8     only text_encoders/t5xxl_fp8_e4m3fn_random.safetensors (the last file of `small`)
  full      diffusion_models/flux_full_dev_fp8_random.safetensors: the real-size Flux-dev (19
            double + 38 single blocks, 11.9 B params) in fp8 e4m3fn (~11.9 GB), written tensor
            by tensor, so the generator holds one tensor at a time

Layouts come from ComfyUI's own classes on the meta device (comfy.ldm.flux.model.Flux,
comfy.clip_model.CLIPTextModel with sd1_clip_config.json, comfy.text_encoders.t5.T5 with
t5_config_xxl.json, the VAE's Encoder/Decoder with Flux's ddconfig). The script checks that
ComfyUI's model_detection calls the dev files `Flux` and the schnell file `FluxSchnell`, that its
VAE detection gives 16 latent channels and that its text encoder detection takes the fp8 T5 as
T5-XXL in fp8 e4m3fn.

Values (gen_sd35.py's scheme, domain "flux-random-v1"): seeded per key with
torch.Generator().manual_seed(crc32("flux-random-v1:" + key)), the key being the one in the
split file (so the all-in-one holds the split files' values, cast): weights of rank >= 2
N(0, 1/fan_in) (T5's attention `q` a further 1/8 = 1/sqrt(d_kv), the scale real T5 folds into q),
1-d norm/scale weights 1 + N(0, 0.02), biases N(0, 0.01), token and position embeddings
N(0, 0.02); then cast to the file's dtype with torch's round-to-nearest-even. The full-size file
uses the domain "flux-full-random-v1".
"""
import json
import os
import struct
import sys
import zlib

WHAT, OUT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402

import comfy.clip_model  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.text_encoders.sd3_clip  # noqa: E402
import comfy.text_encoders.t5  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402
from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))
HERE = os.path.join(os.getcwd(), "comfy")
OPS = comfy.ops.disable_weight_init
ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}


def shapes_of(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def flux_layout(depth, depth_single, guidance):
    with torch.device("meta"):
        net = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                   hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=depth,
                   depth_single_blocks=depth_single, axes_dim=[16, 56, 56], theta=10000,
                   patch_size=2, qkv_bias=True, guidance_embed=guidance,
                   dtype=torch.float16, device="meta", operations=OPS)
        return shapes_of(net)


def clip_l_layout():
    with open(os.path.join(HERE, "sd1_clip_config.json")) as f:
        config = json.load(f)
    with torch.device("meta"):
        return shapes_of(comfy.clip_model.CLIPTextModel(config, torch.float16, "meta", OPS))


def t5_layout(num_layers):
    with open(os.path.join(HERE, "text_encoders", "t5_config_xxl.json")) as f:
        config = json.load(f)
    config["num_layers"] = num_layers
    with torch.device("meta"):
        return shapes_of(comfy.text_encoders.t5.T5(config, torch.float16, "meta", OPS))


def vae_layout():
    dd = dict(double_z=True, z_channels=16, resolution=256, in_channels=3, out_ch=3, ch=128,
              ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    out = {}
    with torch.device("meta"):
        for part, cls in [("encoder", Encoder), ("decoder", Decoder)]:
            for k, s in shapes_of(cls(**dd)).items():
                out[f"{part}.{k}"] = s
    return out


def value(domain, key, shape):
    g = torch.Generator().manual_seed(zlib.crc32((domain + ":" + key).encode()))
    if ("embedding" in key or key == "shared.weight") and key.endswith(".weight") and len(shape) == 2:
        return 0.02 * torch.randn(shape, generator=g)
    if key.endswith(".bias"):
        return 0.01 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return 1.0 + 0.02 * torch.randn(shape, generator=g)
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    t = torch.randn(shape, generator=g) / fan_in ** 0.5
    if key.endswith("SelfAttention.q.weight"):
        t = t / 8.0
    return t


def fp8_rule(key, shape):
    """The Flux fp8 files here store every weight of rank >= 2 in fp8 and the 1-d tensors
    (biases, norm scales) in bf16, so a loader that keeps fp8 must round those itself as
    ComfyUI's fp8-dtype modules do. (The fp8 T5 is all fp8, as the stock file: ComfyUI's
    t5_xxl_detect takes the T5 dtype from encoder.final_layer_norm.weight.)"""
    return len(shape) >= 2


class StreamWriter:
    """A safetensors file written tensor by tensor: the header (names, dtypes, shapes, offsets)
    first, then each tensor's bytes as it is made."""

    def __init__(self, path, entries):
        # entries: [(name, shape, torch dtype)] in file order
        self.path = path
        header, off = {}, 0
        for name, shape, dt in entries:
            n = dt.itemsize
            for d in shape:
                n *= d
            header[name] = {"dtype": ST_DTYPE[dt], "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.entries = entries
        self.header = header
        self.f = open(path + ".part", "wb")
        self.f.write(struct.pack("<Q", len(text)))
        self.f.write(text)
        self.next = 0
        self.total = off

    def write(self, name, tensor):
        want_name, shape, dt = self.entries[self.next]
        assert name == want_name and tuple(tensor.shape) == tuple(shape) and tensor.dtype == dt, (name, want_name)
        self.f.write(tensor.contiguous().view(torch.uint8).numpy().tobytes())
        self.next += 1

    def close(self):
        assert self.next == len(self.entries)
        self.f.close()
        os.replace(self.path + ".part", self.path)
        print(f"wrote {self.path}: {len(self.entries)} tensors, {os.path.getsize(self.path)} bytes", flush=True)


def write_file(path, parts):
    """parts: [(file prefix, domain, {key: shape}, dtype rule(key, shape) -> torch dtype)]."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    entries, makers = [], []
    for prefix, domain, shapes, rule in parts:
        for k in sorted(shapes):
            dt = rule(k, shapes[k])
            entries.append((prefix + k, shapes[k], dt))
            makers.append((domain, k))
    w = StreamWriter(path, entries)
    for (name, shape, dt), (domain, k) in zip(entries, makers):
        w.write(name, value(domain, k, shape).to(dt))
    w.close()


def const(dt):
    return lambda k, s: dt


def fp8_or(dt):
    return lambda k, s: torch.float8_e4m3fn if fp8_rule(k, s) else dt


def check_flux(path, want, prefix=""):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        sd = {k: f.get_slice(k) for k in f.keys()}
    # model_config_from_unet reads shapes and key names only; a slice has get_shape()
    class Shaped:
        def __init__(self, s):
            self.shape = tuple(s.get_shape())
    sdm = {k: Shaped(v) for k, v in sd.items()}
    mc = comfy.model_detection.model_config_from_unet(sdm, prefix)
    assert mc is not None and type(mc).__name__ == want, (path, mc)
    cfg = {k: v for k, v in mc.unet_config.items() if k != "dtype"}
    print("ComfyUI detects", os.path.basename(path), "as", type(mc).__name__, json.dumps(cfg, default=str), flush=True)


def check_text(path, prefix=""):
    from safetensors import safe_open
    sd = {}
    with safe_open(path, "pt") as f:
        for k in f.keys():
            if k.startswith(prefix) and (".block.0." in k or "shared" in k or "final_layer_norm" in k):
                sd[k[len(prefix):]] = f.get_tensor(k)
    det = comfy.text_encoders.sd3_clip.t5_xxl_detect(sd)
    print("ComfyUI's t5_xxl_detect on", os.path.basename(path), det, flush=True)
    return det


def main():
    sub = lambda *p: os.path.join(OUT, *p)  # noqa: E731
    if WHAT == "small":
        write_file(sub("diffusion_models", "flux_2x2_dev_random.safetensors"),
                   [("", "flux-random-v1", flux_layout(2, 2, True), const(torch.bfloat16))])
        check_flux(sub("diffusion_models", "flux_2x2_dev_random.safetensors"), "Flux")
        write_file(sub("diffusion_models", "flux_2x2_schnell_random.safetensors"),
                   [("", "flux-schnell-random-v1", flux_layout(2, 2, False), fp8_or(torch.bfloat16))])
        check_flux(sub("diffusion_models", "flux_2x2_schnell_random.safetensors"), "FluxSchnell")
        write_file(sub("text_encoders", "clip_l_random.safetensors"),
                   [("", "flux-random-v1", clip_l_layout(), const(torch.float16))])
        write_file(sub("vae", "ae_random.safetensors"),
                   [("", "flux-random-v1", vae_layout(), const(torch.float32))])
        write_file(sub("text_encoders", "t5xxl_depth2_random.safetensors"),
                   [("", "flux-random-v1", t5_layout(2), const(torch.float16))])
        lora(sub("loras", "flux_2x2_kohya_random.safetensors"))
        write_file(sub("text_encoders", "t5xxl_fp8_e4m3fn_random.safetensors"),
                   [("", "flux-random-v1", t5_layout(24), const(torch.float8_e4m3fn))])
        det = check_text(sub("text_encoders", "t5xxl_fp8_e4m3fn_random.safetensors"))
        assert det.get("dtype_t5") == torch.float8_e4m3fn, det
    elif WHAT == "t5fp8":
        write_file(sub("text_encoders", "t5xxl_fp8_e4m3fn_random.safetensors"),
                   [("", "flux-random-v1", t5_layout(24), const(torch.float8_e4m3fn))])
        det = check_text(sub("text_encoders", "t5xxl_fp8_e4m3fn_random.safetensors"))
        assert det.get("dtype_t5") == torch.float8_e4m3fn, det
    elif WHAT == "ckpt":
        path = sub("checkpoints", "flux1_dev_fp8_2x2_random.safetensors")
        write_file(path, [
            ("model.diffusion_model.", "flux-random-v1", flux_layout(2, 2, True), fp8_or(torch.bfloat16)),
            ("text_encoders.clip_l.transformer.", "flux-random-v1", clip_l_layout(), const(torch.float16)),
            ("text_encoders.t5xxl.transformer.", "flux-random-v1", t5_layout(24), const(torch.float8_e4m3fn)),
            ("vae.", "flux-random-v1", vae_layout(), const(torch.bfloat16)),
        ])
        check_flux(path, "Flux", "model.diffusion_model.")
        det = check_text(path, "text_encoders.t5xxl.transformer.")
        assert det.get("dtype_t5") == torch.float8_e4m3fn, det
    elif WHAT == "full":
        path = sub("diffusion_models", "flux_full_dev_fp8_random.safetensors")
        write_file(path, [("", "flux-full-random-v1", flux_layout(19, 38, True), fp8_or(torch.bfloat16))])
        check_flux(path, "Flux")
    else:
        sys.exit("WHAT must be small, ckpt or full")


def lora(path):
    """A kohya-keyed LoRA (lora_unet_<module path with _>.lora_down/lora_up/alpha) of rank 16 on
    the attention and MLP linears of the 2+2 model's blocks, up weights N(0, 0.5/rank) so the
    update is visible but does not swamp the weights."""
    shapes = flux_layout(2, 2, True)
    targets = [k[:-len(".weight")] for k in shapes
               if k.endswith(".weight") and len(shapes[k]) == 2
               and (k.startswith("double_blocks.") or k.startswith("single_blocks."))
               and ("attn.qkv" in k or "attn.proj" in k or "mlp.0" in k or "linear1" in k or "linear2" in k)]
    rank = 16
    sd = {}
    for t in sorted(targets):
        out_f, in_f = shapes[t + ".weight"]
        name = "lora_unet_" + t.replace(".", "_")
        g = torch.Generator().manual_seed(zlib.crc32(("flux-lora-random-v1:" + name).encode()))
        sd[name + ".lora_down.weight"] = (torch.randn((rank, in_f), generator=g) / in_f ** 0.5).to(torch.float16)
        sd[name + ".lora_up.weight"] = (torch.randn((out_f, rank), generator=g) * (0.5 / rank)).to(torch.float16)
        sd[name + ".alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(sd, path)
    print(f"wrote {path}: {len(sd)} tensors ({len(targets)} modules), {os.path.getsize(path)} bytes", flush=True)


if __name__ == "__main__":
    main()
