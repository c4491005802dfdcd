//! The tiny deterministic random-weight checkpoints used by tests, written by
//! `cargo run --bin gen_fixtures`: `tiny_sd15`, `tiny_sdxl` and `tiny_sdxl_refiner` in
//! `fixtures/models/checkpoints/`.
//!
//! `tiny_flux` / `tiny_flux_schnell` (`fixtures/models/diffusion_models/`) are Flux
//! transformers in the bare BFL layout at hidden 64 (4 heads of 16, 1 double + 1 single
//! block; text width 32 = the tiny T5-XXL's d_model, pooled width 32 = the tiny CLIP-L's), dev with `guidance_in`,
//! schnell without; `tiny_flux_vae` (`fixtures/models/vae/`) is the tiny VAE with 16 latent
//! channels and no quant convs, as Flux's `ae.safetensors`.
//!
//! The SDXL pair uses SDXL's real single-file layout at tiny widths: a UNet with linear
//! transformer projections, 64-channel heads and `label_emb` (ADM = pooled + 6·256 for the
//! base, + 5·256 for the refiner); the base's CLIP-L as HF `text_model.*` under
//! `conditioner.embedders.0.transformer.` and its bigG in OpenCLIP layout
//! (`transformer.resblocks.*`, `text_projection`) under `conditioner.embedders.1.model.`
//! (width 48, 3 layers, projection 48); the refiner has that bigG alone, under
//! `conditioner.embedders.0.model.`. comfyrs recognises them by structure
//! ([`crate::models::family`]); ComfyUI, which matches the real depths only, would not.
//!
//! The SD1.5 layout:
//! Layout: the real LDM single-file names, tiny sizes:
//! * UNet: in/out 4, model_channels 32, channel_mult [1, 2], 1 res block per
//!   level, a SpatialTransformer (depth 1, 8 heads as SD1) at level 1 and in
//!   the middle block, context_dim 32;
//! * CLIP: width 32, 2 layers, MLP 128, 4 heads (head dim 8), full 49408-token
//!   vocabulary, 77 positions, plus the int64 `position_ids` buffer;
//! * VAE: ch 32, ch_mult [1, 1, 1, 2] (so the usual ×8 downscale), 1 res block,
//!   z_channels 4, quant_conv/post_quant_conv.
//!
//! Values (fp16, depend only on the key): `seed64` = first 8 bytes (LE) of
//! `blake3("tiny-sd15-v1\0" + key)`; splitmix64 stream
//! `r(n) = mix64(seed64 + (n+1)·0x9E3779B97F4A7C15)`; Box–Muller in f64:
//! `u1 = ((r(2i)>>11)+1)·2^-53`, `u2 = (r(2i+1)>>11)·2^-53`,
//! `z = sqrt(-2 ln u1)·cos(2π u2)`; value = mean + std·z rounded to fp16.
//! Kinds: ≥2-D weights std `1/sqrt(fan_in)` (×[`VAE_ENCODER_OUT_GAIN`] for the
//! VAE encoder's conv_out, as gen_sd15.py does, so latents have a realistic
//! spread), embeddings std 0.02, 1-D norm weights mean 1 std 0.02, biases std
//! 0.01.

use std::collections::BTreeMap;

use safetensors::tensor::{Dtype, TensorView};

/// Gain on the VAE encoder's conv_out (weight and bias).
pub const VAE_ENCODER_OUT_GAIN: f64 = 9.0;

/// Repository-relative path of the committed fixture.
pub const TINY_SD15_PATH: &str = "fixtures/models/checkpoints/tiny_sd15.safetensors";

struct Spec {
    shape: Vec<usize>,
    int_arange: bool,
}

fn f(shape: &[usize]) -> Spec {
    Spec {
        shape: shape.to_vec(),
        int_arange: false,
    }
}

type Layout = BTreeMap<String, Spec>;

fn add(l: &mut Layout, key: String, shape: &[usize]) {
    l.insert(key, f(shape));
}

fn conv(l: &mut Layout, p: &str, out: usize, inp: usize, k: usize) {
    add(l, format!("{p}.weight"), &[out, inp, k, k]);
    add(l, format!("{p}.bias"), &[out]);
}

fn lin(l: &mut Layout, p: &str, out: usize, inp: usize, bias: bool) {
    add(l, format!("{p}.weight"), &[out, inp]);
    if bias {
        add(l, format!("{p}.bias"), &[out]);
    }
}

fn norm(l: &mut Layout, p: &str, c: usize) {
    add(l, format!("{p}.weight"), &[c]);
    add(l, format!("{p}.bias"), &[c]);
}

fn unet_res(l: &mut Layout, p: &str, inp: usize, out: usize, emb: usize) {
    norm(l, &format!("{p}.in_layers.0"), inp);
    conv(l, &format!("{p}.in_layers.2"), out, inp, 3);
    lin(l, &format!("{p}.emb_layers.1"), out, emb, true);
    norm(l, &format!("{p}.out_layers.0"), out);
    conv(l, &format!("{p}.out_layers.3"), out, out, 3);
    if inp != out {
        conv(l, &format!("{p}.skip_connection"), out, inp, 1);
    }
}

fn unet_st(l: &mut Layout, p: &str, c: usize, ctx: usize, linear: bool) {
    norm(l, &format!("{p}.norm"), c);
    let proj = |l: &mut Layout, name: &str| {
        if linear {
            lin(l, &format!("{p}.{name}"), c, c, true)
        } else {
            conv(l, &format!("{p}.{name}"), c, c, 1)
        }
    };
    proj(l, "proj_in");
    let b = format!("{p}.transformer_blocks.0");
    for a in ["attn1", "attn2"] {
        let kv_in = if a == "attn1" { c } else { ctx };
        lin(l, &format!("{b}.{a}.to_q"), c, c, false);
        lin(l, &format!("{b}.{a}.to_k"), c, kv_in, false);
        lin(l, &format!("{b}.{a}.to_v"), c, kv_in, false);
        lin(l, &format!("{b}.{a}.to_out.0"), c, c, true);
    }
    lin(l, &format!("{b}.ff.net.0.proj"), 8 * c, c, true);
    lin(l, &format!("{b}.ff.net.2"), c, 4 * c, true);
    for n in ["norm1", "norm2", "norm3"] {
        norm(l, &format!("{b}.{n}"), c);
    }
    proj(l, "proj_out");
}

/// The tiny UNet: `ctx` cross-attention width; `adm` the ADM input width (SDXL), which
/// also switches the transformers to linear projections.
fn tiny_unet(l: &mut Layout, ctx: usize, adm: Option<usize>) {
    let p = "model.diffusion_model";
    let mc = 32;
    let emb = 4 * mc;
    let linear = adm.is_some();
    lin(l, &format!("{p}.time_embed.0"), emb, mc, true);
    lin(l, &format!("{p}.time_embed.2"), emb, emb, true);
    if let Some(adm) = adm {
        lin(l, &format!("{p}.label_emb.0.0"), emb, adm, true);
        lin(l, &format!("{p}.label_emb.0.2"), emb, emb, true);
    }
    conv(l, &format!("{p}.input_blocks.0.0"), mc, 4, 3);
    unet_res(l, &format!("{p}.input_blocks.1.0"), mc, mc, emb);
    conv(l, &format!("{p}.input_blocks.2.0.op"), mc, mc, 3);
    unet_res(l, &format!("{p}.input_blocks.3.0"), mc, 2 * mc, emb);
    unet_st(l, &format!("{p}.input_blocks.3.1"), 2 * mc, ctx, linear);
    unet_res(l, &format!("{p}.middle_block.0"), 2 * mc, 2 * mc, emb);
    unet_st(l, &format!("{p}.middle_block.1"), 2 * mc, ctx, linear);
    unet_res(l, &format!("{p}.middle_block.2"), 2 * mc, 2 * mc, emb);
    unet_res(l, &format!("{p}.output_blocks.0.0"), 4 * mc, 2 * mc, emb);
    unet_st(l, &format!("{p}.output_blocks.0.1"), 2 * mc, ctx, linear);
    unet_res(l, &format!("{p}.output_blocks.1.0"), 3 * mc, 2 * mc, emb);
    unet_st(l, &format!("{p}.output_blocks.1.1"), 2 * mc, ctx, linear);
    conv(l, &format!("{p}.output_blocks.1.2.conv"), 2 * mc, 2 * mc, 3);
    unet_res(l, &format!("{p}.output_blocks.2.0"), 3 * mc, mc, emb);
    unet_res(l, &format!("{p}.output_blocks.3.0"), 2 * mc, mc, emb);
    norm(l, &format!("{p}.out.0"), mc);
    conv(l, &format!("{p}.out.2"), 4, mc, 3);
}

