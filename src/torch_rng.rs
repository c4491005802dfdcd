//! Bit-exact port of PyTorch's CPU random number generation
//! (`torch.manual_seed` + `torch.randn` for float32), numerics.md §1.
//!
//! * MT19937 seeded from the low 32 bits of the 64-bit seed (§1.1, §1.2).
//! * `numel >= 16`: the "fill" path with the AVX2 kernel's exact float math,
//!   including the FMA contractions GCC emitted (§1.5, §1.6) and the tail rule.
//! * `numel < 16`: element-wise `normal_distribution<double>` with the cached
//!   second normal living on the generator (§1.7).

const MT_N: usize = 624;
const MT_M: usize = 397;
const MATRIX_A: u32 = 0x9908_B0DF;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7FFF_FFFF;

/// The MT19937 engine exactly as ATen's `mt19937` (left/next bookkeeping included).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; MT_N],
    left: u32,
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("left", &self.left)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// `init_genrand` on the low 32 bits of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 {
            state,
            left: 1,
            next: 0,
        }
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mix = (u & UPPER_MASK) | (v & LOWER_MASK);
        (mix >> 1) ^ if v & 1 != 0 { MATRIX_A } else { 0 }
    }

    fn next_state(&mut self) {
        let st = &mut self.state;
        for k in 0..MT_N - MT_M {
            st[k] = st[k + MT_M] ^ Self::twist(st[k], st[k + 1]);
        }
        for k in MT_N - MT_M..MT_N - 1 {
            st[k] = st[k + MT_M - MT_N] ^ Self::twist(st[k], st[k + 1]);
        }
        st[MT_N - 1] = st[MT_M - 1] ^ Self::twist(st[MT_N - 1], st[0]);
        self.left = MT_N as u32;
        self.next = 0;
    }

    /// One tempered 32-bit output (`random()`).
    pub fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.next_state();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^= y >> 18;
        y
    }
}

