//! LoRA on the tiny fixture: every format's patched weights against an independent reference
//! computed here from the raw file tensors (plain f64 loops, not the crate's code), strengths
//! (zero, negative), stacking order, unmatched-key reports, errors, and caching by counting.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome, RunStatus};
use comfyrs::models::checkpoint::WeightMap;
use comfyrs::models::load_sd1_checkpoint;
use comfyrs::models::lora::patched::patch_weights;
use comfyrs::models::lora::{load_lora, read_lora, KeyMap, PatchCache, PatchEntry};
use comfyrs::node::Registry;
use comfyrs::nodes::lora::LoraFiles;
use comfyrs::nodes::sd_types::ModelCache;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

const U: &str = "model.diffusion_model.";
const C: &str = "cond_stage_model.transformer.text_model.";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny checkpoint's weights (CLIP already fp16, as the loader keeps them).
fn base() -> &'static Arc<WeightMap> {
    static BASE: OnceLock<Arc<WeightMap>> = OnceLock::new();
    BASE.get_or_init(|| {
        let ck = load_sd1_checkpoint(
            root().join("fixtures/models/checkpoints/tiny_sd15.safetensors"),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        ck.weights.clone()
    })
}

/// Deterministic values in [-scale, scale).
fn rnd(seed: u64, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn scalar(v: f32) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn save(dir: &Path, name: &str, t: &HashMap<String, Tensor>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    candle_core::safetensors::save(t, &p).unwrap();
    p
}

// ---- independent reference math (row-major f64) ----

/// [n, k] x [k, m]
fn mm(a: &[f64], n: usize, k: usize, b: &[f64], m: usize) -> Vec<f64> {
    let mut o = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            o[i * m + j] = (0..k).map(|x| a[i * k + x] * b[x * m + j]).sum();
        }
    }
    o
}

/// kron of [a0, a1] and [b0, b1, rest...] flattened per row: out[(i*b0+p), (j*b1+q), rest]
fn kron(a: &[f64], ad: (usize, usize), b: &[f64], bd: &[usize]) -> Vec<f64> {
    let rest: usize = bd[2..].iter().product();
    let (b0, b1) = (bd[0], bd[1]);
    let cols = ad.1 * b1 * rest;
    let mut o = vec![0.0; ad.0 * b0 * cols];
    for i in 0..ad.0 {
        for j in 0..ad.1 {
            for p in 0..b0 {
                for q in 0..b1 {
                    for r in 0..rest {
                        o[(i * b0 + p) * cols + (j * b1 + q) * rest + r] =
                            a[i * ad.1 + j] * b[(p * b1 + q) * rest + r];
                    }
                }
            }
        }
    }
    o
}

/// einsum('i j k l, j r, i p -> p r k l')
fn tucker(t: &[f64], td: [usize; 4], wb: &[f64], r: usize, wa: &[f64], p: usize) -> Vec<f64> {
    let [i_n, j_n, k_n, l_n] = td;
    let kl = k_n * l_n;
    let mut o = vec![0.0; p * r * kl];
    for pp in 0..p {
        for rr in 0..r {
            for x in 0..kl {
                let mut s = 0.0;
                for i in 0..i_n {
                    for j in 0..j_n {
                        s += t[(i * j_n + j) * kl + x] * wb[j * r + rr] * wa[i * p + pp];
                    }
                }
                o[(pp * r + rr) * kl + x] = s;
            }
        }
    }
    o
}

fn add_scaled(w: &[f64], d: &[f64], s: f64) -> Vec<f64> {
    w.iter().zip(d).map(|(a, b)| a + s * b).collect()
}

fn f16_round(v: &[f64]) -> Vec<f64> {
    v.iter()
        .map(|x| half::f16::from_f32(*x as f32).to_f64())
        .collect()
}

fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Patched weights (only changed ones) for one file at `strengths` (UNet, CLIP).
fn patched(path: &Path, s_unet: f64, s_clip: f64) -> (WeightMap, Vec<String>) {
    let file = read_lora(path).unwrap();
    let map = KeyMap::for_weights(base(), true, true).unwrap();
    let loaded = Arc::new(load_lora(&file, &map, base()).unwrap());
    let entry = |s| PatchEntry::lora(loaded.clone(), "t".into(), s);
    let mut out = patch_weights(base(), &[entry(s_unet)], U, DType::F32, false).unwrap();
    out.extend(
        patch_weights(
            base(),
            &[entry(s_clip)],
            "cond_stage_model.",
            DType::F32,
            true,
        )
        .unwrap(),
    );
    (out, loaded.unmatched.clone())
}

fn w(key: &str) -> Vec<f64> {
    vals(&base()[key])
}