fn vae_res(l: &mut Layout, p: &str, inp: usize, out: usize) {
    norm(l, &format!("{p}.norm1"), inp);
    conv(l, &format!("{p}.conv1"), out, inp, 3);
    norm(l, &format!("{p}.norm2"), out);
    conv(l, &format!("{p}.conv2"), out, out, 3);
    if inp != out {
        conv(l, &format!("{p}.nin_shortcut"), out, inp, 1);
    }
}

fn vae_mid(l: &mut Layout, p: &str, c: usize) {
    vae_res(l, &format!("{p}.block_1"), c, c);
    norm(l, &format!("{p}.attn_1.norm"), c);
    for n in ["q", "k", "v", "proj_out"] {
        conv(l, &format!("{p}.attn_1.{n}"), c, c, 1);
    }
    vae_res(l, &format!("{p}.block_2"), c, c);
}

fn tiny_vae(l: &mut Layout) {
    tiny_vae_with(l, "first_stage_model.", 4, true);
}

/// The tiny VAE under `root` (a prefix ending in '.', or empty) with `z` latent channels,
/// with or without quant convs (Flux's `ae.safetensors` has none).
fn tiny_vae_with(l: &mut Layout, root: &str, z: usize, quant: bool) {
    let (ch, mult, nrb) = (32usize, [1usize, 1, 1, 2], 1usize);
    let e = format!("{root}encoder");
    conv(l, &format!("{e}.conv_in"), ch, 3, 3);
    let mut block_in = ch;
    for (i, m) in mult.iter().enumerate() {
        let out = ch * m;
        for j in 0..nrb {
            vae_res(l, &format!("{e}.down.{i}.block.{j}"), block_in, out);
            block_in = out;
        }
        if i + 1 != mult.len() {
            conv(l, &format!("{e}.down.{i}.downsample.conv"), out, out, 3);
        }
    }
    vae_mid(l, &format!("{e}.mid"), block_in);
    norm(l, &format!("{e}.norm_out"), block_in);
    conv(l, &format!("{e}.conv_out"), 2 * z, block_in, 3);
    let d = format!("{root}decoder");
    let mut block_in = ch * mult[mult.len() - 1];
    conv(l, &format!("{d}.conv_in"), block_in, z, 3);
    vae_mid(l, &format!("{d}.mid"), block_in);
    for i in (0..mult.len()).rev() {
        let out = ch * mult[i];
        for j in 0..=nrb {
            vae_res(l, &format!("{d}.up.{i}.block.{j}"), block_in, out);
            block_in = out;
        }
        if i != 0 {
            conv(l, &format!("{d}.up.{i}.upsample.conv"), out, out, 3);
        }
    }
    norm(l, &format!("{d}.norm_out"), block_in);
    conv(l, &format!("{d}.conv_out"), 3, block_in, 3);
    if quant {
        conv(l, &format!("{root}quant_conv"), 2 * z, 2 * z, 1);
        conv(l, &format!("{root}post_quant_conv"), z, z, 1);
    }
}

/// A tiny cldm ControlNet matching [`tiny_unet`]'s encoder (same widths, context `ctx`,
/// ADM `adm`) under `p` (`"control_model."` for the `.pth` layout, or `""`): the hint
/// encoder 3→16→16→32→32→96→96→256→32 (strides 2 at convs 2, 4, 6), a zero conv after each
/// of the 4 input blocks and after the middle block (random here, zero in a fresh
/// ControlNet, so the residuals are not zero).
fn tiny_controlnet(l: &mut Layout, p: &str, ctx: usize, adm: Option<usize>) {
    let mc = 32;
    let emb = 4 * mc;
    let linear = adm.is_some();
    lin(l, &format!("{p}time_embed.0"), emb, mc, true);
    lin(l, &format!("{p}time_embed.2"), emb, emb, true);
    if let Some(adm) = adm {
        lin(l, &format!("{p}label_emb.0.0"), emb, adm, true);
        lin(l, &format!("{p}label_emb.0.2"), emb, emb, true);
    }
    let hint = [3, 16, 16, 32, 32, 96, 96, 256, mc];
    for i in 0..8 {
        conv(
            l,
            &format!("{p}input_hint_block.{}", 2 * i),
            hint[i + 1],
            hint[i],
            3,
        );
    }
    conv(l, &format!("{p}input_blocks.0.0"), mc, 4, 3);
    unet_res(l, &format!("{p}input_blocks.1.0"), mc, mc, emb);
    conv(l, &format!("{p}input_blocks.2.0.op"), mc, mc, 3);
    unet_res(l, &format!("{p}input_blocks.3.0"), mc, 2 * mc, emb);
    unet_st(l, &format!("{p}input_blocks.3.1"), 2 * mc, ctx, linear);
    unet_res(l, &format!("{p}middle_block.0"), 2 * mc, 2 * mc, emb);
    unet_st(l, &format!("{p}middle_block.1"), 2 * mc, ctx, linear);
    unet_res(l, &format!("{p}middle_block.2"), 2 * mc, 2 * mc, emb);
    for (i, c) in [mc, mc, mc, 2 * mc].into_iter().enumerate() {
        conv(l, &format!("{p}zero_convs.{i}.0"), c, c, 1);
    }
    conv(l, &format!("{p}middle_block_out.0"), 2 * mc, 2 * mc, 1);
}

/// Repository-relative path of the tiny SD1.5 ControlNet (`control_model.*` layout).
pub const TINY_CONTROLNET_SD15_PATH: &str =
    "fixtures/models/controlnet/tiny_controlnet_sd15.safetensors";
/// Repository-relative path of the tiny SDXL ControlNet (bare LDM names).
pub const TINY_CONTROLNET_SDXL_PATH: &str =
    "fixtures/models/controlnet/tiny_controlnet_sdxl.safetensors";

/// The bytes of `tiny_controlnet_sd15.safetensors`: [`tiny_controlnet`] for `tiny_sd15`.
pub fn tiny_controlnet_sd15_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_controlnet(&mut layout, "control_model.", TINY_L_WIDTH, None);
    serialize(&layout, "tiny_controlnet_sd15 v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_controlnet_sdxl.safetensors`: [`tiny_controlnet`] for `tiny_sdxl`.
pub fn tiny_controlnet_sdxl_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_controlnet(
        &mut layout,
        "",
        TINY_L_WIDTH + TINY_G_WIDTH,
        Some(TINY_G_WIDTH + 6 * 256),
    );
    serialize(&layout, "tiny_controlnet_sdxl v1 (src/models/fixture.rs)")
}

/// Hidden width of the tiny Flux (4 heads of 16, rotary axes [4, 6, 6]).
pub const TINY_FLUX_HIDDEN: usize = 64;
/// Text-token width (`txt_in` input) of the tiny Flux: a tiny T5's d_model.
pub const TINY_FLUX_CONTEXT: usize = TINY_T5.0;
/// Pooled width (`vector_in` input) of the tiny Flux: the tiny CLIP-L's width.
pub const TINY_FLUX_VEC: usize = TINY_L_WIDTH;