/// Torch's default CPU generator: the MT engine plus the cached double normal.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    mt: Mt19937,
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// A generator in the state `torch.manual_seed(seed)` leaves it in.
    /// Negative Python seeds map to their two's complement u64 (§1.1).
    pub fn new(seed: u64) -> Self {
        TorchGenerator {
            mt: Mt19937::new(seed),
            next_double_normal: None,
        }
    }

    /// Reseed: rebuilds the engine and clears the cached normal.
    pub fn manual_seed(&mut self, seed: u64) {
        *self = TorchGenerator::new(seed);
    }

    /// `random()`: one u32.
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `random64()`: high half first.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (hi << 32) | lo
    }

    /// float32 uniform in [0, 1): low 24 bits times 2^-24.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0)
    }

    /// float64 uniform in [0, 1): low 53 bits times 2^-53.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>` with mean 0, std 1 (uses and fills the cache).
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(shape, dtype=float32, generator=self)` on CPU (contiguous).
    pub fn randn(&mut self, shape: &[usize]) -> Vec<f32> {
        self.randn_n(shape.iter().product())
    }

    /// Same as [`TorchGenerator::randn`] for a flat element count.
    pub fn randn_n(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let mut i = 0;
        while i + 16 <= n {
            normal_fill_16_avx2(&mut data[i..i + 16]);
            i += 16;
        }
        if !n.is_multiple_of(16) {
            let base = n - 16;
            for k in 0..16 {
                data[base + k] = self.uniform_f32();
            }
            normal_fill_16_avx2(&mut data[base..base + 16]);
        }
        data
    }
}

/// `torch.manual_seed(seed); torch.randn(shape)` on CPU, float32.
pub fn torch_randn(seed: u64, shape: &[usize]) -> Vec<f32> {
    TorchGenerator::new(seed).randn(shape)
}

// ---- AVX2 kernel emulation (avx_mathfun.h, as compiled in torch's libtorch_cpu) ----

const SQRTHF: f32 = 0.707_106_77;
const LOG_P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
const LOG_Q1: f32 = -2.121_944_4e-4;
const LOG_Q2: f32 = 0.693_359_4;

/// `log256_ps` for one lane, u1 in (0, 1].
fn log_avx2(u1: f32) -> f32 {
    let xb = u1.to_bits();
    let e_i = (xb >> 23) as i32 - 127;
    let m = f32::from_bits((xb & !0x7F80_0000) | 0.5f32.to_bits());
    let mut e = e_i as f32 + 1.0;
    let t = if m < SQRTHF {
        e -= 1.0;
        (m - 1.0) + m
    } else {
        m - 1.0
    };
    let z = t * t;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(t, p);
    }
    let a = e * LOG_Q1;
    y *= t;
    y = y.mul_add(z, a);
    y = (-z).mul_add(0.5, y);
    let s = t + y;
    e.mul_add(LOG_Q2, s)
}

const FOPI: f32 = 1.273_239_5;
const DP1: f32 = -0.785_156_25;
const DP2: f32 = -2.418_756_5e-4;
const DP3: f32 = -3.774_895e-8;
const SIN_P: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
const COS_P: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

/// `sincos256_ps` for one lane, theta >= 0. Returns (sin, cos).
fn sincos_avx2(theta: f32) -> (f32, f32) {
    let y = theta * FOPI;
    let mut j = y as i32;
    j = (j + 1) & !1;
    let yf = j as f32;
    let flip_sin = (j & 4) != 0;
    let flip_cos = ((j - 2) & 4) == 0;
    let sel = (j & 2) == 0;
    let mut x = yf.mul_add(DP1, theta);
    x = yf.mul_add(DP2, x);
    x = yf.mul_add(DP3, x);
    let z = x * x;
    let mut c = COS_P[0];
    c = c.mul_add(z, COS_P[1]);
    c = c.mul_add(z, COS_P[2]);
    c *= z;
    c = c.mul_add(z, -(0.5 * z));
    c += 1.0;
    let mut s = SIN_P[0];
    s = s.mul_add(z, SIN_P[1]);
    s = s.mul_add(z, SIN_P[2]);
    s *= z;
    s = s.mul_add(x, x);
    let (mut sv, mut cv) = if sel { (s, c) } else { (c, s) };
    if flip_sin {
        sv = -sv;
    }
    if flip_cos {
        cv = -cv;
    }
    (sv, cv)
}

const TWO_PI_F32: f32 = std::f32::consts::TAU;

/// Box-Muller over one block of 16 uniforms: elements j and j+8 are a pair.
fn normal_fill_16_avx2(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let r = (-2.0 * log_avx2(u1)).sqrt();
        let theta = TWO_PI_F32 * u2;
        let (s, c) = sincos_avx2(theta);
        d[j] = r * c;
        d[j + 8] = r * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &[f32]) -> Vec<String> {
        v.iter().map(|x| format!("{:08x}", x.to_bits())).collect()
    }

    #[test]
    fn mt_stream_matches_std_mt19937() {
        let mut g = TorchGenerator::new(0);
        let v: Vec<u32> = (0..5).map(|_| g.next_u32()).collect();
        assert_eq!(
            v,
            [2357136044, 2546248239, 3071714933, 3626093760, 2588848963]
        );
        let mut g = TorchGenerator::new(5489);
        let v: Vec<u32> = (0..3).map(|_| g.next_u32()).collect();
        assert_eq!(v, [3499211612, 581869302, 3890346734]);
        // Only the low 32 bits of the seed matter.
        let mut a = TorchGenerator::new(1 << 32);
        let mut b = TorchGenerator::new(0);
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn uniforms() {
        let mut g = TorchGenerator::new(0);
        let u: Vec<f64> = (0..3).map(|_| g.uniform_f32() as f64).collect();
        assert_eq!(
            u,
            [0.49625658988952637, 0.7682217955589294, 0.08847743272781372]
        );
    }

    #[test]
    fn spec_vectors() {
        let r16 = torch_randn(0, &[16]);
        let want16 = "bf901b85 bf93808a be804bd6 bede255d 3f594515 3f312783 bea1cc6d c0075fc1 3ea50138 bfa1b4f4 3eb330ff 3e9dc3bb 3df56f77 3f9e6b93 3f8ef28e be7d367c";
        assert_eq!(hex(&r16).join(" "), want16);
        assert_eq!(torch_randn(0, &[1, 1, 4, 4]), r16);

        let r27 = torch_randn(0, &[27]);
        assert_eq!(&hex(&r27)[..11], &hex(&r16)[..11]);
        let want_tail = "3e8837a1 3e2a7345 3f5fd77d be12eacf bde4936f bf1d13c8 3d016764 befc4028 3d5c1b3a 3f1e38f6 bed35ad0 bf575006 c0143a08 bdd187b9 3f4add9c be944f53";
        assert_eq!(hex(&r27)[11..].join(" "), want_tail);

        let r3 = torch_randn(0, &[3]);
        assert_eq!(hex(&r3).join(" "), "3fc53f5c be963c50 c00b7149");
        let r15 = torch_randn(0, &[15]);
        let want15 = "3fc53f5c be963c50 c00b7149 3f1184b6 bf8ad1a1 bfb3052d 3ece837a 3f5688e5 bf382144 bece830b bf18bd18 3e3a67c6 bf5b4f07 3f8ce099 bf891cab";
        assert_eq!(hex(&r15).join(" "), want15);

        let l = torch_randn(42, &[1, 4, 64, 64]);
        let parse = |s: &str| -> Vec<f32> { s.split(' ').map(|v| v.parse().unwrap()).collect() };
        assert_eq!(
            l[..8].to_vec(),
            parse("1.92691529 1.48728406 0.900717199 -2.10552096 0.678418458 -1.23454487 -0.0430674776 -1.60466695")
        );
        assert_eq!(
            l[l.len() - 4..].to_vec(),
            parse("-0.811143816 -0.635750473 0.972809732 -0.293406099")
        );
        let sum: f64 = l.iter().map(|&v| v as f64).sum();
        assert_eq!(sum, 149.76480043913034);
        let l2 = torch_randn(42, &[1, 4, 128, 128]);
        let sum2: f64 = l2.iter().map(|&v| v as f64).sum();
        assert_eq!(sum2, -3.0992287055396446);
    }

    #[test]
    fn cached_normal_survives_between_small_calls() {
        let mut g = TorchGenerator::new(0);
        let a = g.randn(&[1]);
        let b = g.randn(&[2]);
        let all = torch_randn(0, &[3]);
        assert_eq!([a[0], b[0], b[1]], [all[0], all[1], all[2]]);
    }
}
