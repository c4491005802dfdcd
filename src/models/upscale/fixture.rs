//! The tiny deterministic upscale models the tests run (written by
//! `cargo run --bin gen_fixtures` into `fixtures/models/upscale_models/`), fp16 safetensors:
//!
//! * `tiny_rrdb_old_x4`: RRDBNet in ESRGAN's old layout (`model.0`, `model.1.sub.N.RDBk...`,
//!   as 4x-UltraSharp), nf 8, gc 4, 2 blocks, ×4;
//! * `tiny_rrdb_new_x2`: RRDBNet in Real-ESRGAN's layout (`conv_first`, `body.N.rdbk...`,
//!   `conv_body`, `conv_up1/2`, `conv_hr`, `conv_last`) taking 12 channels, i.e. the
//!   pixel-unshuffle ×2 model (as RealESRGAN_x2plus), nf 8, gc 4, 2 blocks;
//! * `tiny_srvgg_x4`: SRVGGNetCompact (as realesr-general-x4v3), nf 8, 2 body convs, ×4.
//!
//! Values: the stream of [`crate::models::fixture::key_normals`] for each key; conv weights
//! std `1/sqrt(fan_in)` (×0.5 on the last conv, whose bias has mean 0.5, so outputs land
//! mostly in [0, 1]), other biases std 0.01, PReLU slopes mean 0.2 std 0.05; rounded to fp16.

use std::collections::BTreeMap;

use safetensors::tensor::{Dtype, TensorView};

use crate::models::fixture::key_normals;

pub const TINY_RRDB_OLD_PATH: &str = "fixtures/models/upscale_models/tiny_rrdb_old_x4.safetensors";
pub const TINY_RRDB_NEW_PATH: &str = "fixtures/models/upscale_models/tiny_rrdb_new_x2.safetensors";
pub const TINY_SRVGG_PATH: &str = "fixtures/models/upscale_models/tiny_srvgg_x4.safetensors";

const NF: usize = 8;
const GC: usize = 4;
const NB: usize = 2;

/// Key → (shape, whether it is the final conv).
type Layout = BTreeMap<String, (Vec<usize>, bool)>;

fn conv(l: &mut Layout, name: &str, o: usize, i: usize, last: bool) {
    l.insert(format!("{name}.weight"), (vec![o, i, 3, 3], last));
    l.insert(format!("{name}.bias"), (vec![o], last));
}

/// The RRDB trunk; `name(b, r, j)` gives the conv's key stem.
fn dense_blocks(l: &mut Layout, name: impl Fn(usize, usize, usize) -> String) {
    for b in 0..NB {
        for r in 1..=3 {
            for j in 1..=5 {
                let o = if j == 5 { NF } else { GC };
                conv(l, &name(b, r, j), o, NF + (j - 1) * GC, false);
            }
        }
    }
}

fn values(key: &str, shape: &[usize], last: bool) -> Vec<f64> {
    let n: usize = shape.iter().product();
    let (mean, std) = if shape.len() == 1 && !key.ends_with(".bias") {
        (0.2, 0.05) // PReLU slopes
    } else if key.ends_with(".bias") {
        (if last { 0.5 } else { 0.0 }, 0.01)
    } else {
        let fan_in: usize = shape[1..].iter().product();
        (0.0, if last { 0.5 } else { 1.0 } / (fan_in as f64).sqrt())
    };
    key_normals(key, n)
        .into_iter()
        .map(|z| mean + std * z)
        .collect()
}

fn serialize(layout: &Layout, name: &str) -> Vec<u8> {
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = layout
        .iter()
        .map(|(k, (shape, last))| {
            let bytes = values(k, shape, *last)
                .into_iter()
                .flat_map(|v| half::f16::from_f64(v).to_le_bytes())
                .collect();
            (k.clone(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F16, s.clone(), b).expect("consistent tensor view"),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("comfyrs_fixture".to_string(), name.to_string());
    safetensors::tensor::serialize(views, Some(meta)).expect("serialize safetensors")
}

/// The bytes of `tiny_rrdb_old_x4.safetensors`.
pub fn tiny_rrdb_old_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    conv(&mut l, "model.0", NF, 3, false);
    dense_blocks(&mut l, |b, r, j| {
        format!("model.1.sub.{b}.RDB{r}.conv{j}.0")
    });
    conv(&mut l, &format!("model.1.sub.{NB}"), NF, NF, false);
    conv(&mut l, "model.3", NF, NF, false);
    conv(&mut l, "model.6", NF, NF, false);
    conv(&mut l, "model.8", NF, NF, false);
    conv(&mut l, "model.10", 3, NF, true);
    serialize(&l, "tiny_rrdb_old_x4 v1 (src/models/upscale/fixture.rs)")
}

/// The bytes of `tiny_rrdb_new_x2.safetensors`.
pub fn tiny_rrdb_new_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    conv(&mut l, "conv_first", NF, 12, false);
    dense_blocks(&mut l, |b, r, j| format!("body.{b}.rdb{r}.conv{j}"));
    conv(&mut l, "conv_body", NF, NF, false);
    conv(&mut l, "conv_up1", NF, NF, false);
    conv(&mut l, "conv_up2", NF, NF, false);
    conv(&mut l, "conv_hr", NF, NF, false);
    conv(&mut l, "conv_last", 3, NF, true);
    serialize(&l, "tiny_rrdb_new_x2 v1 (src/models/upscale/fixture.rs)")
}

/// The bytes of `tiny_srvgg_x4.safetensors`.
pub fn tiny_srvgg_bytes() -> Vec<u8> {
    let mut l = Layout::new();
    let num_conv = 2;
    conv(&mut l, "body.0", NF, 3, false);
    for i in 0..num_conv {
        l.insert(format!("body.{}.weight", 2 * i + 1), (vec![NF], false));
        conv(&mut l, &format!("body.{}", 2 * i + 2), NF, NF, false);
    }
    l.insert(
        format!("body.{}.weight", 2 * num_conv + 1),
        (vec![NF], false),
    );
    conv(
        &mut l,
        &format!("body.{}", 2 * num_conv + 2),
        3 * 16,
        NF,
        true,
    );
    serialize(&l, "tiny_srvgg_x4 v1 (src/models/upscale/fixture.rs)")
}