/// A tiny Flux transformer in the bare BFL layout (as `flux1-dev.safetensors`): 16 latent
/// channels, hidden [`TINY_FLUX_HIDDEN`], MLP ×4, 1 double and 1 single block, QKV biases,
/// and `guidance_in` for dev.
fn tiny_flux(l: &mut Layout, guidance: bool) {
    tiny_flux_in(l, guidance, 16);
}

/// [`tiny_flux`] whose `img_in` takes `in_channels` latent channels (16 plain; 96 for Fill:
/// latent + masked-image latent + the 8×8-folded mask; 32 for Canny/Depth: latent + control
/// image latent), as the Flux Fill/Canny/Depth files differ from dev.
fn tiny_flux_in(l: &mut Layout, guidance: bool, in_channels: usize) {
    let (hd, ctx, vec, mlp, head) = (
        TINY_FLUX_HIDDEN,
        TINY_FLUX_CONTEXT,
        TINY_FLUX_VEC,
        4 * TINY_FLUX_HIDDEN,
        16usize,
    );
    lin(l, "img_in", hd, in_channels * 4, true);
    lin(l, "txt_in", hd, ctx, true);
    let mut embedder = |p: &str, inp: usize| {
        lin(l, &format!("{p}.in_layer"), hd, inp, true);
        lin(l, &format!("{p}.out_layer"), hd, hd, true);
    };
    embedder("time_in", 256);
    embedder("vector_in", vec);
    if guidance {
        embedder("guidance_in", 256);
    }
    let qk = |l: &mut Layout, p: &str| {
        add(l, format!("{p}.query_norm.scale"), &[head]);
        add(l, format!("{p}.key_norm.scale"), &[head]);
    };
    for s in ["img", "txt"] {
        let p = "double_blocks.0";
        lin(l, &format!("{p}.{s}_mod.lin"), 6 * hd, hd, true);
        lin(l, &format!("{p}.{s}_attn.qkv"), 3 * hd, hd, true);
        qk(l, &format!("{p}.{s}_attn.norm"));
        lin(l, &format!("{p}.{s}_attn.proj"), hd, hd, true);
        lin(l, &format!("{p}.{s}_mlp.0"), mlp, hd, true);
        lin(l, &format!("{p}.{s}_mlp.2"), hd, mlp, true);
    }
    let p = "single_blocks.0";
    lin(l, &format!("{p}.linear1"), 3 * hd + mlp, hd, true);
    lin(l, &format!("{p}.linear2"), hd, hd + mlp, true);
    qk(l, &format!("{p}.norm"));
    lin(l, &format!("{p}.modulation.lin"), 3 * hd, hd, true);
    lin(l, "final_layer.adaLN_modulation.1", 2 * hd, hd, true);
    lin(l, "final_layer.linear", 4 * 16, hd, true);
}

/// Width of the tiny CLIP-L.
const TINY_L_WIDTH: usize = 32;
/// Width (and projection width) of the tiny bigG.
const TINY_G_WIDTH: usize = 48;

/// A tiny OpenCLIP text tower under `p` (SDXL's bigG layout).
fn tiny_open_clip(l: &mut Layout, p: &str) {
    let (w, layers, mlp) = (TINY_G_WIDTH, 3usize, 4 * TINY_G_WIDTH);
    add(l, format!("{p}.token_embedding.weight"), &[49408, w]);
    add(l, format!("{p}.positional_embedding"), &[77, w]);
    for i in 0..layers {
        let q = format!("{p}.transformer.resblocks.{i}");
        norm(l, &format!("{q}.ln_1"), w);
        add(l, format!("{q}.attn.in_proj_weight"), &[3 * w, w]);
        add(l, format!("{q}.attn.in_proj_bias"), &[3 * w]);
        lin(l, &format!("{q}.attn.out_proj"), w, w, true);
        norm(l, &format!("{q}.ln_2"), w);
        lin(l, &format!("{q}.mlp.c_fc"), mlp, w, true);
        lin(l, &format!("{q}.mlp.c_proj"), w, mlp, true);
    }
    norm(l, &format!("{p}.ln_final"), w);
    add(l, format!("{p}.text_projection"), &[w, w]);
}

fn tiny_clip(l: &mut Layout, p: &str) {
    tiny_clip_layers(l, p, 2)
}

/// The tiny CLIP-L with `layers` layers (SD3's uses 3: ComfyUI takes its penultimate layer
/// and asserts more than 2 layers).
fn tiny_clip_layers(l: &mut Layout, p: &str, layers: usize) {
    let (w, mlp) = (TINY_L_WIDTH, 128usize);
    add(
        l,
        format!("{p}.embeddings.token_embedding.weight"),
        &[49408, w],
    );
    add(
        l,
        format!("{p}.embeddings.position_embedding.weight"),
        &[77, w],
    );
    l.insert(
        format!("{p}.embeddings.position_ids"),
        Spec {
            shape: vec![1, 77],
            int_arange: true,
        },
    );
    for i in 0..layers {
        let q = format!("{p}.encoder.layers.{i}");
        norm(l, &format!("{q}.layer_norm1"), w);
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            lin(l, &format!("{q}.self_attn.{n}"), w, w, true);
        }
        norm(l, &format!("{q}.layer_norm2"), w);
        lin(l, &format!("{q}.mlp.fc1"), mlp, w, true);
        lin(l, &format!("{q}.mlp.fc2"), w, mlp, true);
    }
    norm(l, &format!("{p}.final_layer_norm"), w);
}

fn mix64(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58476D1CE4E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// `count` standard normals of the stream of `key`.
pub fn key_normals(key: &str, count: usize) -> Vec<f64> {
    let mut h = blake3::Hasher::new();
    h.update(b"tiny-sd15-v1\0");
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_bytes()[..8]);
    let seed = u64::from_le_bytes(b);
    let r = |n: u64| mix64(seed.wrapping_add((n + 1).wrapping_mul(0x9E3779B97F4A7C15)));
    (0..count as u64)
        .map(|i| {
            let u1 = ((r(2 * i) >> 11) + 1) as f64 * 2f64.powi(-53);
            let u2 = (r(2 * i + 1) >> 11) as f64 * 2f64.powi(-53);
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        })
        .collect()
}

fn values(key: &str, shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let (mean, std) =
        if key.ends_with("token_embedding.weight") || key.ends_with("position_embedding.weight") {
            (0.0, 0.02)
        } else if key.ends_with("pos_embed") {
            // MMDiT's position table (sin-cos in real files): values of order 1.
            (0.0, 0.5)
        } else if key.ends_with("positional_embedding") || key.ends_with("in_proj_bias") {
            (0.0, if key.ends_with("bias") { 0.01 } else { 0.02 })
        } else if key.ends_with(".bias") {
            (0.0, 0.01)
        } else if shape.len() == 1 {
            (1.0, 0.02)
        } else {
            let fan_in: usize = shape[1..].iter().product();
            (0.0, 1.0 / (fan_in as f64).sqrt())
        };
    let gain = if key.starts_with("first_stage_model.encoder.conv_out.")
        || key.starts_with("encoder.conv_out.")
    {
        VAE_ENCODER_OUT_GAIN
    } else {
        1.0
    };
    key_normals(key, n)
        .into_iter()
        .map(|z| mean + std * gain * z)
        .collect()
}

/// Repository-relative path of the tiny SDXL base checkpoint.
pub const TINY_SDXL_PATH: &str = "fixtures/models/checkpoints/tiny_sdxl.safetensors";
/// Repository-relative path of the tiny SDXL refiner checkpoint.
pub const TINY_SDXL_REFINER_PATH: &str =
    "fixtures/models/checkpoints/tiny_sdxl_refiner.safetensors";