#[test]
fn kohya_lora_and_locon_match_the_reference() {
    let d = tempfile::tempdir().unwrap();
    let mut t = HashMap::new();
    // Linear, LDM-named kohya key, alpha 4 rank 8.
    let q = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q";
    t.insert(format!("{q}.lora_down.weight"), rnd(1, &[8, 64], 0.5));
    t.insert(format!("{q}.lora_up.weight"), rnd(2, &[64, 8], 0.5));
    t.insert(format!("{q}.alpha"), scalar(4.0));
    // Diffusers-named kohya key (cross-attention k: 64x32), no alpha.
    let k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";
    t.insert(format!("{k}.lora_down.weight"), rnd(3, &[4, 32], 0.5));
    t.insert(format!("{k}.lora_up.weight"), rnd(4, &[64, 4], 0.5));
    // LoCon 3x3 conv (diffusers name of input_blocks.1.0.in_layers.2).
    let c = "lora_unet_down_blocks_0_resnets_0_conv1";
    t.insert(format!("{c}.lora_down.weight"), rnd(5, &[4, 32, 3, 3], 0.3));
    t.insert(format!("{c}.lora_up.weight"), rnd(6, &[32, 4, 1, 1], 0.3));
    t.insert(format!("{c}.alpha"), scalar(2.0));
    // LoCon with a Tucker mid (input_blocks.1.0.out_layers.3).
    let m = "lora_unet_input_blocks_1_0_out_layers_3";
    t.insert(format!("{m}.lora_down.weight"), rnd(7, &[4, 32, 1, 1], 0.3));
    t.insert(format!("{m}.lora_mid.weight"), rnd(8, &[4, 4, 3, 3], 0.3));
    t.insert(format!("{m}.lora_up.weight"), rnd(9, &[32, 4, 1, 1], 0.3));
    // CLIP.
    let te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    t.insert(format!("{te}.lora_down.weight"), rnd(10, &[4, 32], 0.5));
    t.insert(format!("{te}.lora_up.weight"), rnd(11, &[32, 4], 0.5));
    t.insert(format!("{te}.alpha"), scalar(1.0));
    let p = save(d.path(), "kohya.safetensors", &t);
    let s = 0.8;
    let (out, unmatched) = patched(&p, s, -1.5);
    assert!(unmatched.is_empty(), "{unmatched:?}");
    assert_eq!(out.len(), 5);

    let v = |n: &str| vals(&t[n]);
    let tq = format!("{U}input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight");
    let d_q = mm(
        &v(&format!("{q}.lora_up.weight")),
        64,
        8,
        &v(&format!("{q}.lora_down.weight")),
        64,
    );
    close(
        "to_q",
        &vals(&out[&tq]),
        &add_scaled(&w(&tq), &d_q, s * 4.0 / 8.0),
        1e-5,
    );

    let tk = format!("{U}input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight");
    let d_k = mm(
        &v(&format!("{k}.lora_up.weight")),
        64,
        4,
        &v(&format!("{k}.lora_down.weight")),
        32,
    );
    close(
        "to_k",
        &vals(&out[&tk]),
        &add_scaled(&w(&tk), &d_k, s),
        1e-5,
    );

    let tc = format!("{U}input_blocks.1.0.in_layers.2.weight");
    let d_c = mm(
        &v(&format!("{c}.lora_up.weight")),
        32,
        4,
        &v(&format!("{c}.lora_down.weight")),
        32 * 9,
    );
    close(
        "conv1",
        &vals(&out[&tc]),
        &add_scaled(&w(&tc), &d_c, s * 2.0 / 4.0),
        1e-5,
    );

    // mid: down'[r, in, kh, kw] = Σ_j mid[r, j, kh, kw] · down[j, in]
    let tm = format!("{U}input_blocks.1.0.out_layers.3.weight");
    let (down, mid) = (
        v(&format!("{m}.lora_down.weight")),
        v(&format!("{m}.lora_mid.weight")),
    );
    let mut down2 = vec![0.0; 4 * 32 * 9];
    for r in 0..4 {
        for i in 0..32 {
            for x in 0..9 {
                down2[(r * 32 + i) * 9 + x] = (0..4)
                    .map(|j| mid[(r * 4 + j) * 9 + x] * down[j * 32 + i])
                    .sum();
            }
        }
    }
    let d_m = mm(&v(&format!("{m}.lora_up.weight")), 32, 4, &down2, 32 * 9);
    close(
        "lora_mid",
        &vals(&out[&tm]),
        &add_scaled(&w(&tm), &d_m, s),
        1e-5,
    );

    let tt = format!("{C}encoder.layers.0.self_attn.q_proj.weight");
    let d_t = mm(
        &v(&format!("{te}.lora_up.weight")),
        32,
        4,
        &v(&format!("{te}.lora_down.weight")),
        32,
    );
    // CLIP is stored as fp16: one fp16 step of slack for rounding at a boundary.
    close(
        "clip q",
        &vals(&out[&tt]),
        &f16_round(&add_scaled(&w(&tt), &d_t, -1.5 / 4.0)),
        1e-3,
    );
}

