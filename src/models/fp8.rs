//! fp8 weight storage: bit-exact decode and encode of torch's `float8_e4m3fn` and
//! `float8_e5m2`, as ComfyUI uses them for fp8 checkpoints and `weight_dtype` options.
//!
//! The conversions follow torch's `c10/util/Float8_e4m3fn.h` and `Float8_e5m2.h`
//! (round-to-nearest-even from f32; f16 and bf16 go through f32, as torch does):
//!
//! * e4m3fn: no infinities; |x| ≥ 480 (including ±inf) and NaN encode to NaN
//!   (`0x7F`, with the input's sign: `0xFF` for negatives). It is not a clamp to 448.
//! * e5m2: the top byte of the f16 value, rounded to nearest even; values that round
//!   past 57344 become ±inf (`0x7C`/`0xFC`), NaN becomes `0x7F`/`0xFF`.
//!
//! Decoding uses 256-entry tables built once. Goldens made by torch 2.8 are in
//! `tests/data/fp8/` (script `scripts/goldens/gen_fp8_goldens.py`).

use std::sync::OnceLock;

/// The two fp8 formats torch (and so ComfyUI) stores weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Kind {
    /// `torch.float8_e4m3fn`: 4 exponent bits (bias 7), 3 mantissa bits, no infinities,
    /// NaN = `S.1111.111`; max finite 448.
    E4m3fn,
    /// `torch.float8_e5m2`: 5 exponent bits (bias 15), 2 mantissa bits, IEEE-like with
    /// infinities; max finite 57344.
    E5m2,
}

impl Fp8Kind {
    /// The kind stored under a safetensors header dtype (`F8_E4M3`, `F8_E5M2`).
    pub fn from_safetensors_dtype(name: &str) -> Option<Fp8Kind> {
        match name {
            "F8_E4M3" => Some(Fp8Kind::E4m3fn),
            "F8_E5M2" => Some(Fp8Kind::E5m2),
            _ => None,
        }
    }
}

fn decode_e4m3fn_slow(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((b >> 3) & 0x0F) as i32;
    let mant = (b & 0x07) as f32;
    if exp == 0x0F && b & 0x07 == 0x07 {
        return if sign < 0.0 { -f32::NAN } else { f32::NAN };
    }
    if exp == 0 {
        // subnormal: mant/8 * 2^-6
        sign * mant * (2.0f32).powi(-9)
    } else {
        sign * (1.0 + mant / 8.0) * (2.0f32).powi(exp - 7)
    }
}

fn decode_e5m2_slow(b: u8) -> f32 {
    // e5m2 is exactly the top byte of an IEEE f16
    half::f16::from_bits((b as u16) << 8).to_f32()
}

/// The f32 value of each of `kind`'s 256 codes.
pub fn table(kind: Fp8Kind) -> &'static [f32; 256] {
    static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
    static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
    match kind {
        Fp8Kind::E4m3fn => {
            E4M3.get_or_init(|| std::array::from_fn(|i| decode_e4m3fn_slow(i as u8)))
        }
        Fp8Kind::E5m2 => E5M2.get_or_init(|| std::array::from_fn(|i| decode_e5m2_slow(i as u8))),
    }
}

/// Decodes one fp8 byte to f32 (exact: every fp8 value is representable in f32, f16
/// and, except e4m3fn/e5m2 subnormals none of which are lost, bf16).
pub fn decode(kind: Fp8Kind, b: u8) -> f32 {
    table(kind)[b as usize]
}

/// Decodes a slice of fp8 bytes to f32.
pub fn decode_slice(kind: Fp8Kind, bytes: &[u8]) -> Vec<f32> {
    let t = table(kind);
    bytes.iter().map(|&b| t[b as usize]).collect()
}

/// torch's `fp8e4m3fn_from_fp32_value` (c10/util/Float8_e4m3fn.h).
pub fn encode_e4m3fn(f: f32) -> u8 {
    const FP8_MAX: u32 = 1087 << 20; // 480.0 as f32 bits: first value that rounds to NaN
    const DENORM_MASK: u32 = 141 << 23;
    let mut f_bits = f.to_bits();
    let sign = f_bits & 0x8000_0000;
    f_bits ^= sign;
    let result: u8 = if f_bits >= FP8_MAX {
        0x7F
    } else if f_bits < (121 << 23) {
        // subnormal or zero: let the f32 adder do the round-to-nearest-even
        let sum = f32::from_bits(f_bits) + f32::from_bits(DENORM_MASK);
        sum.to_bits().wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f_bits >> 20) & 1;
        f_bits = f_bits
            .wrapping_add(((7u32).wrapping_sub(127) << 23).wrapping_add(0x7FFFF))
            .wrapping_add(mant_odd);
        (f_bits >> 20) as u8
    };
    result | (sign >> 24) as u8
}