/// The bytes of `tiny_sd15.safetensors`.
pub fn tiny_sd15_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_unet(&mut layout, TINY_L_WIDTH, None);
    tiny_vae(&mut layout);
    tiny_clip(&mut layout, "cond_stage_model.transformer.text_model");
    serialize(&layout, "tiny_sd15 v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_sdxl.safetensors` (module docs).
pub fn tiny_sdxl_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    let ctx = TINY_L_WIDTH + TINY_G_WIDTH;
    tiny_unet(&mut layout, ctx, Some(TINY_G_WIDTH + 6 * 256));
    tiny_vae(&mut layout);
    tiny_clip(
        &mut layout,
        "conditioner.embedders.0.transformer.text_model",
    );
    tiny_open_clip(&mut layout, "conditioner.embedders.1.model");
    serialize(&layout, "tiny_sdxl v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_sdxl_refiner.safetensors` (module docs).
pub fn tiny_sdxl_refiner_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_unet(&mut layout, TINY_G_WIDTH, Some(TINY_G_WIDTH + 5 * 256));
    tiny_vae(&mut layout);
    tiny_open_clip(&mut layout, "conditioner.embedders.0.model");
    serialize(&layout, "tiny_sdxl_refiner v1 (src/models/fixture.rs)")
}

/// Repository-relative path of the tiny Flux-dev diffusion model (UNETLoader).
pub const TINY_FLUX_PATH: &str = "fixtures/models/diffusion_models/tiny_flux.safetensors";
/// Repository-relative path of the tiny Flux-schnell diffusion model.
pub const TINY_FLUX_SCHNELL_PATH: &str =
    "fixtures/models/diffusion_models/tiny_flux_schnell.safetensors";
/// Repository-relative path of the tiny 16-channel Flux VAE (VAELoader).
pub const TINY_FLUX_VAE_PATH: &str = "fixtures/models/vae/tiny_flux_vae.safetensors";

/// The bytes of `tiny_flux.safetensors` (dev: with `guidance_in`).
pub fn tiny_flux_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_flux(&mut layout, true);
    serialize(&layout, "tiny_flux v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_flux_schnell.safetensors` (no `guidance_in`).
pub fn tiny_flux_schnell_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_flux(&mut layout, false);
    serialize(&layout, "tiny_flux_schnell v1 (src/models/fixture.rs)")
}

/// Repository-relative path of the tiny Flux Fill model (`img_in` over 96 channels = 384
/// inputs, as `flux1-fill-dev.safetensors`).
pub const TINY_FLUX_FILL_PATH: &str = "fixtures/models/diffusion_models/tiny_flux_fill.safetensors";
/// Repository-relative path of the tiny Flux Canny/Depth model (`img_in` over 32 channels =
/// 128 inputs, as `flux1-canny-dev.safetensors` / `flux1-depth-dev.safetensors`).
pub const TINY_FLUX_CANNY_PATH: &str =
    "fixtures/models/diffusion_models/tiny_flux_canny.safetensors";

/// The bytes of `tiny_flux_fill.safetensors` (dev with guidance, 96 input channels).
pub fn tiny_flux_fill_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_flux_in(&mut layout, true, 96);
    serialize(&layout, "tiny_flux_fill v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_flux_canny.safetensors` (dev with guidance, 32 input channels).
pub fn tiny_flux_canny_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_flux_in(&mut layout, true, 32);
    serialize(&layout, "tiny_flux_canny v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_flux_vae.safetensors`: the tiny VAE with 16 latent channels, no
/// quant convs, bare `encoder.`/`decoder.` keys (Flux's `ae.safetensors` layout).
pub fn tiny_flux_vae_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_vae_with(&mut layout, "", 16, false);
    serialize(&layout, "tiny_flux_vae v1 (src/models/fixture.rs)")
}

fn serialize(layout: &Layout, name: &str) -> Vec<u8> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, spec) in layout {
        if spec.int_arange {
            let n: usize = spec.shape.iter().product();
            let bytes = (0..n as i64).flat_map(|i| i.to_le_bytes()).collect();
            buffers.push((key.clone(), Dtype::I64, spec.shape.clone(), bytes));
        } else {
            let bytes = values(key, &spec.shape)
                .into_iter()
                .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
                .collect();
            buffers.push((key.clone(), Dtype::F16, spec.shape.clone(), bytes));
        }
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                TensorView::new(*d, s.clone(), b).expect("consistent tensor view"),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("comfyrs_fixture".to_string(), name.to_string());
    safetensors::tensor::serialize(views, Some(meta)).expect("serialize safetensors")
}

// ---------------------------------------------------------------------------------------
// Flux text encoders (separate files, as DualCLIPLoader reads them from `text_encoders/`):
// a tiny CLIP-L in HF names (`text_model.*`, width 32, 2 layers) and a tiny T5-XXL layout
// (`shared.weight` over the real 32128-token vocabulary, `encoder.block.N.layer.*`,
// d_model 32, 4 heads of 8, gated feed-forward 64, 2 blocks, relative bias in block 0), in
// fp16 and in ComfyUI's scaled fp8 (`t5xxl_fp8_e4m3fn_scaled` layout: e4m3fn Linear weights,
// an f32 scalar `scale_weight` beside each, the empty `scaled_fp8` marker; the embedding and
// norms in fp16). Values as above (fp16 of the key's stream).

/// Repository-relative path of the tiny CLIP-L text encoder file.
pub const TINY_CLIP_L_PATH: &str = "fixtures/models/text_encoders/tiny_clip_l.safetensors";
/// Repository-relative path of the tiny T5-XXL-layout file (fp16).
pub const TINY_T5XXL_PATH: &str = "fixtures/models/text_encoders/tiny_t5xxl.safetensors";
/// Repository-relative path of the tiny T5-XXL-layout file in scaled fp8.
pub const TINY_T5XXL_FP8_SCALED_PATH: &str =
    "fixtures/models/text_encoders/tiny_t5xxl_fp8_e4m3fn_scaled.safetensors";

/// The tiny T5's sizes: (d_model, heads, d_kv, d_ff, blocks).
pub const TINY_T5: (usize, usize, usize, usize, usize) = (32, 4, 8, 64, 2);

fn tiny_t5(l: &mut Layout) {
    tiny_t5_sized(l, TINY_T5, 32128)
}

fn tiny_t5_sized(l: &mut Layout, sizes: (usize, usize, usize, usize, usize), vocab: usize) {
    let (d, heads, d_kv, d_ff, blocks) = sizes;
    let inner = heads * d_kv;
    add(l, "shared.weight".into(), &[vocab, d]);
    for i in 0..blocks {
        let b = format!("encoder.block.{i}.layer");
        for n in ["q", "k", "v"] {
            lin(l, &format!("{b}.0.SelfAttention.{n}"), inner, d, false);
        }
        lin(l, &format!("{b}.0.SelfAttention.o"), d, inner, false);
        if i == 0 {
            add(
                l,
                format!("{b}.0.SelfAttention.relative_attention_bias.weight"),
                &[32, heads],
            );
        }
        add(l, format!("{b}.0.layer_norm.weight"), &[d]);
        lin(l, &format!("{b}.1.DenseReluDense.wi_0"), d_ff, d, false);
        lin(l, &format!("{b}.1.DenseReluDense.wi_1"), d_ff, d, false);
        lin(l, &format!("{b}.1.DenseReluDense.wo"), d, d_ff, false);
        add(l, format!("{b}.1.layer_norm.weight"), &[d]);
    }
    add(l, "encoder.final_layer_norm.weight".into(), &[d]);
}

/// The bytes of `tiny_clip_l.safetensors`.
pub fn tiny_clip_l_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_clip(&mut layout, "text_model");
    serialize(&layout, "tiny_clip_l v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_t5xxl.safetensors`.
pub fn tiny_t5xxl_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_t5(&mut layout);
    serialize(&layout, "tiny_t5xxl v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_t5xxl_fp8_e4m3fn_scaled.safetensors`: each Linear weight `w` (the
/// fp16 values of [`tiny_t5xxl_bytes`]) is stored as `e4m3fn(w / s)` with
/// `s = max|w| / 448` as its `scale_weight`.
pub fn tiny_t5xxl_fp8_scaled_bytes() -> Vec<u8> {
    use super::fp8::encode_e4m3fn;
    let mut layout = Layout::new();
    tiny_t5(&mut layout);
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, spec) in &layout {
        let vals: Vec<f32> = values(key, &spec.shape)
            .into_iter()
            .map(|v| half::f16::from_f64(v).to_f32())
            .collect();
        let is_linear = spec.shape.len() == 2
            && key.ends_with(".weight")
            && !key.ends_with("relative_attention_bias.weight")
            && key != "shared.weight";
        if is_linear {
            let max = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 448.0;
            let bytes = vals.iter().map(|v| encode_e4m3fn(v / scale)).collect();
            buffers.push((key.clone(), Dtype::F8_E4M3, spec.shape.clone(), bytes));
            let sk = format!(
                "{}scale_weight",
                key.strip_suffix("weight").expect("weight")
            );
            buffers.push((sk, Dtype::F32, vec![], scale.to_le_bytes().to_vec()));
        } else {
            let bytes = vals
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            buffers.push((key.clone(), Dtype::F16, spec.shape.clone(), bytes));
        }
    }
    buffers.push(("scaled_fp8".into(), Dtype::F8_E4M3, vec![0], Vec::new()));
    serialize_buffers(
        buffers,
        "tiny_t5xxl_fp8_e4m3fn_scaled v1 (src/models/fixture.rs)",
    )
}

fn serialize_buffers(buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>, name: &str) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                TensorView::new(*d, s.clone(), b).expect("consistent tensor view"),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("comfyrs_fixture".to_string(), name.to_string());
    safetensors::tensor::serialize(views, Some(meta)).expect("serialize safetensors")
}

// ---------------------------------------------------------------------------------------
// Flux all-in-one checkpoints (CheckpointLoaderSimple), in the layout of Comfy-Org's
// `flux1-dev-fp8.safetensors`: the tiny Flux transformer under `model.diffusion_model.`
// with every floating tensor in fp8 e4m3fn (plain, unscaled), the tiny CLIP-L under
// `text_encoders.clip_l.transformer.` (fp16), the tiny T5-XXL under
// `text_encoders.t5xxl.transformer.` (Linear weights fp8 e4m3fn, the rest fp16) and the tiny
// 16-channel VAE under `vae.` (fp16). Each tensor's values are those of the split fixture
// holding it (the key without its checkpoint prefix), so `tiny_flux_dev_fp8` is
// `tiny_flux` + `tiny_clip_l` + `tiny_t5xxl` + `tiny_flux_vae` with the fp8 parts
// quantised (fp16 value → nearest e4m3fn, round to nearest even).

/// Repository-relative path of the tiny all-in-one Flux-dev fp8 checkpoint.
pub const TINY_FLUX_DEV_FP8_PATH: &str =
    "fixtures/models/checkpoints/tiny_flux_dev_fp8.safetensors";

/// The bytes of `tiny_flux_dev_fp8.safetensors` (see above).
pub fn tiny_flux_dev_fp8_bytes() -> Vec<u8> {
    tiny_flux_checkpoint_fp8(true, "tiny_flux_dev_fp8 v1 (src/models/fixture.rs)")
}

/// The bytes of the schnell variant (no `guidance_in`); not committed, tests write it.
pub fn tiny_flux_schnell_fp8_bytes() -> Vec<u8> {
    tiny_flux_checkpoint_fp8(false, "tiny_flux_schnell_fp8 v1 (src/models/fixture.rs)")
}

fn tiny_flux_checkpoint_fp8(guidance: bool, name: &str) -> Vec<u8> {
    use super::fp8::encode_e4m3fn;
    /// (key prefix, layout, which tensors are stored as fp8).
    type Part = (&'static str, Layout, fn(&str, &Spec) -> bool);
    let mut parts: Vec<Part> = Vec::new();
    let mut flux = Layout::new();
    tiny_flux(&mut flux, guidance);
    parts.push(("model.diffusion_model.", flux, |_, _| true));
    let mut clip = Layout::new();
    tiny_clip(&mut clip, "text_model");
    parts.push(("text_encoders.clip_l.transformer.", clip, |_, _| false));
    let mut t5 = Layout::new();
    tiny_t5(&mut t5);
    parts.push(("text_encoders.t5xxl.transformer.", t5, |key, spec| {
        spec.shape.len() == 2
            && key.ends_with(".weight")
            && !key.ends_with("relative_attention_bias.weight")
            && key != "shared.weight"
    }));
    let mut vae = Layout::new();
    tiny_vae_with(&mut vae, "", 16, false);
    parts.push(("vae.", vae, |_, _| false));
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, layout, fp8) in parts {
        for (key, spec) in &layout {
            let full = format!("{prefix}{key}");
            if spec.int_arange {
                let n: usize = spec.shape.iter().product();
                let bytes = (0..n as i64).flat_map(|i| i.to_le_bytes()).collect();
                buffers.push((full, Dtype::I64, spec.shape.clone(), bytes));
                continue;
            }
            let vals = values(key, &spec.shape)
                .into_iter()
                .map(half::f16::from_f64);
            if fp8(key, spec) {
                let bytes = vals.map(|v| encode_e4m3fn(v.to_f32())).collect();
                buffers.push((full, Dtype::F8_E4M3, spec.shape.clone(), bytes));
            } else {
                let bytes = vals.flat_map(|v| v.to_le_bytes()).collect();
                buffers.push((full, Dtype::F16, spec.shape.clone(), bytes));
            }
        }
    }
    serialize_buffers(buffers, name)
}

// ---------------------------------------------------------------------------------------
// SD3 / SD3.5 (MMDiT). The tiny MMDiTs have depth 2, i.e. ComfyUI's own rule gives hidden
// 128 = 64·depth and 2 heads of 64, so ComfyUI detects them as its `SD3` config as they
// are; 16 latent channels, patch 2, a 16×16 position table (latents up to 32×32, 256²
// pixels), pooled width 80 = the tiny CLIP-L's 32 + the tiny CLIP-G's projection 48, and
// SD3's real context width 4096 (the CLIP outputs are padded to it). Variants:
// `tiny_sd3_medium` (no QK-norm), `tiny_sd35_large` (RMS QK-norm `ln_q`/`ln_k` in every
// attention) and `tiny_sd35_medium` (QK-norm and MMDiT-X's `x_block.attn2` in block 0), in
// ComfyUI's bare diffusion-model layout. `tiny_clip_g` is a CLIP-G in HF names (width 48,
// 3 layers, `text_projection.weight`), as `clip_g.safetensors` ships. The all-in-one
// `tiny_sd35_medium` checkpoint holds the SD3.5-medium MMDiT under `model.diffusion_model.`,
// the tiny CLIP-L and CLIP-G under `text_encoders.clip_{l,g}.transformer.` and the 16-channel
// VAE (no quant convs) under `first_stage_model.`, all fp16 (values as the split files; its
// CLIP-L has a third layer, as ComfyUI's SD3 CLIP-L takes the penultimate of more than 2).

/// Repository-relative paths of the tiny MMDiTs (UNETLoader).
pub const TINY_SD3_MEDIUM_PATH: &str =
    "fixtures/models/diffusion_models/tiny_sd3_medium.safetensors";
pub const TINY_SD35_MEDIUM_PATH: &str =
    "fixtures/models/diffusion_models/tiny_sd35_medium.safetensors";
pub const TINY_SD35_LARGE_PATH: &str =
    "fixtures/models/diffusion_models/tiny_sd35_large.safetensors";
/// Repository-relative path of the tiny CLIP-G text encoder file (HF layout).
pub const TINY_CLIP_G_PATH: &str = "fixtures/models/text_encoders/tiny_clip_g.safetensors";
/// Repository-relative path of the tiny all-in-one SD3.5-medium checkpoint.
pub const TINY_SD35_CKPT_PATH: &str = "fixtures/models/checkpoints/tiny_sd35_medium.safetensors";

/// The tiny MMDiT's depth (hidden 64·depth, depth heads).
pub const TINY_MMDIT_DEPTH: usize = 2;
/// Side of the tiny MMDiT's position table.
pub const TINY_MMDIT_POS: usize = 16;

/// The MMDiT variants of the fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmditVariant {
    Sd3Medium,
    Sd35Medium,
    Sd35Large,
}

