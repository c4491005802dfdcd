//! What happens to a LoRA-patched weight that the model keeps in fp8 e4m3fn: ComfyUI's rule
//! for when a model keeps its fp8 weights (`model_management.unet_dtype`) and its seeded
//! stochastic rounding back to fp8 (`comfy/float.py` `stochastic_rounding`, seeded per
//! weight with `model_patcher.string_to_seed(key)`), bit for bit.
//!
//! The rounding runs on the weight as fp16 with fp16 arithmetic (ComfyUI calls `x.half()`
//! first), adds torch's `torch.rand(dtype=float16)` uniforms (11 random bits of each MT19937
//! output, drawn in element order from a generator seeded with the key's CRC-32) to the
//! scaled mantissa and floors it; the exponent comes from `floor(log2|x|)` computed in fp16,
//! as torch does.

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::models::fp8::{encode, Fp8Kind};
use crate::models::Result;
use crate::torch_rng::Mt19937;

/// ComfyUI's `string_to_seed`: the CRC-32 (reflected, polynomial 0xEDB88320) of the key's
/// characters (code points, as Python's `ord`).
pub fn string_to_seed(key: &str) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for c in key.chars() {
        crc ^= c as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}

fn h(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `manual_stochastic_round_to_float8(x, float8_e4m3fn)` + the copy into fp8, for `values`
/// in element order with the generator `torch.Generator().manual_seed(seed)`: fp8 e4m3fn
/// bytes. The random stream is drawn first (it is sequential); the rounding itself runs in
/// parallel (a full-size Flux weight has tens of millions of elements).
pub fn stochastic_round_e4m3fn(values: &[f32], seed: u32) -> Vec<u8> {
    stochastic_round(Fp8Kind::E4m3fn, values, seed)
}

/// [`stochastic_round_e4m3fn`] for either fp8 format (`float8_e5m2`: 5 exponent bits, bias
/// 15, 2 mantissa bits, clamped to ±57344).
pub fn stochastic_round(kind: Fp8Kind, values: &[f32], seed: u32) -> Vec<u8> {
    use rayon::prelude::*;
    let mut mt = Mt19937::new(seed as u64);
    // torch.rand(float16): the low 11 bits of one 32-bit output per element.
    let bits: Vec<u16> = (0..values.len())
        .map(|_| (mt.next_u32() & 0x7FF) as u16)
        .collect();
    values
        .par_iter()
        .zip(bits.par_iter())
        .map(|(&v, &r)| round_one(kind, v, r as f32 / 2048.0))
        .collect()
}

/// One element of `manual_stochastic_round_to_float8` with the uniform `u` (fp16 ops).
fn round_one(kind: Fp8Kind, v: f32, u: f32) -> u8 {
    // (mantissa bits, exponent bias, largest exponent field, finfo max)
    let (mantissa_bits, bias, max_exponent, max) = match kind {
        Fp8Kind::E4m3fn => (3i32, 7i32, 15.0f32, 448.0f32),
        Fp8Kind::E5m2 => (2, 15, 31.0, 57344.0),
    };
    let x = h(v);
    let abs = x.abs();
    let sign = if abs == 0.0 { 0.0 } else { x.signum() };
    // clamp(floor(log2|x|) + bias, 0, max), log2 rounded to fp16 as torch's half op.
    let exponent = (h(abs.log2()).floor() + bias as f32).clamp(0.0, max_exponent);
    let normal = exponent != 0.0;
    let scaled = if normal {
        let p = h(2f32.powi(exponent as i32 - bias));
        h(h(h(abs / p) - 1.0) * (1 << mantissa_bits) as f32)
    } else {
        h(abs / 2f32.powi(-bias + 1 - mantissa_bits))
    };
    let mantissa = h(h(scaled + u).floor() / (1 << mantissa_bits) as f32);
    let magnitude = if normal {
        h(h(2f32.powi(exponent as i32 - bias)) * h(1.0 + mantissa))
    } else {
        h(h(2f32.powi(-bias + 1)) * mantissa)
    };
    encode(kind, h(sign * magnitude).clamp(-max, max))
}

/// ComfyUI's `stochastic_rounding(value, float8_e4m3fn, seed)` on a tensor: an F8E4M3
/// tensor of the same shape on `value`'s device.
pub fn stochastic_round_tensor(value: &Tensor, seed: u32) -> Result<Tensor> {
    stochastic_round_tensor_as(Fp8Kind::E4m3fn, value, seed)
}

/// ComfyUI's `stochastic_rounding(value, float8_*, seed)` on a tensor, stored as
/// [`crate::models::fp8::store_as`] stores `kind` (e4m3fn as F8E4M3, e5m2 as its U8 bits).
pub fn stochastic_round_tensor_as(kind: Fp8Kind, value: &Tensor, seed: u32) -> Result<Tensor> {
    let data: Vec<f32> = value
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?;
    let bytes = stochastic_round(kind, &data, seed);
    let t = crate::models::fp8::stored_bytes(kind, bytes, value.dims())?;
    Ok(t.to_device(value.device())?)
}

/// Memory ComfyUI reserves beside a model's weights (`minimum_inference_memory`: 0.8 GiB
/// plus its 400 MiB `EXTRA_RESERVED_VRAM` on Linux).
const MIN_INFERENCE_MEMORY: f64 = 0.8 * 1073741824.0 + 400.0 * 1048576.0;

/// ComfyUI's `unet_dtype` for a model whose weights are fp8: kept as fp8 when the device
/// computes in fp8 (`supports_fp8_compute`), or when the model at 2 bytes per parameter
/// would not fit `maximum_vram_for_weights` (0.88 × total memory − the inference reserve);
/// otherwise upcast (on the CPU to f32), so a LoRA-patched weight is not rounded back.
/// `total_memory`: the device's memory in bytes (on the CPU the machine's RAM).
pub fn comfy_keeps_fp8(params: usize, total_memory: u64, fp8_compute: bool) -> bool {
    fp8_compute || (params as f64) * 2.0 > total_memory as f64 * 0.88 - MIN_INFERENCE_MEMORY
}

/// Total RAM in bytes (`psutil.virtual_memory().total`: MemTotal of /proc/meminfo); None
/// where it cannot be read.
pub fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_crc32() {
        // CRC-32 check value of "123456789".
        assert_eq!(string_to_seed("123456789"), 0xCBF4_3926);
    }

    #[test]
    fn keep_rule() {
        let gib = 1u64 << 30;
        // Flux-dev (11.9 B parameters) on a 24 GiB machine: 23.8 GB > 0.88·24 GiB − 1.2 GiB.
        assert!(comfy_keeps_fp8(11_901_408_320, 24 * gib, false));
        assert!(!comfy_keeps_fp8(11_901_408_320, 128 * gib, false));
        assert!(comfy_keeps_fp8(1000, 128 * gib, true));
    }
}
