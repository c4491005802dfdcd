//! torch's float32 scalar math on CPU, as ComfyUI's samplers see it (numerics.md §2).
//!
//! torch 2.8 evaluates `sqrt` (also `** 0.5`) and `log` of float32 tensors, 0-d ones
//! included, with MKL VML (`vmsSqrt` / `vmsLn`, mode `VML_HA`). Those kernels are
//! faithfully but not correctly rounded (about 17% of square roots and 9% of logarithms are
//! the other neighbour of the exact value), and the SDE samplers amplify such last-ulp
//! differences through the Brownian noise scale to ~2e-5 relative. The functions here
//! reproduce the reference machine's results (AMD EPYC with AVX2, oneMKL 2024.2 as
//! bundled in the torch 2.8 wheel), found by comparing with torch over whole binades:
//!
//! * [`sqrt`]: bit-exact on every normal float. The kernel starts from the CPU's `rsqrtss`
//!   estimate (AMD's, tabulated in [`amd_rsqrt`]), does one Goldschmidt step and one
//!   residual correction, all in float32 without fused multiply-adds.
//! * [`ln`]: `e·ln2 + log1p(f)` with `m = 1 + f` in [2/3, 4/3) and ln2 split hi/lo (exact
//!   on every exponent); the log1p polynomial is a fitted degree-10 Horner form that gives
//!   torch's result on 99.985% of the mantissas in [2/3, 4/3) (the rest are one ulp off).
//!
//! [`with_profile`] switches [`sqrt`] and [`ln`] to correctly rounded results on the current
//! thread, to compare with goldens made on another CPU. [`logit`] and [`sigmoid`] are the
//! scalar kernels torch runs for 0-d tensors (the C library's `logf` / `expf`, not MKL).
//!
//! Subnormal inputs take MKL's special path, which is correctly rounded, as are zero,
//! negative, infinite and NaN inputs here. On other CPUs (Intel) MKL picks other kernels and
//! torch's last bits differ; these functions stay those of the reference machine.

/// Whose float32 [`sqrt`] and [`ln`] results to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The reference machine's MKL kernels (the default; see the module docs).
    ReferenceMachine,
    /// Correctly rounded results: no particular machine. Goldens made on another CPU (whose
    /// MKL differs from the reference machine's in other last bits) can be compared in this
    /// profile to tell algorithm errors from last-ulp libm differences.
    CorrectlyRounded,
}

thread_local! {
    static PROFILE: std::cell::Cell<Profile> = const { std::cell::Cell::new(Profile::ReferenceMachine) };
}