fn tiny_mmdit(l: &mut Layout, v: MmditVariant) {
    let depth = TINY_MMDIT_DEPTH;
    let h = 64 * depth;
    let head = 64;
    let qk = v != MmditVariant::Sd3Medium;
    conv(l, "x_embedder.proj", h, 16, 2);
    add(
        l,
        "pos_embed".into(),
        &[1, TINY_MMDIT_POS * TINY_MMDIT_POS, h],
    );
    lin(l, "t_embedder.mlp.0", h, 256, true);
    lin(l, "t_embedder.mlp.2", h, h, true);
    lin(l, "y_embedder.mlp.0", h, TINY_L_WIDTH + TINY_G_WIDTH, true);
    lin(l, "y_embedder.mlp.2", h, h, true);
    lin(l, "context_embedder", h, 4096, true);
    let attn = |l: &mut Layout, p: &str, pre_only: bool| {
        lin(l, &format!("{p}.qkv"), 3 * h, h, true);
        if !pre_only {
            lin(l, &format!("{p}.proj"), h, h, true);
        }
        if qk {
            add(l, format!("{p}.ln_q.weight"), &[head]);
            add(l, format!("{p}.ln_k.weight"), &[head]);
        }
    };
    for i in 0..depth {
        for side in ["context_block", "x_block"] {
            let p = format!("joint_blocks.{i}.{side}");
            let pre_only = side == "context_block" && i + 1 == depth;
            let x_attn2 = side == "x_block" && i == 0 && v == MmditVariant::Sd35Medium;
            attn(l, &format!("{p}.attn"), pre_only);
            if x_attn2 {
                attn(l, &format!("{p}.attn2"), false);
            }
            let mods = if pre_only {
                2
            } else if x_attn2 {
                9
            } else {
                6
            };
            lin(l, &format!("{p}.adaLN_modulation.1"), mods * h, h, true);
            if !pre_only {
                lin(l, &format!("{p}.mlp.fc1"), 4 * h, h, true);
                lin(l, &format!("{p}.mlp.fc2"), h, 4 * h, true);
            }
        }
    }
    lin(l, "final_layer.adaLN_modulation.1", 2 * h, h, true);
    lin(l, "final_layer.linear", 4 * 16, h, true);
}