#[test]
fn peft_and_diffusers_keys_follow_comfyui_map() {
    let d = tempfile::tempdir().unwrap();
    let mut t = HashMap::new();
    // PEFT on a UNet module ComfyUI maps without `processor` (proj_in: 1x1 conv).
    let pi = "unet.mid_block.attentions.0.proj_in";
    t.insert(format!("{pi}.lora_A.weight"), rnd(20, &[4, 64, 1, 1], 0.5));
    t.insert(format!("{pi}.lora_B.weight"), rnd(21, &[64, 4, 1, 1], 0.5));
    // PEFT attention with `processor` (ComfyUI's diffusers attn-processor form).
    let pk = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_k";
    t.insert(format!("{pk}.lora_A.weight"), rnd(22, &[4, 64], 0.5));
    t.insert(format!("{pk}.lora_B.weight"), rnd(23, &[64, 4], 0.5));
    // Old diffusers attn-processor LoRA: `to_out_lora.up/down`.
    let po = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out";
    t.insert(format!("{po}_lora.down.weight"), rnd(24, &[4, 64], 0.5));
    t.insert(format!("{po}_lora.up.weight"), rnd(25, &[64, 4], 0.5));
    // Plain PEFT attention without `processor`: ComfyUI's map has no such key.
    let plain = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";
    t.insert(format!("{plain}.lora_A.weight"), rnd(26, &[4, 64], 0.5));
    t.insert(format!("{plain}.lora_B.weight"), rnd(27, &[64, 4], 0.5));
    // Text encoder, PEFT.
    let tf = "text_encoder.text_model.encoder.layers.1.mlp.fc1";
    t.insert(format!("{tf}.lora_A.weight"), rnd(28, &[4, 32], 0.5));
    t.insert(format!("{tf}.lora_B.weight"), rnd(29, &[128, 4], 0.5));
    let p = save(d.path(), "peft.safetensors", &t);
    let (out, unmatched) = patched(&p, 1.0, 0.5);
    assert_eq!(
        unmatched,
        vec![
            format!("{plain}.lora_A.weight"),
            format!("{plain}.lora_B.weight")
        ]
    );
    assert_eq!(out.len(), 4);
    let v = |n: &str| vals(&t[n]);
    let check = |target: &str, up: &str, down: &str, o: usize, r: usize, i: usize, s: f64| {
        let d = mm(&v(up), o, r, &v(down), i);
        let want = add_scaled(&w(target), &d, s);
        if target.starts_with("cond") {
            close(target, &vals(&out[target]), &f16_round(&want), 1e-3);
        } else {
            close(target, &vals(&out[target]), &want, 1e-5);
        }
    };
    check(
        &format!("{U}middle_block.1.proj_in.weight"),
        &format!("{pi}.lora_B.weight"),
        &format!("{pi}.lora_A.weight"),
        64,
        4,
        64,
        1.0,
    );
    check(
        &format!("{U}input_blocks.3.1.transformer_blocks.0.attn1.to_k.weight"),
        &format!("{pk}.lora_B.weight"),
        &format!("{pk}.lora_A.weight"),
        64,
        4,
        64,
        1.0,
    );
    check(
        &format!("{U}input_blocks.3.1.transformer_blocks.0.attn1.to_out.0.weight"),
        &format!("{po}_lora.up.weight"),
        &format!("{po}_lora.down.weight"),
        64,
        4,
        64,
        1.0,
    );
    check(
        &format!("{C}encoder.layers.1.mlp.fc1.weight"),
        &format!("{tf}.lora_B.weight"),
        &format!("{tf}.lora_A.weight"),
        128,
        4,
        32,
        0.5,
    );
}

