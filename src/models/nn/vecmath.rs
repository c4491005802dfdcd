//! Vectorised `exp` for the CPU kernels: the softmax of attention and the erf of GELU.
//!
//! libm's scalar `expf`/`erff` were the largest non-gemm cost of a UNet step (about 90 M
//! softmax exponentials per 256×256 step). PyTorch computes these with 8-wide SLEEF
//! functions; here an AVX2+FMA Cephes-style polynomial (≤ 2 ulp on the softmax range)
//! is used when the CPU has it, chosen at run time, with scalar fallbacks elsewhere.

/// `row = softmax(row)`: `exp(x − max) / Σ exp(x − max)`.
pub fn softmax_in_place(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { avx2::softmax_in_place(row) };
        return;
    }
    softmax_scalar(row);
}

/// `out[i] = a[i] · gelu(gate[i])` with the erf form of GELU, erf by Abramowitz & Stegun
/// 7.1.26 as PyTorch's vectorised CPU GELU computes it.
pub fn geglu_row(out: &mut [f32], a: &[f32], gate: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        unsafe { avx2::geglu_row(out, a, gate) };
        return;
    }
    for ((o, &a), &g) in out.iter_mut().zip(a).zip(gate) {
        *o = a * gelu_scalar(g);
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

fn softmax_scalar(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

// Abramowitz & Stegun 7.1.26 coefficients (the ones PyTorch's Vectorized<float>::erf uses).
const ERF_P: f32 = 0.327_591_1;
const ERF_A1: f32 = 0.254_829_6;
const ERF_A2: f32 = -0.284_496_72;
const ERF_A3: f32 = 1.421_413_8;
const ERF_A4: f32 = -1.453_152;
const ERF_A5: f32 = 1.061_405_4;

fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (ERF_P * a + 1.0);
    let r = (((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1;
    (1.0 - r * t * (-x * x).exp()).copysign(x)
}

fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_scalar(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// 8-wide `exp`: range reduction by `n = round(x·log2 e)`, a degree-5 polynomial on
    /// the remainder, and the exponent built from `n` (Cephes `expf`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(x, _mm256_set1_ps(88.376_26));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.336_55));
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // r = x − n·ln2 in two parts for accuracy.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.398_199_9e-3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.333_452e-3));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.166_579_6e-2));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.166_666_66));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2^n through the exponent bits.
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_in_place(row: &mut [f32]) {
        let n = row.len();
        let body = n - n % 8;
        let p = row.as_mut_ptr();
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < body {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p.add(i)));
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let max = lanes
            .iter()
            .chain(&row[body..])
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let vm = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        i = 0;
        while i < body {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
            _mm256_storeu_ps(p.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
            i += 8;
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), vsum);
        let mut sum: f32 = lanes.iter().sum();
        for x in &mut row[body..] {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        let vinv = _mm256_set1_ps(inv);
        i = 0;
        while i < body {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), vinv));
            i += 8;
        }
        for x in &mut row[body..] {
            *x *= inv;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn geglu_row(out: &mut [f32], a: &[f32], gate: &[f32]) {
        let n = out.len().min(a.len()).min(gate.len());
        let body = n - n % 8;
        let one = _mm256_set1_ps(1.0);
        let half = _mm256_set1_ps(0.5);
        let sign_bit = _mm256_set1_ps(-0.0);
        let mut i = 0;
        while i < body {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let x = _mm256_mul_ps(g, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            // erf(x) = sign(x) · (1 − r(t)·t·exp(−x²)), t = 1 / (1 + p|x|)
            let sign = _mm256_and_ps(sign_bit, x);
            let ax = _mm256_xor_ps(sign, x);
            let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), ax, one));
            let mut r = _mm256_fmadd_ps(_mm256_set1_ps(ERF_A5), t, _mm256_set1_ps(ERF_A4));
            r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A3));
            r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A2));
            r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(ERF_A1));
            let e = exp8(_mm256_xor_ps(sign_bit, _mm256_mul_ps(x, x)));
            let erf = _mm256_xor_ps(
                sign,
                _mm256_fmadd_ps(_mm256_xor_ps(sign_bit, _mm256_mul_ps(e, t)), r, one),
            );
            let gelu = _mm256_mul_ps(_mm256_mul_ps(g, half), _mm256_add_ps(one, erf));
            let av = _mm256_loadu_ps(a.as_ptr().add(i));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(av, gelu));
            i += 8;
        }
        for j in body..n {
            out[j] = a[j] * gelu_scalar(gate[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_scalar_form() {
        for len in [1usize, 7, 8, 77, 1024] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let mut fast = row.clone();
            softmax_in_place(&mut fast);
            let mut exact: Vec<f64> = row.iter().map(|&x| x as f64).collect();
            let max = exact.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = exact.iter().map(|x| (x - max).exp()).sum();
            for x in &mut exact {
                *x = (*x - max).exp() / sum;
            }
            for (f, e) in fast.iter().zip(&exact) {
                assert!(
                    (*f as f64 - e).abs() <= 1e-6 * e + 1e-12,
                    "len {len}: {f} vs {e}"
                );
            }
            let total: f32 = fast.iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "len {len}: sums to {total}");
        }
    }

    #[test]
    fn geglu_matches_the_erf_gelu() {
        let gate: Vec<f32> = (0..203).map(|i| (i as f32 - 101.0) * 0.07).collect();
        let a: Vec<f32> = (0..203).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut out = vec![0f32; 203];
        geglu_row(&mut out, &a, &gate);
        for i in 0..203 {
            let x = gate[i] as f64;
            let exact = a[i] as f64 * 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            // A&S 7.1.26 is good to 1.5e-7 in erf.
            assert!(
                (out[i] as f64 - exact).abs() < 2e-6 * (1.0 + exact.abs()),
                "gelu({x}): {} vs {exact}",
                out[i]
            );
        }
    }
}