/// A tiny CLIP-G in HF names under `p` (ending in `text_model`), plus `text_projection`
/// beside it.
fn tiny_clip_g_hf(l: &mut Layout, root: &str) {
    let (w, layers, mlp) = (TINY_G_WIDTH, 3usize, 4 * TINY_G_WIDTH);
    let p = format!("{root}text_model");
    add(
        l,
        format!("{p}.embeddings.token_embedding.weight"),
        &[49408, w],
    );
    add(
        l,
        format!("{p}.embeddings.position_embedding.weight"),
        &[77, w],
    );
    for i in 0..layers {
        let q = format!("{p}.encoder.layers.{i}");
        norm(l, &format!("{q}.layer_norm1"), w);
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            lin(l, &format!("{q}.self_attn.{n}"), w, w, true);
        }
        norm(l, &format!("{q}.layer_norm2"), w);
        lin(l, &format!("{q}.mlp.fc1"), mlp, w, true);
        lin(l, &format!("{q}.mlp.fc2"), w, mlp, true);
    }
    norm(l, &format!("{p}.final_layer_norm"), w);
    lin(l, &format!("{root}text_projection"), w, w, false);
}

/// The bytes of a tiny MMDiT file (bare ComfyUI keys).
pub fn tiny_mmdit_bytes(v: MmditVariant) -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_mmdit(&mut layout, v);
    serialize(
        &layout,
        &format!("tiny_mmdit {v:?} v1 (src/models/fixture.rs)"),
    )
}

pub fn tiny_sd3_medium_bytes() -> Vec<u8> {
    tiny_mmdit_bytes(MmditVariant::Sd3Medium)
}

pub fn tiny_sd35_medium_bytes() -> Vec<u8> {
    tiny_mmdit_bytes(MmditVariant::Sd35Medium)
}

pub fn tiny_sd35_large_bytes() -> Vec<u8> {
    tiny_mmdit_bytes(MmditVariant::Sd35Large)
}

/// Repository-relative path of the tiny SD3.5-large MMDiT in ComfyUI's scaled fp8 layout.
pub const TINY_SD35_LARGE_FP8_SCALED_PATH: &str =
    "fixtures/models/diffusion_models/tiny_sd35_large_fp8_scaled.safetensors";

/// The bytes of `tiny_sd35_large_fp8_scaled.safetensors` (the `sd3.5_large_fp8_scaled`
/// layout): each Linear weight `w` (2-d, the fp16 values of [`tiny_sd35_large_bytes`]) is
/// stored as `e4m3fn(w / s)` with `s = max|w| / 448` as its f32 `scale_weight`; the patch
/// conv, position table, norms and biases stay fp16; an empty `scaled_fp8` marker.
pub fn tiny_sd35_large_fp8_scaled_bytes() -> Vec<u8> {
    use super::fp8::encode_e4m3fn;
    let mut layout = Layout::new();
    tiny_mmdit(&mut layout, MmditVariant::Sd35Large);
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (key, spec) in &layout {
        let vals: Vec<f32> = values(key, &spec.shape)
            .into_iter()
            .map(|v| half::f16::from_f64(v).to_f32())
            .collect();
        if spec.shape.len() == 2 && key.ends_with(".weight") {
            let max = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 448.0;
            let bytes = vals.iter().map(|v| encode_e4m3fn(v / scale)).collect();
            buffers.push((key.clone(), Dtype::F8_E4M3, spec.shape.clone(), bytes));
            let sk = format!(
                "{}scale_weight",
                key.strip_suffix("weight").expect("weight")
            );
            buffers.push((sk, Dtype::F32, vec![], scale.to_le_bytes().to_vec()));
        } else {
            let bytes = vals
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            buffers.push((key.clone(), Dtype::F16, spec.shape.clone(), bytes));
        }
    }
    buffers.push(("scaled_fp8".into(), Dtype::F8_E4M3, vec![0], Vec::new()));
    serialize_buffers(
        buffers,
        "tiny_sd35_large_fp8_scaled v1 (src/models/fixture.rs)",
    )
}

/// The bytes of `tiny_clip_g.safetensors`.
pub fn tiny_clip_g_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_clip_g_hf(&mut layout, "");
    serialize(&layout, "tiny_clip_g v1 (src/models/fixture.rs)")
}