#[test]
fn loha_lokr_dora_and_diffs_match_the_reference() {
    let d = tempfile::tempdir().unwrap();
    let mut t = HashMap::new();
    // LoHa on ff.net.2 [64, 256], rank 4, alpha 2.
    let h = "lora_unet_input_blocks_3_1_transformer_blocks_0_ff_net_2";
    t.insert(format!("{h}.hada_w1_a"), rnd(30, &[64, 4], 0.5));
    t.insert(format!("{h}.hada_w1_b"), rnd(31, &[4, 256], 0.5));
    t.insert(format!("{h}.hada_w2_a"), rnd(32, &[64, 4], 0.5));
    t.insert(format!("{h}.hada_w2_b"), rnd(33, &[4, 256], 0.5));
    t.insert(format!("{h}.alpha"), scalar(2.0));
    // Tucker LoHa on a 3x3 conv [64, 64, 3, 3] (input_blocks.3.0.out_layers.3), rank 3.
    let ht = "lycoris_down_blocks_1_resnets_0_conv2";
    t.insert(format!("{ht}.hada_w1_a"), rnd(34, &[3, 64], 0.5));
    t.insert(format!("{ht}.hada_w1_b"), rnd(35, &[3, 64], 0.5));
    t.insert(format!("{ht}.hada_t1"), rnd(36, &[3, 3, 3, 3], 0.5));
    t.insert(format!("{ht}.hada_w2_a"), rnd(37, &[3, 64], 0.5));
    t.insert(format!("{ht}.hada_w2_b"), rnd(38, &[3, 64], 0.5));
    t.insert(format!("{ht}.hada_t2"), rnd(39, &[3, 3, 3, 3], 0.5));
    // LoKr on attn2.to_q [64, 64]: w1 whole [8, 4], w2 = a·b [8, 2]·[2, 16], alpha 1 (rank 2).
    let k = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_q";
    t.insert(format!("{k}.lokr_w1"), rnd(40, &[8, 4], 0.5));
    t.insert(format!("{k}.lokr_w2_a"), rnd(41, &[8, 2], 0.5));
    t.insert(format!("{k}.lokr_w2_b"), rnd(42, &[2, 16], 0.5));
    t.insert(format!("{k}.alpha"), scalar(1.0));
    // LoKr on a 3x3 conv [32, 32, 3, 3] (input_blocks.2.0.op): w1 [4, 4], w2 [8, 8, 3, 3].
    let kc = "lora_unet_input_blocks_2_0_op";
    t.insert(format!("{kc}.lokr_w1"), rnd(43, &[4, 4], 0.5));
    t.insert(format!("{kc}.lokr_w2"), rnd(44, &[8, 8, 3, 3], 0.5));
    t.insert(format!("{kc}.alpha"), scalar(3.0)); // ignored: no factor is a product
                                                  // DoRA, scale per output row (attn1.to_v [64, 64]), rank 4 alpha 8.
    let dv = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_v";
    t.insert(format!("{dv}.lora_down.weight"), rnd(45, &[4, 64], 0.5));
    t.insert(format!("{dv}.lora_up.weight"), rnd(46, &[64, 4], 0.5));
    t.insert(format!("{dv}.alpha"), scalar(8.0));
    let dsv = (rnd(47, &[64, 1], 0.5) + 1.0).unwrap();
    t.insert(format!("{dv}.dora_scale"), dsv);
    // DoRA, scale per input column (attn2.to_v [64, 32]).
    let di = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_v";
    t.insert(format!("{di}.lora_down.weight"), rnd(48, &[4, 32], 0.5));
    t.insert(format!("{di}.lora_up.weight"), rnd(49, &[64, 4], 0.5));
    let dsi = (rnd(50, &[1, 32], 0.5) + 1.0).unwrap();
    t.insert(format!("{di}.dora_scale"), dsi);
    // Full diffs on conv_in weight and bias.
    let f = "diffusion_model.input_blocks.0.0";
    t.insert(format!("{f}.diff"), rnd(51, &[32, 4, 3, 3], 0.2));
    t.insert(format!("{f}.diff_b"), rnd(52, &[32], 0.2));
    let p = save(d.path(), "lyco.safetensors", &t);
    let s = 0.7;
    let (out, unmatched) = patched(&p, s, 1.0);
    assert!(unmatched.is_empty(), "{unmatched:?}");
    assert_eq!(out.len(), 8);
    let v = |n: &str| vals(&t[n]);

    let th = format!("{U}input_blocks.3.1.transformer_blocks.0.ff.net.2.weight");
    let m1 = mm(
        &v(&format!("{h}.hada_w1_a")),
        64,
        4,
        &v(&format!("{h}.hada_w1_b")),
        256,
    );
    let m2 = mm(
        &v(&format!("{h}.hada_w2_a")),
        64,
        4,
        &v(&format!("{h}.hada_w2_b")),
        256,
    );
    let dh: Vec<f64> = m1.iter().zip(&m2).map(|(a, b)| a * b).collect();
    close(
        "loha",
        &vals(&out[&th]),
        &add_scaled(&w(&th), &dh, s * 2.0 / 4.0),
        1e-5,
    );

    let tht = format!("{U}input_blocks.3.0.out_layers.3.weight");
    let r1 = tucker(
        &v(&format!("{ht}.hada_t1")),
        [3, 3, 3, 3],
        &v(&format!("{ht}.hada_w1_b")),
        64,
        &v(&format!("{ht}.hada_w1_a")),
        64,
    );
    let r2 = tucker(
        &v(&format!("{ht}.hada_t2")),
        [3, 3, 3, 3],
        &v(&format!("{ht}.hada_w2_b")),
        64,
        &v(&format!("{ht}.hada_w2_a")),
        64,
    );
    let dht: Vec<f64> = r1.iter().zip(&r2).map(|(a, b)| a * b).collect();
    close(
        "loha tucker",
        &vals(&out[&tht]),
        &add_scaled(&w(&tht), &dht, s),
        1e-5,
    );

    let tk = format!("{U}input_blocks.3.1.transformer_blocks.0.attn2.to_q.weight");
    let w2 = mm(
        &v(&format!("{k}.lokr_w2_a")),
        8,
        2,
        &v(&format!("{k}.lokr_w2_b")),
        16,
    );
    let dk = kron(&v(&format!("{k}.lokr_w1")), (8, 4), &w2, &[8, 16]);
    close(
        "lokr",
        &vals(&out[&tk]),
        &add_scaled(&w(&tk), &dk, s * 1.0 / 2.0),
        1e-5,
    );

    let tkc = format!("{U}input_blocks.2.0.op.weight");
    let dkc = kron(
        &v(&format!("{kc}.lokr_w1")),
        (4, 4),
        &v(&format!("{kc}.lokr_w2")),
        &[8, 8, 3, 3],
    );
    close(
        "lokr conv",
        &vals(&out[&tkc]),
        &add_scaled(&w(&tkc), &dkc, s),
        1e-5,
    );

    // DoRA per output row: norm of the *unpatched* weight (ComfyUI).
    let tdv = format!("{U}input_blocks.3.1.transformer_blocks.0.attn1.to_v.weight");
    let w0 = w(&tdv);
    let dd = mm(
        &v(&format!("{dv}.lora_up.weight")),
        64,
        4,
        &v(&format!("{dv}.lora_down.weight")),
        64,
    );
    let calc = add_scaled(&w0, &dd, 8.0 / 4.0);
    let scale = v(&format!("{dv}.dora_scale"));
    let mut want = vec![0.0; 64 * 64];
    for o in 0..64 {
        let n: f64 =
            (0..64).map(|i| w0[o * 64 + i].powi(2)).sum::<f64>().sqrt() + f32::EPSILON as f64;
        for i in 0..64 {
            let x = calc[o * 64 + i] * scale[o] / n;
            want[o * 64 + i] = w0[o * 64 + i] + s * (x - w0[o * 64 + i]);
        }
    }
    close("dora out", &vals(&out[&tdv]), &want, 1e-5);

    // DoRA per input column: norm of the patched weight; strength 0.7.
    let tdi = format!("{U}input_blocks.3.1.transformer_blocks.0.attn2.to_v.weight");
    let w0 = w(&tdi);
    let dd = mm(
        &v(&format!("{di}.lora_up.weight")),
        64,
        4,
        &v(&format!("{di}.lora_down.weight")),
        32,
    );
    let calc = add_scaled(&w0, &dd, 1.0);
    let scale = v(&format!("{di}.dora_scale"));
    let mut want = vec![0.0; 64 * 32];
    for i in 0..32 {
        let n: f64 = (0..64)
            .map(|o| calc[o * 32 + i].powi(2))
            .sum::<f64>()
            .sqrt()
            + f32::EPSILON as f64;
        for o in 0..64 {
            let x = calc[o * 32 + i] * scale[i] / n;
            want[o * 32 + i] = w0[o * 32 + i] + s * (x - w0[o * 32 + i]);
        }
    }
    close("dora in", &vals(&out[&tdi]), &want, 1e-5);

    let tf = format!("{U}input_blocks.0.0.weight");
    close(
        "diff",
        &vals(&out[&tf]),
        &add_scaled(&w(&tf), &v(&format!("{f}.diff")), s),
        1e-6,
    );
    let tb = format!("{U}input_blocks.0.0.bias");
    close(
        "diff_b",
        &vals(&out[&tb]),
        &add_scaled(&w(&tb), &v(&format!("{f}.diff_b")), s),
        1e-6,
    );
}