/// torch's `fp8e5m2_from_fp32_value` (c10/util/Float8_e5m2.h).
pub fn encode_e5m2(f: f32) -> u8 {
    const FP32_INF: u32 = 255 << 23;
    const FP8_MAX: u32 = 143 << 23; // 65536.0
    const DENORM_MASK: u32 = 134 << 23;
    let mut f_bits = f.to_bits();
    let sign = f_bits & 0x8000_0000;
    f_bits ^= sign;
    let result: u8 = if f_bits >= FP8_MAX {
        if f_bits > FP32_INF {
            0x7F
        } else {
            0x7C
        }
    } else if f_bits < (113 << 23) {
        let sum = f32::from_bits(f_bits) + f32::from_bits(DENORM_MASK);
        sum.to_bits().wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f_bits >> 21) & 1;
        f_bits = f_bits
            .wrapping_add(((15u32).wrapping_sub(127) << 23).wrapping_add(0xFFFFF))
            .wrapping_add(mant_odd);
        (f_bits >> 21) as u8
    };
    result | (sign >> 24) as u8
}

/// Encodes an f32 the way `tensor.to(torch.float8_*)` does.
pub fn encode(kind: Fp8Kind, f: f32) -> u8 {
    match kind {
        Fp8Kind::E4m3fn => encode_e4m3fn(f),
        Fp8Kind::E5m2 => encode_e5m2(f),
    }
}

/// Encodes an f16 (torch converts f16 → f32 → fp8; the first step is exact).
pub fn encode_f16(kind: Fp8Kind, h: half::f16) -> u8 {
    encode(kind, h.to_f32())
}

/// Encodes a bf16 (through f32, exact first step, as torch does).
pub fn encode_bf16(kind: Fp8Kind, h: half::bf16) -> u8 {
    encode(kind, h.to_f32())
}

/// Rounds an f32 through fp8 and back: the value ComfyUI computes with when it stores
/// a weight in fp8 and casts it up to f32 for the matmul.
pub fn round_trip(kind: Fp8Kind, f: f32) -> f32 {
    decode(kind, encode(kind, f))
}

/// `t` stored as `kind` the way `param.copy_(t)` into a float8 parameter does (torch's
/// round-to-nearest-even `.to(float8)`, through f32): ComfyUI's `UNETLoader` with
/// `weight_dtype` fp8_*. One byte per weight: e4m3fn as candle's `F8E4M3`; e5m2, which candle
/// has no dtype for, as its bits in a `U8` tensor, which `nn::widen` and the layers decode with
/// [`table`] (a U8 weight is always e5m2 bits).
pub fn store_as(
    kind: Fp8Kind,
    t: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Device};
    use rayon::prelude::*;
    /// Values per task.
    const BLOCK: usize = 1 << 16;
    match (kind, t.dtype()) {
        (Fp8Kind::E4m3fn, DType::F8E4M3) | (Fp8Kind::E5m2, DType::U8) => return Ok(t.clone()),
        _ => {}
    }
    let device = t.device().clone();
    let values: Vec<f32> = crate::models::nn::widen(&t.to_device(&Device::Cpu)?, DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let mut bytes = vec![0u8; values.len()];
    bytes
        .par_chunks_mut(BLOCK)
        .zip(values.par_chunks(BLOCK))
        .for_each(|(d, s)| {
            for (b, &v) in d.iter_mut().zip(s) {
                *b = encode(kind, v);
            }
        });
    stored_bytes(kind, bytes, t.dims())?.to_device(&device)
}

/// fp8 `kind` codes as a CPU tensor of `dims`, as [`store_as`] keeps them: e4m3fn as
/// `F8E4M3`, e5m2 as `U8` bits.
pub fn stored_bytes(
    kind: Fp8Kind,
    bytes: Vec<u8>,
    dims: &[usize],
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Device, Tensor};
    match kind {
        Fp8Kind::E4m3fn => Tensor::from_raw_buffer(&bytes, DType::F8E4M3, dims, &Device::Cpu),
        Fp8Kind::E5m2 => Tensor::from_vec(bytes, dims, &Device::Cpu),
    }
}