/// The bytes of the tiny all-in-one SD3.5-medium checkpoint (see above). Each tensor has
/// the values of the split file holding it (its key without the checkpoint prefix).
pub fn tiny_sd35_checkpoint_bytes() -> Vec<u8> {
    let mut parts: Vec<(&str, Layout)> = Vec::new();
    let mut m = Layout::new();
    tiny_mmdit(&mut m, MmditVariant::Sd35Medium);
    parts.push(("model.diffusion_model.", m));
    let mut cl = Layout::new();
    tiny_clip_layers(&mut cl, "text_model", 3);
    parts.push(("text_encoders.clip_l.transformer.", cl));
    let mut cg = Layout::new();
    tiny_clip_g_hf(&mut cg, "");
    parts.push(("text_encoders.clip_g.transformer.", cg));
    let mut vae = Layout::new();
    tiny_vae_with(&mut vae, "", 16, false);
    parts.push(("first_stage_model.", vae));
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, layout) in parts {
        for (key, spec) in &layout {
            let full = format!("{prefix}{key}");
            if spec.int_arange {
                let n: usize = spec.shape.iter().product();
                let bytes = (0..n as i64).flat_map(|i| i.to_le_bytes()).collect();
                buffers.push((full, Dtype::I64, spec.shape.clone(), bytes));
                continue;
            }
            let bytes = values(key, &spec.shape)
                .into_iter()
                .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
                .collect();
            buffers.push((full, Dtype::F16, spec.shape.clone(), bytes));
        }
    }
    serialize_buffers(
        buffers,
        "tiny_sd35_medium checkpoint v1 (src/models/fixture.rs)",
    )
}

// A T5-XXL-layout encoder at SD3's real width 4096 (so its output concatenates with the
// CLIP context, as in SD3ClipModel) but otherwise tiny: 1 block, 2 heads of 8, feed-forward
// 32, and only the first 2048 tokens of the vocabulary (prompts using higher ids fail). Not
// committed (16 MB): tests write it, and `gen_fixtures --sd3-wide-t5 PATH` writes it for the
// golden script.

/// The wide T5's sizes: (d_model, heads, d_kv, d_ff, blocks), and its vocabulary size.
pub const TINY_T5_WIDE: (usize, usize, usize, usize, usize) = (4096, 2, 8, 32, 1);
pub const TINY_T5_WIDE_VOCAB: usize = 2048;

/// The bytes of `tiny_t5xxl_wide.safetensors` (fp16).
pub fn tiny_t5xxl_wide_bytes() -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_t5_sized(&mut layout, TINY_T5_WIDE, TINY_T5_WIDE_VOCAB);
    serialize(&layout, "tiny_t5xxl_wide v1 (src/models/fixture.rs)")
}

// ---------------------------------------------------------------------------------------
// Tiny SD3 / SD3.5 ControlNets for the tiny MMDiTs (hidden 128 = depth 2, pooled width 80 =
// the tiny CLIP-L + CLIP-G, context 4096), fp16:
// * `tiny_sd35_controlnet_canny`: Stability's SD3.5 layout (`sd3.5_large_controlnet_*`):
//   `control_type` 1 (canny, f32 [1]), `time_text_embed.{timestep,text}_embedder.linear_*`,
//   `pos_embed_input.proj`, one plain DiT block `transformer_blocks.0.{adaLN_modulation.1,
//   attn.qkv, attn.proj, mlp.fc1, mlp.fc2}`, `controlnet_blocks.0`; no x embedder (the
//   model's is used).
// * `tiny_sd35_controlnet_double_y`: the same layout with a square `y_embedder` (the
//   "double y" variant: pooled text through the model's y_embedder first), its own
//   `pos_embed.proj` and 2 blocks, `control_type` 0 (blur).
// * `tiny_sd3_controlnet`: a diffusers SD3 ControlNet (InstantX's layout): `pos_embed.proj`,
//   `pos_embed.pos_embed` (16×16 patches), `pos_embed_input.proj`, `time_text_embed.*`,
//   `context_embedder`, one diffusers joint block `transformer_blocks.0.*` (SD3 medium's, no
//   QK-norm) and `controlnet_blocks.0`.

/// Repository-relative paths of the tiny SD3 ControlNets.
pub const TINY_SD35_CONTROLNET_CANNY_PATH: &str =
    "fixtures/models/controlnet/tiny_sd35_controlnet_canny.safetensors";
pub const TINY_SD35_CONTROLNET_DOUBLE_Y_PATH: &str =
    "fixtures/models/controlnet/tiny_sd35_controlnet_double_y.safetensors";
pub const TINY_SD3_CONTROLNET_PATH: &str =
    "fixtures/models/controlnet/tiny_sd3_controlnet.safetensors";

fn tiny_sd35_controlnet(l: &mut Layout, double_y: bool, blocks: usize) {
    let h = 64 * TINY_MMDIT_DEPTH;
    lin(
        l,
        "time_text_embed.timestep_embedder.linear_1",
        h,
        256,
        true,
    );
    lin(l, "time_text_embed.timestep_embedder.linear_2", h, h, true);
    let y_in = if double_y {
        h
    } else {
        TINY_L_WIDTH + TINY_G_WIDTH
    };
    lin(l, "time_text_embed.text_embedder.linear_1", h, y_in, true);
    lin(l, "time_text_embed.text_embedder.linear_2", h, h, true);
    if double_y {
        conv(l, "pos_embed.proj", h, 16, 2);
    }
    conv(l, "pos_embed_input.proj", h, 16, 2);
    for i in 0..blocks {
        let p = format!("transformer_blocks.{i}");
        lin(l, &format!("{p}.adaLN_modulation.1"), 6 * h, h, true);
        lin(l, &format!("{p}.attn.qkv"), 3 * h, h, true);
        lin(l, &format!("{p}.attn.proj"), h, h, true);
        lin(l, &format!("{p}.mlp.fc1"), 4 * h, h, true);
        lin(l, &format!("{p}.mlp.fc2"), h, 4 * h, true);
        lin(l, &format!("controlnet_blocks.{i}"), h, h, true);
    }
}

fn sd35_controlnet_bytes(double_y: bool, blocks: usize, control_type: f32, name: &str) -> Vec<u8> {
    let mut layout = Layout::new();
    tiny_sd35_controlnet(&mut layout, double_y, blocks);
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = layout
        .iter()
        .map(|(key, spec)| {
            let bytes = values(key, &spec.shape)
                .into_iter()
                .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
                .collect();
            (key.clone(), Dtype::F16, spec.shape.clone(), bytes)
        })
        .collect();
    buffers.push((
        "control_type".into(),
        Dtype::F32,
        vec![1],
        control_type.to_le_bytes().to_vec(),
    ));
    serialize_buffers(buffers, name)
}

/// The bytes of `tiny_sd35_controlnet_canny.safetensors`.
pub fn tiny_sd35_controlnet_canny_bytes() -> Vec<u8> {
    sd35_controlnet_bytes(
        false,
        1,
        1.0,
        "tiny_sd35_controlnet_canny v1 (src/models/fixture.rs)",
    )
}

/// The bytes of `tiny_sd35_controlnet_double_y.safetensors`.
pub fn tiny_sd35_controlnet_double_y_bytes() -> Vec<u8> {
    sd35_controlnet_bytes(
        true,
        2,
        0.0,
        "tiny_sd35_controlnet_double_y v1 (src/models/fixture.rs)",
    )
}