/// A small kohya LoRA (UNet attention + CLIP) and, optionally, a DoRA scale.
fn small_lora(dir: &Path, name: &str, seed: u64, dora: bool) -> PathBuf {
    let mut t = HashMap::new();
    for (i, m) in ["attn1_to_q", "attn2_to_out_0", "ff_net_0_proj"]
        .iter()
        .enumerate()
    {
        let x = format!("lora_unet_input_blocks_3_1_transformer_blocks_0_{m}");
        let out = if *m == "ff_net_0_proj" { 512 } else { 64 };
        t.insert(
            format!("{x}.lora_down.weight"),
            rnd(seed + i as u64, &[4, 64], 1.0),
        );
        t.insert(
            format!("{x}.lora_up.weight"),
            rnd(seed + 10 + i as u64, &[out, 4], 1.0),
        );
        t.insert(format!("{x}.alpha"), scalar(4.0));
        if dora {
            t.insert(
                format!("{x}.dora_scale"),
                (rnd(seed + 20, &[out, 1], 0.5) + 1.5).unwrap(),
            );
        }
    }
    for l in 0..2 {
        let x = format!("lora_te_text_model_encoder_layers_{l}_mlp_fc1");
        t.insert(
            format!("{x}.lora_down.weight"),
            rnd(seed + 30 + l, &[4, 32], 1.0),
        );
        t.insert(
            format!("{x}.lora_up.weight"),
            rnd(seed + 40 + l, &[128, 4], 1.0),
        );
    }
    save(dir, name, &t)
}