/// Runs `f` with [`sqrt`] and [`ln`] in `profile` on this thread (sampling runs on the
/// calling thread), then restores the previous profile.
pub fn with_profile<R>(profile: Profile, f: impl FnOnce() -> R) -> R {
    let before = PROFILE.with(|p| p.replace(profile));
    struct Restore(Profile);
    impl Drop for Restore {
        fn drop(&mut self) {
            PROFILE.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

fn correctly_rounded() -> bool {
    PROFILE.with(|p| p.get()) == Profile::CorrectlyRounded
}

/// torch's `tensor.sqrt()` / `tensor ** 0.5` for a float32 value.
pub fn sqrt(x: f32) -> f32 {
    if !x.is_normal() || x < 0.0 || correctly_rounded() {
        return (x as f64).sqrt() as f32;
    }
    let y = amd_rsqrt(x);
    let s0 = x * y;
    let h0 = 0.5 * y;
    let e = 0.5 - s0 * h0;
    let s = s0 + s0 * e;
    let h = h0 + h0 * e;
    let r = x - s * s;
    s + r * h
}

/// ln 2 split so that `e · LN2_HI` is exact for every float exponent.
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = (std::f64::consts::LN_2 - 0.693_145_751_953_125) as f32;

/// log1p(f) = f + f·(f·P(f)) on [-1/3, 1/3], P by Horner; P's coefficients from c0 up, fitted
/// to torch's results (least squares, then a search over the last bits).
const LOG1P_P: [u32; 9] = [
    0xbf00_0000,
    0x3eaa_aa83,
    0xbe7f_ff78,
    0x3e4c_e814,
    0xbe2a_cedf,
    0x3e0f_6ba9,
    0xbdf9_891e,
    0x3e0f_3219,
    0xbe04_0376,
];

/// torch's `tensor.log()` for a float32 value.
pub fn ln(x: f32) -> f32 {
    if !x.is_normal() || x < 0.0 || correctly_rounded() {
        return (x as f64).ln() as f32;
    }
    let bits = x.to_bits() as i32;
    // Exponent that brings the mantissa into [2/3, 4/3) (0x3f2aaaab is 2/3).
    let e = (bits - 0x3f2a_aaab) >> 23;
    let m = f32::from_bits((bits - (e << 23)) as u32);
    let f = m - 1.0;
    let mut p = f32::from_bits(LOG1P_P[8]);
    for &c in LOG1P_P[..8].iter().rev() {
        p = p * f + f32::from_bits(c);
    }
    let core = f + f * (f * p);
    let ef = e as f32;
    (core + ef * LN2_LO) + ef * LN2_HI
}

/// torch's `tensor.exp()` for a float32 value: MKL's `vmsExp` agrees with the correctly
/// rounded result on about 99% of inputs, libm's `expf` less often.
pub fn exp(x: f32) -> f32 {
    (x as f64).exp() as f32
}

/// torch's `tensor.expm1()` for a float32 value (correctly rounded, which torch's kernel
/// matches on about 99.5% of inputs).
pub fn exp_m1(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// torch's `tensor.logit()` of a 0-d float32 tensor: the kernel's scalar path,
/// `log(x / (1 − x))` with the C library's `logf` (not MKL), `inf` at 1.
pub fn logit(x: f32) -> f32 {
    if x == 1.0 {
        return f32::INFINITY;
    }
    (x / (1.0 - x)).ln()
}

/// torch's `tensor.sigmoid()` of a 0-d float32 tensor: the scalar path
/// `1 / (1 + exp(−a))` with the C library's `expf`.
pub fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

/// Method-call form of [`sqrt`], [`ln`], [`exp`] and [`exp_m1`], so sampler code reads like
/// ComfyUI's tensor expressions.
pub trait TorchScalar {
    fn torch_sqrt(self) -> f32;
    fn torch_ln(self) -> f32;
    fn torch_exp(self) -> f32;
    fn torch_exp_m1(self) -> f32;
}

impl TorchScalar for f32 {
    fn torch_sqrt(self) -> f32 {
        sqrt(self)
    }
    fn torch_ln(self) -> f32 {
        ln(self)
    }
    fn torch_exp(self) -> f32 {
        exp(self)
    }
    fn torch_exp_m1(self) -> f32 {
        exp_m1(self)
    }
}

/// AMD's `rsqrtss` estimate of 1/√x for a normal positive `x`.
///
/// The estimate is a function of the exponent's parity and the top 12 mantissa bits only,
/// and scales exactly with powers of 4; its result has a 12-bit mantissa. For x in [1, 4)
/// it is `0x3f000000 | k << 11` with `k` from [`RSQRT_K`]; other x are scaled into [1, 4).
pub fn amd_rsqrt(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = (bits >> 23) as i32 - 127;
    let half = (e & 1) as usize;
    let j = (e - half as i32) / 2; // x = x' · 4^j with x' in [1, 4)
    let k = RSQRT_K[half * 4096 + ((bits >> 11) & 0xfff) as usize] as u32;
    f32::from_bits((((126 - j) as u32) << 23) | (k << 11))
}

/// `k` of [`amd_rsqrt`] for x in [1, 2) (first 4096) and [2, 4) (last 4096).
static RSQRT_K: [u16; 8192] = decode_rsqrt_table();

/// Rebuilds [`RSQRT_K`] from its first value in each half and 2-bit decrements.
const fn decode_rsqrt_table() -> [u16; 8192] {
    let mut k = [0u16; 8192];
    k[0] = 4095;
    k[4096] = 1696;
    let mut i = 0;
    while i < 8191 {
        if i != 4095 {
            let code = (RSQRT_STEPS[i / 32] >> (2 * (i % 32))) & 3;
            k[i + 1] = k[i] - code as u16;
        }
        i += 1;
    }
    k
}

/// `k[i] - k[i + 1]` (0, 1 or 2) for i in 0..8191, 32 per word from the low bits; made with
/// `cargo run --example amd_rsqrt_table` on the reference machine.
const RSQRT_STEPS: [u64; 256] = [
    0x9555_1555_9555_1555,
    0x9555_1555_5555_1555,
    0x5555_1555_9555_1555,
    0x9555_1555_5555_1555,
    0x5555_1555_5555_1555,
    0x5555_1555_5555_1555,
    0x5555_1555_5555_1555,
    0x5555_1555_1555_1555,
    0x5515_5515_9515_5515,
    0x5515_5515_9515_5515,
    0x5515_5515_5515_5515,
    0x5515_5515_5515_5515,
    0x5515_5515_5515_5515,
    0x5515_5515_5515_5515,
    0x5515_5515_1515_5515,
    0x5515_5515_1515_5515,
    0x9155_1545_5155_1545,
    0x5155_1545_5155_1545,
    0x5155_1545_5155_1545,
    0x5155_1545_5155_1545,
    0x1155_1545_5155_1545,
    0x5155_1545_5155_1545,
    0x5155_1545_1155_1545,
    0x5155_1545_1155_1545,
    0x9151_5145_5151_5145,
    0x5151_5145_5151_5145,
    0x5151_5145_5151_5145,
    0x5151_5145_5151_5145,
    0x1151_5145_5151_5145,
    0x5151_5145_5151_5145,
    0x5151_5145_1151_5145,
    0x9151_5145_1151_5145,
    0x5145_1514_5145_1514,
    0x5145_1514_9145_1514,
    0x5145_1514_5145_1514,
    0x5145_1514_5145_1514,
    0x5145_1514_5145_1514,
    0x5145_1514_5145_1514,
    0x1145_1514_5145_1514,
    0x5145_1514_5145_1514,
    0x5451_1451_1451_1451,
    0x5451_1451_1451_1451,
    0x5451_1451_1451_1451,
    0x1451_1451_1451_1451,
    0x5451_1451_1451_1451,
    0x1451_1451_1451_1451,
    0x1451_1451_1451_1451,
    0x1451_1451_1451_1451,
    0x5145_1114_5145_1114,
    0x5145_1114_5145_1114,
    0x5145_1114_1145_1114,
    0x1145_1114_5145_1114,
    0x1145_1114_5145_1114,
    0x1145_1114_5145_1114,
    0x1145_1114_5145_1114,
    0x5145_1114_1145_1114,
    0x4511_1444_4511_1444,
    0x4511_1444_8511_1444,
    0x4511_1444_4511_1444,
    0x4511_1444_4511_1444,
    0x4511_1444_4511_1444,
    0x4511_1444_4511_1444,
    0x4511_1444_0511_1444,
    0x0511_1444_4511_1444,
    0x5111_1111_5111_1111,
    0x5111_1111_1111_1111,
    0x5111_1111_1111_1111,
    0x5111_1111_1111_1111,
    0x5111_1111_1111_1111,
    0x1111_1111_1111_1111,
    0x1111_1111_5111_1111,
    0x5111_1111_1111_1111,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_0444_4444,
    0x4444_4444_4444_4444,
    0x1111_0444_5111_0444,
    0x5111_0444_5111_0444,
    0x5111_0444_1111_0444,
    0x5111_0444_1111_0444,
    0x5111_0444_1111_0444,
    0x5111_0444_1111_0444,
    0x1111_0444_1111_0444,
    0x1111_0444_5111_0444,
    0x1044_4411_1044_4411,
    0x5044_4411_1044_4411,
    0x1044_4411_1044_4411,
    0x1044_4411_1044_4411,
    0x1044_4411_1044_4411,
    0x1044_4411_1044_4411,
    0x1044_4411_1044_4411,
    0x5044_4411_1044_4411,
    0x4444_1104_4444_1104,
    0x4444_1104_0444_1104,
    0x4444_1104_4444_1104,
    0x0444_1104_4444_1104,
    0x4444_1104_4444_1104,
    0x4444_1104_0444_1104,
    0x0444_1104_4444_1104,
    0x0444_1104_4444_1104,
    0x1041_1044_5041_1044,
    0x1041_1044_5041_1044,
    0x1041_1044_5041_1044,
    0x1041_1044_5041_1044,
    0x5041_1044_1041_1044,
    0x1041_1044_1041_1044,
    0x1041_1044_5041_1044,
    0x5041_1044_1041_1044,
    0x1044_1104_1044_1104,
    0x1044_1104_1044_1104,
    0x1044_1104_1044_1104,
    0x1044_1104_5044_1104,
    0x1044_1104_1044_1104,
    0x1044_1104_1044_1104,
    0x1044_1104_1044_1104,
    0x1044_1104_1044_1104,
    0x4410_4410_4410_4410,
    0x4410_4410_4410_4410,
    0x4410_4410_0410_4410,
    0x4410_4410_4410_4410,
    0x0410_4410_4410_4410,
    0x4410_4410_4410_4410,
    0x0410_4410_4410_4410,
    0x0410_4410_4410_4410,
    0x5145_1451_5145_1451,
    0x5145_1451_9145_1451,
    0x5145_1451_1145_1451,
    0x5145_1451_5145_1451,
    0x1145_1451_5145_1451,
    0x5145_1451_5145_1451,
    0x5145_1451_1145_1451,
    0x5145_1451_1145_1451,
    0x4514_5114_4514_5114,
    0x4514_5114_8514_5114,
    0x4514_5114_4514_5114,
    0x4514_5114_4514_5114,
    0x4514_5114_0514_5114,
    0x4514_5114_4514_5114,
    0x4514_5114_0514_5114,
    0x4514_5114_0514_5114,
    0x4445_1114_8445_1114,
    0x8445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x4445_1114_4445_1114,
    0x5111_1114_1111_1114,
    0x1111_1114_5111_1114,
    0x1111_1114_5111_1114,
    0x1111_1114_5111_1114,
    0x5111_1114_1111_1114,
    0x1111_1114_1111_1114,
    0x1111_1114_5111_1114,
    0x1111_1114_1111_1114,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x0444_4444_4444_4444,
    0x4444_4444_4444_4444,
    0x4444_4444_0444_4444,
    0x4444_4444_0444_4444,
    0x5044_4441_1044_4441,
    0x5044_4441_1044_4441,
    0x1044_4441_1044_4441,
    0x1044_4441_5044_4441,
    0x1044_4441_1044_4441,
    0x1044_4441_5044_4441,
    0x1044_4441_1044_4441,
    0x1044_4441_1044_4441,
    0x4411_1044_4411_1044,
    0x4411_1044_4411_1044,
    0x4411_1044_4411_1044,
    0x0411_1044_4411_1044,
    0x4411_1044_4411_1044,
    0x0411_1044_4411_1044,
    0x4411_1044_4411_1044,
    0x4411_1044_0411_1044,
    0x4441_1044_0441_1044,
    0x4441_1044_0441_1044,
    0x4441_1044_0441_1044,
    0x0441_1044_0441_1044,
    0x0441_1044_4441_1044,
    0x4441_1044_0441_1044,
    0x0441_1044_0441_1044,
    0x4441_1044_0441_1044,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_4110_4110,
    0x4110_4110_0110_4110,
    0x4410_4104_4410_4104,
    0x4410_4104_0410_4104,
    0x4410_4104_4410_4104,
    0x4410_4104_0410_4104,
    0x4410_4104_0410_4104,
    0x0410_4104_4410_4104,
    0x0410_4104_4410_4104,
    0x0410_4104_4410_4104,
    0x4410_4104_0410_4104,
    0x4410_4104_0410_4104,
    0x0410_4104_0410_4104,
    0x0410_4104_4410_4104,
    0x4410_4104_0410_4104,
    0x0410_4104_0410_4104,
    0x0410_4104_0410_4104,
    0x0410_4104_4410_4104,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x0404_1041_0404_1041,
    0x4404_1041_0404_1041,
    0x4104_0410_0104_0410,
    0x4104_0410_4104_0410,
    0x4104_0410_4104_0410,
    0x4104_0410_0104_0410,
    0x4104_0410_4104_0410,
    0x4104_0410_0104_0410,
    0x0104_0410_4104_0410,
    0x4104_0410_4104_0410,
    0x4104_0410_0104_0410,
    0x4104_0410_0104_0410,
    0x0104_0410_4104_0410,
    0x0104_0410_4104_0410,
    0x0104_0410_4104_0410,
    0x0104_0410_4104_0410,
    0x0104_0410_4104_0410,
    0x4104_0410_0104_0410,
    0x4404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_4404_0404,
    0x4404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x4404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x4404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_4404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_0404_0404,
    0x0404_0404_0404_0404,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// (input bits, torch 2.8 result bits on the reference machine) where torch's result is
    /// not the correctly rounded one; the first is the Brownian noise scale of dpmpp_sde's
    /// first step in the toy golden.
    const SQRT_REF: [(u32, u32); 11] = [
        (0x4045_2730, 0x3fe0_a86f),
        (0x372c_c3f0, 0x3b52_4dec),
        (0x3d7a_54e6, 0x3e7d_2664),
        (0x416e_5ff8, 0x4077_07c1),
        (0x3df6_a69f, 0x3eb1_aee4),
        (0x397f_ba56, 0x3c7f_dd28),
        (0x373a_f4e6, 0x3b5a_c577),
        (0x3b4b_1fbe, 0x3d64_08d7),
        (0x3fc6_7df3, 0x3f9f_6549),
        (0x373e_44ca, 0x3b5c_b35f),
        (0x4277_2282, 0x40fb_8741),
    ];

    /// As [`SQRT_REF`] for `log`; the first two are log σ of the karras schedule.
    const LN_REF: [(u32, u32); 12] = [
        (0x4169_86a5, 0x402b_90aa),
        (0x3d6e_eb48, 0xc035_dd73),
        (0x3fde_6961, 0x3f0d_709e),
        (0x395a_0b22, 0xc107_a6e8),
        (0x3b39_6f70, 0xc0bb_c3c7),
        (0x3fca_f81d, 0x3eec_0b54),
        (0x3ea1_51fe, 0xbf93_d4d8),
        (0x3da9_9263, 0xc01f_7228),
        (0x3dc3_1cb5, 0xc016_7784),
        (0x4016_7261, 0x3f5a_cf5a),
        (0x406c_8093, 0x3fa7_4e38),
        (0x4254_8347, 0x407e_40d8),
    ];

    #[test]
    fn sqrt_matches_torch_where_it_is_not_correctly_rounded() {
        for (x, want) in SQRT_REF {
            let x = f32::from_bits(x);
            assert_eq!(sqrt(x).to_bits(), want, "sqrt({x:e})");
            assert_ne!(((x as f64).sqrt() as f32).to_bits(), want);
            // Exact scaling by powers of 4, as torch's kernel.
            assert_eq!(sqrt(x * 16.0), sqrt(x) * 4.0);
        }
    }

    #[test]
    fn ln_matches_torch() {
        for (x, want) in LN_REF {
            let x = f32::from_bits(x);
            assert_eq!(ln(x).to_bits(), want, "ln({x:e})");
        }
    }

    #[test]
    fn special_inputs_are_correctly_rounded() {
        assert_eq!(sqrt(0.0), 0.0);
        assert!(sqrt(-1.0).is_nan());
        assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
        let sub = f32::from_bits(0x0000_1234);
        assert_eq!(sqrt(sub), (sub as f64).sqrt() as f32);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert!(ln(-2.0).is_nan());
        assert_eq!(ln(sub), (sub as f64).ln() as f32);
        assert_eq!(ln(2.0), std::f32::consts::LN_2);
    }

    #[test]
    fn amd_rsqrt_is_a_12_bit_estimate() {
        for i in 0..8192u32 {
            let x = f32::from_bits(0x3f80_0000 + (i << 11));
            let y = amd_rsqrt(x);
            let rel = (y as f64 * (x as f64).sqrt() - 1.0).abs();
            assert!(rel < 1.5 / 4096.0, "rsqrt({x}) = {y}");
            assert_eq!(y.to_bits() & 0x7ff, 0);
            // Constant over the 11 low mantissa bits, exact under scaling by 4.
            assert_eq!(amd_rsqrt(f32::from_bits(x.to_bits() | 0x7ff)), y);
            assert_eq!(amd_rsqrt(x * 0.25), y * 2.0);
            assert_eq!(amd_rsqrt(x * 4096.0), y / 64.0);
        }
        assert_eq!(amd_rsqrt(1.0).to_bits(), 0x3f7f_f800);
    }
}