/// The bytes of `tiny_sd3_controlnet.safetensors` (diffusers names).
pub fn tiny_sd3_controlnet_bytes() -> Vec<u8> {
    let h = 64 * TINY_MMDIT_DEPTH;
    let mut l = Layout::new();
    conv(&mut l, "pos_embed.proj", h, 16, 2);
    add(
        &mut l,
        "pos_embed.pos_embed".into(),
        &[1, TINY_MMDIT_POS * TINY_MMDIT_POS, h],
    );
    conv(&mut l, "pos_embed_input.proj", h, 16, 2);
    lin(
        &mut l,
        "time_text_embed.timestep_embedder.linear_1",
        h,
        256,
        true,
    );
    lin(
        &mut l,
        "time_text_embed.timestep_embedder.linear_2",
        h,
        h,
        true,
    );
    lin(
        &mut l,
        "time_text_embed.text_embedder.linear_1",
        h,
        TINY_L_WIDTH + TINY_G_WIDTH,
        true,
    );
    lin(&mut l, "time_text_embed.text_embedder.linear_2", h, h, true);
    lin(&mut l, "context_embedder", h, 4096, true);
    let p = "transformer_blocks.0";
    lin(&mut l, &format!("{p}.norm1.linear"), 6 * h, h, true);
    lin(&mut l, &format!("{p}.norm1_context.linear"), 6 * h, h, true);
    for n in [
        "to_q",
        "to_k",
        "to_v",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_out.0",
        "to_add_out",
    ] {
        lin(&mut l, &format!("{p}.attn.{n}"), h, h, true);
    }
    for ff in ["ff", "ff_context"] {
        lin(&mut l, &format!("{p}.{ff}.net.0.proj"), 4 * h, h, true);
        lin(&mut l, &format!("{p}.{ff}.net.2"), h, 4 * h, true);
    }
    lin(&mut l, "controlnet_blocks.0", h, h, true);
    serialize(&l, "tiny_sd3_controlnet v1 (src/models/fixture.rs)")
}

// ---------------------------------------------------------------------------------------
// Tiny T2I-Adapters (fp16), in the layouts ComfyUI's `load_t2i_adapter` reads:
// * `tiny_t2i_sd15`: the full `Adapter` in TencentARC's names (`conv_in`, `body.N.*`), RGB
//   hint (conv_in takes 3·8² = 192), channels [16, 32, 64, 64], 2 blocks per level, ksize 3,
//   strided-conv downsampling (`down_opt.op`), `in_conv` where the width changes;
// * `tiny_t2i_light`: `Adapter_light` (`body.i.{in_conv, body.k.block1/2, out_conv}`), a
//   1-channel hint (64), channels [32, 64, 128, 128] (ComfyUI's are fixed at 320..1280),
//   4 light blocks per level;
// * `tiny_t2i_sdxl` (not committed: 6 MB; `gen_fixtures -- --t2i-sdxl PATH` writes it): the
//   SDXL full adapter in diffusers names (`adapter.conv_in`, `adapter.body.i.in_conv`,
//   `adapter.body.i.resnets.j.block1/2`), a 1-channel hint (conv_in takes 16² = 256),
//   channels [64, 128, 256, 256] (its first feature fits tiny_sdxl's input block 3),
//   ksize 1 (block2), average-pool downsampling.

/// Repository-relative paths of the tiny T2I-Adapters.
pub const TINY_T2I_SD15_PATH: &str = "fixtures/models/controlnet/tiny_t2i_sd15.safetensors";
pub const TINY_T2I_LIGHT_PATH: &str = "fixtures/models/controlnet/tiny_t2i_light.safetensors";

/// The bytes of `tiny_t2i_sd15.safetensors`.
pub fn tiny_t2i_sd15_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    let ch = [16usize, 32, 64, 64];
    conv(&mut l, "conv_in", ch[0], 192, 3);
    for i in 0..4 {
        for j in 0..2 {
            let p = format!("body.{}", i * 2 + j);
            let cin = if j == 0 && i > 0 { ch[i - 1] } else { ch[i] };
            if j == 0 && i > 0 {
                conv(&mut l, &format!("{p}.down_opt.op"), cin, cin, 3);
            }
            if cin != ch[i] {
                conv(&mut l, &format!("{p}.in_conv"), ch[i], cin, 3);
            }
            conv(&mut l, &format!("{p}.block1"), ch[i], ch[i], 3);
            conv(&mut l, &format!("{p}.block2"), ch[i], ch[i], 3);
        }
    }
    serialize(&l, "tiny_t2i_sd15 v1 (src/models/fixture.rs)")
}

/// The bytes of `tiny_t2i_light.safetensors`.
pub fn tiny_t2i_light_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    let ch = [32usize, 64, 128, 128];
    for i in 0..4 {
        let p = format!("body.{i}");
        let cin = if i == 0 { 64 } else { ch[i - 1] };
        let inter = ch[i] / 4;
        conv(&mut l, &format!("{p}.in_conv"), inter, cin, 1);
        for k in 0..4 {
            conv(&mut l, &format!("{p}.body.{k}.block1"), inter, inter, 3);
            conv(&mut l, &format!("{p}.body.{k}.block2"), inter, inter, 3);
        }
        conv(&mut l, &format!("{p}.out_conv"), ch[i], inter, 1);
    }
    serialize(&l, "tiny_t2i_light v1 (src/models/fixture.rs)")
}

/// The bytes of the (uncommitted) `tiny_t2i_sdxl.safetensors`.
pub fn tiny_t2i_sdxl_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    let ch = [64usize, 128, 256, 256];
    conv(&mut l, "adapter.conv_in", ch[0], 256, 3);
    for i in 0..4 {
        let cin = if i == 0 { ch[0] } else { ch[i - 1] };
        if cin != ch[i] {
            conv(&mut l, &format!("adapter.body.{i}.in_conv"), ch[i], cin, 1);
        }
        for j in 0..2 {
            let p = format!("adapter.body.{i}.resnets.{j}");
            conv(&mut l, &format!("{p}.block1"), ch[i], ch[i], 3);
            conv(&mut l, &format!("{p}.block2"), ch[i], ch[i], 1);
        }
    }
    serialize(&l, "tiny_t2i_sdxl v1 (src/models/fixture.rs)")
}

// ---------------------------------------------------------------------------------------
// `tiny_control_lora_sd15` (fp16): a Control-LoRA for `tiny_sd15` in Stability's layout: the
// `lora_controlnet` marker (empty), the hint encoder, zero convs and middle-block output of
// [`tiny_controlnet`] as full weights, a few other full weights (a GroupNorm of input block 1,
// a bias of the middle block), and rank-4 `up`/`down` pairs on a Linear (`time_embed.0`),
// a 3×3 conv (`input_blocks.1.0.in_layers.2`), a cross-attention projection
// (`input_blocks.3.1.transformer_blocks.0.attn2.to_k`) and a 1×1 conv
// (`middle_block.1.proj_in`); every other layer comes from the model.

/// Repository-relative path of the tiny Control-LoRA.
pub const TINY_CONTROL_LORA_SD15_PATH: &str =
    "fixtures/models/controlnet/tiny_control_lora_sd15.safetensors";

/// The bytes of `tiny_control_lora_sd15.safetensors`.
pub fn tiny_control_lora_sd15_bytes() -> Vec<u8> {
    let mut full = Layout::new();
    tiny_controlnet(&mut full, "", TINY_L_WIDTH, None);
    let mut l = Layout::new();
    for (k, spec) in full {
        let keep = k.starts_with("input_hint_block.")
            || k.starts_with("zero_convs.")
            || k.starts_with("middle_block_out.")
            || k.starts_with("input_blocks.1.0.in_layers.0.")
            || k == "middle_block.2.out_layers.3.bias";
        if keep {
            l.insert(k, spec);
        }
    }
    add(&mut l, "lora_controlnet".into(), &[0]);
    let r = 4;
    for (p, up, down) in [
        ("time_embed.0", vec![128, r], vec![r, 32]),
        (
            "input_blocks.1.0.in_layers.2",
            vec![32, r, 1, 1],
            vec![r, 32, 3, 3],
        ),
        (
            "input_blocks.3.1.transformer_blocks.0.attn2.to_k",
            vec![64, r],
            vec![r, TINY_L_WIDTH],
        ),
        (
            "middle_block.1.proj_in",
            vec![64, r, 1, 1],
            vec![r, 64, 1, 1],
        ),
    ] {
        add(&mut l, format!("{p}.up"), &up);
        add(&mut l, format!("{p}.down"), &down);
    }
    serialize(&l, "tiny_control_lora_sd15 v1 (src/models/fixture.rs)")
}