#[test]
fn stacking_applies_patches_in_order_and_negative_strength_subtracts() {
    let d = tempfile::tempdir().unwrap();
    let pa = small_lora(d.path(), "a.safetensors", 100, true);
    let pb = small_lora(d.path(), "b.safetensors", 200, false);
    let map = KeyMap::for_weights(base(), true, true).unwrap();
    let load = |p: &Path| Arc::new(load_lora(&read_lora(p).unwrap(), &map, base()).unwrap());
    let (a, b) = (load(&pa), load(&pb));
    let e = |l: &Arc<comfyrs::models::lora::LoadedLora>, s| {
        PatchEntry::lora(l.clone(), String::new(), s)
    };
    let key = format!("{U}input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight");
    let ab = patch_weights(base(), &[e(&a, 0.6), e(&b, -0.8)], U, DType::F32, false).unwrap();
    let ba = patch_weights(base(), &[e(&b, -0.8), e(&a, 0.6)], U, DType::F32, false).unwrap();
    // Sequential application: A on the base, then B on A's result.
    let only_a = patch_weights(base(), &[e(&a, 0.6)], U, DType::F32, false).unwrap();
    let bt = read_lora(&pb).unwrap().tensors;
    let x = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q";
    let db = mm(
        &vals(&bt[&format!("{x}.lora_up.weight")]),
        64,
        4,
        &vals(&bt[&format!("{x}.lora_down.weight")]),
        64,
    );
    close(
        "A then B",
        &vals(&ab[&key]),
        &add_scaled(&vals(&only_a[&key]), &db, -0.8),
        1e-5,
    );
    // DoRA depends on the weight it is applied to: the order matters.
    let diff: f64 = vals(&ab[&key])
        .iter()
        .zip(vals(&ba[&key]))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff > 1e-3, "order made no difference ({diff})");
    // Negative strength: base - s·Δ for a plain LoRA.
    let neg = patch_weights(base(), &[e(&b, -1.0)], U, DType::F32, false).unwrap();
    let pos = patch_weights(base(), &[e(&b, 1.0)], U, DType::F32, false).unwrap();
    let w0 = w(&key);
    let mid: Vec<f64> = vals(&neg[&key])
        .iter()
        .zip(vals(&pos[&key]))
        .map(|(n, p)| (n + p) / 2.0)
        .collect();
    close("±1 around base", &mid, &w0, 1e-5);
}

// ---- node level ----

fn setup(loras: &Path) -> (Arc<Registry>, Arc<Environment>, Executor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Paths::under(dir.path());
    paths.model_roots = vec![root().join("fixtures/models"), loras.to_path_buf()];
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = Arc::new(Environment::new(paths));
    let reg = Arc::new(Registry::with_builtin_nodes());
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    (reg, env, exec, dir)
}

/// The tiny demo with a LoraLoader (node 10) between the checkpoint and its users.
fn lora_workflow(name: &str, sm: f64, sc: f64) -> Json {
    let text = std::fs::read_to_string(root().join("workflows/tiny_txt2img.json")).unwrap();
    let mut p: Json = serde_json::from_str(&text).unwrap();
    p["10"] = json!({"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
        "lora_name": name, "strength_model": sm, "strength_clip": sc}});
    p["5"]["inputs"]["model"] = json!(["10", 0]);
    p["2"]["inputs"]["clip"] = json!(["10", 1]);
    p["3"]["inputs"]["clip"] = json!(["10", 1]);
    p
}

fn run(reg: &Registry, env: &Environment, exec: &Executor, p: &Json, id: &str) -> RunOutcome {
    let wf = parse_workflow(&p.to_string()).unwrap();
    let valid = prepare(wf, &Overrides::default(), reg, env, None).unwrap();
    exec.run(id, &valid, None, &Interrupt::new(), &NoEvents)
}

fn image(env: &Environment, out: &RunOutcome) -> Vec<u8> {
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let name = out.outputs["7"]["images"][0]["filename"].as_str().unwrap();
    image::open(env.paths.output.join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn loader_strengths_stacking_and_caching_by_count() {
    let models = tempfile::tempdir().unwrap();
    let loras = models.path().join("loras");
    small_lora(&loras, "style.safetensors", 300, false);
    small_lora(&loras, "other.safetensors", 400, true);
    let (reg, env, exec, _d) = setup(models.path());
    let text = std::fs::read_to_string(root().join("workflows/tiny_txt2img.json")).unwrap();
    let plain: Json = serde_json::from_str(&text).unwrap();
    let base_img = image(&env, &run(&reg, &env, &exec, &plain, "base"));

    // Both strengths 0: the inputs pass through; the image is the plain one.
    let zero = image(
        &env,
        &run(
            &reg,
            &env,
            &exec,
            &lora_workflow("style.safetensors", 0.0, 0.0),
            "z",
        ),
    );
    assert_eq!(zero, base_img);
    let cache = env.resources.get_or_default::<PatchCache>();
    assert_eq!((cache.unet_builds(), cache.clip_builds()), (0, 0));

    let p1 = lora_workflow("style.safetensors", 1.0, 1.0);
    let img1 = image(&env, &run(&reg, &env, &exec, &p1, "a"));
    assert_ne!(img1, base_img);
    assert_eq!((cache.unet_builds(), cache.clip_builds()), (1, 1));

    // Only strength_model changes: loader, encoders (their input changed), sampler and what
    // follows run; the checkpoint is not re-read, the file not re-read, CLIP not re-patched.
    let mut p2 = p1.clone();
    p2["10"]["inputs"]["strength_model"] = json!(-0.5);
    let out2 = run(&reg, &env, &exec, &p2, "b");
    let img2 = image(&env, &out2);
    assert_eq!(
        sorted(out2.executed.clone()),
        vec!["10", "2", "3", "5", "6", "7"]
    );
    assert!(!out2.executed.contains(&"1".to_string()));
    assert_ne!(img2, img1);
    assert_eq!(env.resources.get_or_default::<ModelCache>().loads(), 1);
    assert_eq!(env.resources.get_or_default::<LoraFiles>().reads(), 1);
    assert_eq!((cache.unet_builds(), cache.clip_builds()), (2, 1));

    // Back to the first strengths after clearing the output cache: everything comes from the
    // patch cache (nothing rebuilt) and the image is identical.
    exec.clear_cache();
    let again = image(&env, &run(&reg, &env, &exec, &p1, "c"));
    assert_eq!(again, img1);
    assert_eq!((cache.unet_builds(), cache.clip_builds()), (2, 1));

    // Two stacked loaders build one model each for UNet and CLIP, not intermediate ones.
    let mut st = p1.clone();
    st["11"] = json!({"class_type": "LoraLoader", "inputs": {"model": ["10", 0], "clip": ["10", 1],
        "lora_name": "other.safetensors", "strength_model": 0.5, "strength_clip": -1.0}});
    st["5"]["inputs"]["model"] = json!(["11", 0]);
    st["2"]["inputs"]["clip"] = json!(["11", 1]);
    st["3"]["inputs"]["clip"] = json!(["11", 1]);
    let stacked = image(&env, &run(&reg, &env, &exec, &st, "d"));
    assert_ne!(stacked, img1);
    assert_eq!((cache.unet_builds(), cache.clip_builds()), (3, 2));

    // LoraLoaderModelOnly at strength 0 passes MODEL through; at 1 it changes only the UNet.
    let mut mo = plain.clone();
    mo["10"] = json!({"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0],
        "lora_name": "style.safetensors", "strength_model": 0.0}});
    mo["5"]["inputs"]["model"] = json!(["10", 0]);
    assert_eq!(image(&env, &run(&reg, &env, &exec, &mo, "e")), base_img);
    mo["10"]["inputs"]["strength_model"] = json!(1.0);
    let model_only = image(&env, &run(&reg, &env, &exec, &mo, "f"));
    let mut clip_zero = p1.clone();
    clip_zero["10"]["inputs"]["strength_clip"] = json!(0.0);
    assert_eq!(
        model_only,
        image(&env, &run(&reg, &env, &exec, &clip_zero, "g"))
    );
}

/// Log lines written while the tests run (one global subscriber for this test binary).
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Writer(b.clone()))
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unmatched_keys_are_logged_and_bad_files_are_node_errors() {
    let log = log();
    let models = tempfile::tempdir().unwrap();
    let loras = models.path().join("loras");
    // Half matching: one SD1 key and three that match nothing.
    let mut t = HashMap::new();
    let x = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_k";
    t.insert(format!("{x}.lora_down.weight"), rnd(1, &[2, 64], 1.0));
    t.insert(format!("{x}.lora_up.weight"), rnd(2, &[64, 2], 1.0));
    t.insert(
        "lora_unet_nowhere_block.lora_down.weight".into(),
        rnd(3, &[2, 8], 1.0),
    );
    t.insert(
        "lora_unet_nowhere_block.lora_up.weight".into(),
        rnd(4, &[8, 2], 1.0),
    );
    t.insert("lora_unet_nowhere_block.alpha".into(), scalar(1.0));
    save(&loras, "partial_unmatched.safetensors", &t);
    // SDXL-style keys: nothing in SD1.5 has a second transformer block or a second text encoder.
    let mut x = HashMap::new();
    let k = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q";
    x.insert(format!("{k}.lora_down.weight"), rnd(5, &[2, 640], 1.0));
    x.insert(format!("{k}.lora_up.weight"), rnd(6, &[640, 2], 1.0));
    let k = "lora_te2_text_model_encoder_layers_0_mlp_fc1";
    x.insert(format!("{k}.lora_down.weight"), rnd(7, &[2, 1280], 1.0));
    x.insert(format!("{k}.lora_up.weight"), rnd(8, &[5120, 2], 1.0));
    save(&loras, "sdxl_style.safetensors", &x);
    // Not a LoRA at all: the checkpoint itself.
    std::fs::copy(
        root().join("fixtures/models/checkpoints/tiny_sd15.safetensors"),
        loras.join("a_checkpoint.safetensors"),
    )
    .unwrap();
    let (reg, env, exec, _d) = setup(models.path());

    let out = run(
        &reg,
        &env,
        &exec,
        &lora_workflow("partial_unmatched.safetensors", 1.0, 1.0),
        "a",
    );
    assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("partial_unmatched.safetensors"))
        .unwrap_or_else(|| panic!("no warning in {text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("3 of 5 keys"), "{line}");
    assert!(line.contains("lora_unet_nowhere_block.alpha"), "{line}");

    for (file, expect) in [
        (
            "sdxl_style.safetensors",
            "has no key that matches this SD15 model or its CLIP",
        ),
        ("a_checkpoint.safetensors", "not a LoRA"),
    ] {
        let out = run(&reg, &env, &exec, &lora_workflow(file, 1.0, 1.0), file);
        let RunStatus::Error(data) = &out.status else {
            panic!("{file}: {:?}", out.status)
        };
        assert_eq!(data["node_id"], "10");
        assert_eq!(data["node_type"], "LoraLoader");
        assert_eq!(data["exception_type"], "ValueError");
        let msg = data["exception_message"].as_str().unwrap();
        assert!(msg.starts_with("input 'lora_name': "), "{msg}");
        assert!(msg.contains(file) && msg.contains(expect), "{msg}");
    }
}

#[test]
fn object_info_matches_comfyui() {
    let models = tempfile::tempdir().unwrap();
    let loras = models.path().join("loras");
    small_lora(&loras, "x.safetensors", 1, false);
    let (reg, env, _exec, _d) = setup(models.path());
    let info = reg.object_info(&env);
    let l = &info["LoraLoader"];
    assert_eq!(l["display_name"], "Load LoRA");
    assert_eq!(l["category"], "loaders");
    assert_eq!(l["output"], json!(["MODEL", "CLIP"]));
    assert_eq!(
        l["input_order"]["required"],
        json!([
            "model",
            "clip",
            "lora_name",
            "strength_model",
            "strength_clip"
        ])
    );
    let sm = &l["input"]["required"]["strength_model"];
    assert_eq!(sm[0], "FLOAT");
    assert_eq!(sm[1]["default"], 1.0);
    assert_eq!(sm[1]["min"], -100.0);
    assert_eq!(sm[1]["max"], 100.0);
    assert_eq!(sm[1]["step"], 0.01);
    assert_eq!(
        l["input"]["required"]["lora_name"][0],
        json!(["x.safetensors"])
    );
    let m = &info["LoraLoaderModelOnly"];
    assert_eq!(m["display_name"], "LoraLoaderModelOnly");
    assert_eq!(m["output"], json!(["MODEL"]));
    assert_eq!(
        m["input_order"]["required"],
        json!(["model", "lora_name", "strength_model"])
    );
}

/// ComfyUI's own results (scripts/gen_lora_comfy_golden.py) for the adapter paths that are
/// easiest to get subtly wrong: LoCon `lora_mid`, Tucker LoHa, DoRA on both axes, DoRA on LoKr.
#[test]
fn adapter_math_matches_comfyui_golden_values() {
    let f = comfyrs::models::checkpoint::load_safetensors(
        &root().join("tests/data/lora_comfy_golden.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let apply = |name: &str| {
        let mut used = std::collections::HashSet::new();
        let p = comfyrs::models::lora::adapter::parse_patches(name, &f, &mut used).unwrap();
        assert_eq!(p.len(), 1, "{name}");
        let s: f32 = f[&format!("S.{name}")].to_scalar().unwrap();
        p[0].1.apply(&f[&format!("W.{name}")], s as f64).unwrap()
    };
    for name in [
        "lora_mid",
        "loha_tucker",
        "dora_out",
        "dora_in_conv",
        "lokr_dora",
    ] {
        close(
            name,
            &vals(&apply(name)),
            &vals(&f[&format!("OUT.{name}")]),
            1e-6,
        );
    }
    // ComfyUI (a125cd84, torch 2.8) fails on a LoKr with a Tucker core and leaves the weight
    // unchanged; comfyrs applies it (a documented difference).
    assert_eq!(vals(&f["OUT.lokr_t2"]), vals(&f["W.lokr_t2"]));
    assert_ne!(vals(&apply("lokr_t2")), vals(&f["W.lokr_t2"]));
}
