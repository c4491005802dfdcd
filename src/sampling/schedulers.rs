//! ComfyUI's schedulers (`comfy/samplers.py`, numerics.md §4) and KSampler's sigma
//! selection (denoise, start/end step, discard-penultimate rule).
//!
//! Every scheduler reads the model sampling only through its table, `sigma_min/max`,
//! `timestep()` and `sigma()`, as ComfyUI's do. For the flow kinds `timestep()` does not
//! invert `sigma()` (`σ·multiplier` against `shift(t/multiplier)`), so `normal` and
//! `sgm_uniform` apply the shift a second time: ComfyUI's behaviour, copied.

use std::str::FromStr;

use super::model_sampling::{linspace_f32, ModelSampling, SamplingKind};

/// The scheduler names, in ComfyUI's `SCHEDULER_NAMES` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    Simple,
    SgmUniform,
    Karras,
    Exponential,
    DdimUniform,
    Beta,
    Normal,
    LinearQuadratic,
    KlOptimal,
}

impl Scheduler {
    /// ComfyUI's combo order.
    pub const NAMES: [&'static str; 9] = [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    ];
    pub const ALL: [Scheduler; 9] = [
        Scheduler::Simple,
        Scheduler::SgmUniform,
        Scheduler::Karras,
        Scheduler::Exponential,
        Scheduler::DdimUniform,
        Scheduler::Beta,
        Scheduler::Normal,
        Scheduler::LinearQuadratic,
        Scheduler::KlOptimal,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|&s| s == self).expect("listed")]
    }
}

impl std::fmt::Display for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMES
            .iter()
            .position(|&n| n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| format!("unknown scheduler {s:?}"))
    }
}

/// `calculate_sigmas(model_sampling, scheduler, steps)`: the float32 schedule (usually
/// `steps + 1` sigmas ending in 0).
pub fn calculate_sigmas(ms: &ModelSampling, scheduler: Scheduler, steps: usize) -> Vec<f32> {
    let smin = ms.sigma_min() as f64;
    let smax = ms.sigma_max() as f64;
    match scheduler {
        Scheduler::Simple => simple(ms, steps),
        Scheduler::SgmUniform => normal(ms, steps, true),
        Scheduler::Karras => karras(steps, smin, smax, 7.0),
        Scheduler::Exponential => exponential(steps, smin, smax),
        Scheduler::DdimUniform => ddim_uniform(ms, steps),
        Scheduler::Beta => beta(ms, steps, 0.6, 0.6),
        Scheduler::Normal => normal(ms, steps, false),
        Scheduler::LinearQuadratic => linear_quadratic(ms, steps, 0.025, None),
        Scheduler::KlOptimal => kl_optimal(steps, smin, smax),
    }
}

fn is_close_abs(a: f64, b: f64, abs_tol: f64) -> bool {
    (a - b).abs() <= abs_tol
}

/// `simple_scheduler`.
pub fn simple(ms: &ModelSampling, steps: usize) -> Vec<f32> {
    let n = ms.sigmas.len();
    let ss = n as f64 / steps as f64;
    let mut out: Vec<f32> = (0..steps)
        .map(|x| ms.sigmas[n - 1 - (x as f64 * ss) as usize])
        .collect();
    out.push(0.0);
    out
}

/// `ddim_scheduler` (ddim_uniform).
pub fn ddim_uniform(ms: &ModelSampling, steps: usize) -> Vec<f32> {
    let n = ms.sigmas.len();
    let mut steps = steps;
    let mut x = 1;
    let mut sigs: Vec<f32> = if is_close_abs(ms.sigmas[x] as f64, 0.0, 1e-5) {
        steps += 1;
        Vec::new()
    } else {
        vec![0.0]
    };
    let ss = (n / steps.max(1)).max(1);
    while x < n {
        sigs.push(ms.sigmas[x]);
        x += ss;
    }
    sigs.reverse();
    sigs
}

/// `normal_scheduler` (and sgm_uniform with `sgm = true`).
pub fn normal(ms: &ModelSampling, steps: usize, sgm: bool) -> Vec<f32> {
    let start = ms.timestep(ms.sigma_max()) as f64;
    let end = ms.timestep(ms.sigma_min()) as f64;
    let mut append_zero = true;
    let ts: Vec<f32> = if sgm {
        let mut t = linspace_f32(start, end, steps + 1);
        t.pop();
        t
    } else {
        let mut steps = steps;
        if is_close_abs(ms.sigma(end as f32) as f64, 0.0, 1e-5) {
            steps += 1;
            append_zero = false;
        }
        linspace_f32(start, end, steps)
    };
    let mut sigs: Vec<f32> = ts.iter().map(|&t| ms.sigma(t)).collect();
    if append_zero {
        sigs.push(0.0);
    }
    sigs
}

/// `get_sigmas_karras` (ρ = 7 by default).
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let ramp = linspace_f32(0.0, 1.0, n);
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    let diff = (min_inv - max_inv) as f32;
    let (max_inv, rho) = (max_inv as f32, rho as f32);
    let mut out: Vec<f32> = ramp
        .iter()
        .map(|&r| (max_inv + r * diff).powf(rho))
        .collect();
    out.push(0.0);
    out
}

/// `get_sigmas_exponential`.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let mut out: Vec<f32> = linspace_f32(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f32::exp)
        .collect();
    out.push(0.0);
    out
}

/// `beta_scheduler` (α = β = 0.6 by default).
pub fn beta(ms: &ModelSampling, steps: usize, alpha: f64, beta: f64) -> Vec<f32> {
    let total = (ms.sigmas.len() - 1) as f64;
    let step = 1.0 / steps as f64;
    let mut sigs = Vec::new();
    let mut last: Option<f64> = None;
    for k in 0..steps {
        let p = 1.0 - k as f64 * step;
        let t = (beta_ppf(p, alpha, beta) * total).round_ties_even();
        if last != Some(t) {
            sigs.push(ms.sigmas[t as usize]);
        }
        last = Some(t);
    }
    sigs.push(0.0);
    sigs
}

/// `linear_quadratic_schedule` (threshold 0.025, linear_steps = steps / 2).
pub fn linear_quadratic(
    ms: &ModelSampling,
    steps: usize,
    threshold: f64,
    linear_steps: Option<usize>,
) -> Vec<f32> {
    let sched: Vec<f64> = if steps == 1 {
        vec![1.0, 0.0]
    } else {
        let l = linear_steps.unwrap_or(steps / 2);
        let lf = l as f64;
        let mut v: Vec<f64> = (0..l).map(|i| i as f64 * threshold / lf).collect();
        let diff = lf - threshold * steps as f64;
        let q = (steps - l) as f64;
        let qc = diff / (lf * q * q);
        let lc = threshold / lf - 2.0 * diff / (q * q);
        let c = qc * (lf * lf);
        v.extend((l..steps).map(|i| {
            let i = i as f64;
            qc * (i * i) + lc * i + c
        }));
        v.push(1.0);
        v.into_iter().map(|x| 1.0 - x).collect()
    };
    let smax = ms.sigma_max();
    sched.into_iter().map(|x| x as f32 * smax).collect()
}

/// `kl_optimal_scheduler`.
pub fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f32> {
    let amin = sigma_min.atan() as f32;
    let amax = sigma_max.atan() as f32;
    let denom = (n as f32 - 1.0).max(f32::MIN_POSITIVE);
    let mut out: Vec<f32> = (0..n)
        .map(|i| {
            let w = i as f32 / denom;
            (w * amin + (1.0 - w) * amax).tan()
        })
        .collect();
    out.push(0.0);
    out
}

// ---- inverse regularized incomplete beta (scipy.stats.beta.ppf) ----

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularized incomplete beta I_x(a, b).
pub fn beta_inc(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let lbt = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let bt = lbt.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        bt * beta_cf(a, b, x) / a
    } else {
        1.0 - bt * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Quantile of the Beta(a, b) distribution (bisection on [`beta_inc`]).
pub fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // The median of a symmetric Beta is 1/2, where `rint(ppf·odd total)` is a tie. scipy
    // (boost's ibeta_inv) returns the next double above, 0.5000000000000001 (measured for
    // a = b = 0.6), so 24.5 rounds to 25 and 499.5 to 500; copy that, not the bisection.
    if a == b && p == 0.5 {
        return f64::from_bits(0.5f64.to_bits() + 1);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_inc(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Why [`sd_turbo`] cannot give a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdTurboError {
    /// ComfyUI's SDTurboScheduler fails for ModelSamplingCosmosRFlow (its `sigma()` only
    /// takes a single timestep).
    #[error("SDTurboScheduler cannot schedule a {0} model sampling (ComfyUI fails on it too)")]
    Unsupported(String),
}

/// `SDTurboScheduler.get_sigmas`: timesteps 999, 899, … 99 from
/// `10 − int(10·denoise)`, `steps` of them, mapped through `sigma()`, then 0.
pub fn sd_turbo(ms: &ModelSampling, steps: usize, denoise: f64) -> Result<Vec<f32>, SdTurboError> {
    if matches!(ms.kind, SamplingKind::CosmosRFlow { .. }) {
        return Err(SdTurboError::Unsupported(ms.describe()));
    }
    let start = 10 - (10.0 * denoise) as i64;
    let timesteps: Vec<i64> = (1..=10).rev().map(|k| k * 100 - 1).collect();
    // Python slicing [start:start + steps] clamps to the list.
    let lo = start.clamp(0, 10) as usize;
    let hi = (start + steps as i64).clamp(0, 10) as usize;
    let mut out: Vec<f32> = timesteps[lo..hi.max(lo)]
        .iter()
        .map(|&t| ms.sigma(t as f32))
        .collect();
    out.push(0.0);
    Ok(out)
}

// ---- KSampler step handling (§4.2) ----

/// Samplers that get a `steps + 1` schedule with the penultimate sigma dropped.
pub const DISCARD_PENULTIMATE_SIGMA_SAMPLERS: [&str; 4] =
    ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"];

/// `KSampler.calculate_sigmas`: the schedule for `steps`, with the discard rule for
/// dpm_2 / dpm_2_ancestral / uni_pc / uni_pc_bh2.
pub fn ksampler_schedule(
    ms: &ModelSampling,
    scheduler: Scheduler,
    sampler_name: &str,
    steps: usize,
) -> Vec<f32> {
    if DISCARD_PENULTIMATE_SIGMA_SAMPLERS.contains(&sampler_name) {
        let mut s = calculate_sigmas(ms, scheduler, steps + 1);
        let n = s.len();
        if n >= 2 {
            s.remove(n - 2);
        }
        s
    } else {
        calculate_sigmas(ms, scheduler, steps)
    }
}

/// `KSampler.set_steps`: the sigmas for `steps` at `denoise` (None or > 0.9999 is full;
/// ≤ 0 gives an empty list; otherwise the last `steps + 1` of a `int(steps/denoise)` schedule).
pub fn ksampler_sigmas(
    ms: &ModelSampling,
    scheduler: Scheduler,
    sampler_name: &str,
    steps: usize,
    denoise: Option<f64>,
) -> Vec<f32> {
    match denoise {
        None => ksampler_schedule(ms, scheduler, sampler_name, steps),
        Some(d) if d > 0.9999 => ksampler_schedule(ms, scheduler, sampler_name, steps),
        Some(d) if d <= 0.0 => Vec::new(),
        Some(d) => {
            let new_steps = (steps as f64 / d) as usize;
            let s = ksampler_schedule(ms, scheduler, sampler_name, new_steps);
            let keep = (steps + 1).min(s.len());
            s[s.len() - keep..].to_vec()
        }
    }
}

/// What `KSampler.sample` does with `start_step` / `last_step` (KSamplerAdvanced).
#[derive(Debug, Clone, PartialEq)]
pub enum StepSelection {
    /// Sample over these sigmas.
    Sigmas(Vec<f32>),
    /// `start_step` is past the end: return the input latent unchanged (zeros if none).
    ReturnLatent,
}

/// Apply `last_step` (then `force_full_denoise` sets the last sigma to 0) and
/// `start_step`, in ComfyUI's order.
pub fn select_steps(
    sigmas: &[f32],
    start_step: Option<usize>,
    last_step: Option<usize>,
    force_full_denoise: bool,
) -> StepSelection {
    let mut s = sigmas.to_vec();
    if let Some(last) = last_step {
        if last + 1 < s.len() {
            s.truncate(last + 1);
            if force_full_denoise {
                if let Some(v) = s.last_mut() {
                    *v = 0.0;
                }
            }
        }
    }
    if let Some(start) = start_step {
        if start + 1 < s.len() {
            s.drain(..start);
        } else {
            return StepSelection::ReturnLatent;
        }
    }
    StepSelection::Sigmas(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::model_sampling::Prediction;

    fn parse(s: &str) -> Vec<f64> {
        s.split(", ").map(|v| v.parse().unwrap()).collect()
    }

    fn check(name: &str, got: &[f32], want: &str) -> bool {
        let want = parse(want);
        assert_eq!(got.len(), want.len(), "{name}: length");
        let mut exact = true;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let rel = if w == 0.0 {
                (g as f64).abs()
            } else {
                ((g as f64 - w) / w).abs()
            };
            assert!(rel <= 1e-6, "{name}[{i}]: got {g} want {w} rel {rel}");
            exact &= g == w as f32;
        }
        exact
    }

    // numerics.md §4.4 (SD1.5 table, 10 steps, denoise 1).
    const GOLDEN: [(&str, &str); 9] = [
        ("simple", "14.6146412, 8.30280304, 5.08776331, 3.32108307, 2.27646303, 1.61288619, 1.16057837, 0.829859555, 0.569284916, 0.341673821, 0"),
        ("sgm_uniform", "14.6146402, 8.30717087, 5.09240818, 3.32506895, 2.27973056, 1.61558032, 1.16286457, 0.831883729, 0.571188867, 0.34370482, 0"),
        ("karras", "14.6146431, 9.10292912, 5.47839212, 3.16860485, 1.74941802, 0.914072692, 0.446918368, 0.201398358, 0.0819102973, 0.0291671772, 0"),
        ("exponential", "14.6146402, 7.32486916, 3.67123032, 1.84002364, 0.922221303, 0.462218285, 0.231664181, 0.116110273, 0.0581945591, 0.0291671604, 0"),
        ("ddim_uniform", "8.39068508, 5.13443089, 3.34776354, 2.29285383, 1.62369204, 1.16821599, 0.835652828, 0.574050248, 0.346186697, 0.0413144119, 0"),
        ("beta", "14.6146412, 11.5427704, 7.37184429, 4.37280178, 2.61523581, 1.61827886, 1.02732933, 0.654885352, 0.39550969, 0.199058622, 0"),
        ("normal", "14.6146402, 7.83988285, 4.60917425, 2.91830707, 1.95016146, 1.34492779, 0.932357967, 0.624976933, 0.368657738, 0.0291671604, 0"),
        ("linear_quadratic", "14.6146412, 14.5415678, 14.4684954, 14.395422, 14.3223486, 14.2492752, 13.6208448, 11.8817034, 9.03184795, 5.07128048, 0"),
        ("kl_optimal", "14.6146326, 4.23235035, 2.39371896, 1.59706593, 1.1329968, 0.815244496, 0.572914183, 0.372484177, 0.195288345, 0.0291671585, 0"),
    ];

    #[test]
    fn golden_sigma_lists() {
        let ms = ModelSampling::sd15(Prediction::Eps);
        let mut not_exact = Vec::new();
        for (name, want) in GOLDEN {
            let s: Scheduler = name.parse().unwrap();
            let got = calculate_sigmas(&ms, s, 10);
            if !check(name, &got, want) {
                not_exact.push(name);
            }
        }
        eprintln!("schedulers not bit-exact (within 1e-6): {not_exact:?}");
    }

    #[test]
    fn discard_penultimate_and_denoise() {
        let ms = ModelSampling::sd15(Prediction::Eps);
        let got = ksampler_sigmas(&ms, Scheduler::Normal, "dpm_2", 10, None);
        check("normal/dpm_2", &got, GOLDEN[1].1);
        let got = ksampler_sigmas(&ms, Scheduler::Karras, "uni_pc", 10, Some(1.0));
        check(
            "karras/uni_pc",
            &got,
            "14.6146431, 9.5582628, 6.0821514, 3.7512541, 2.2321544, 1.2741008, 0.6925706, 0.3551825, 0.1697566, 0.0743629, 0",
        );
        let got = ksampler_sigmas(&ms, Scheduler::Karras, "euler", 10, Some(0.5));
        assert_eq!(got.len(), 11);
        let full = calculate_sigmas(&ms, Scheduler::Karras, 20);
        assert_eq!(got, full[10..]);
        assert_eq!(got[0], "1.0907861".parse::<f32>().unwrap());
        assert_eq!(got[9], "0.0291671772".parse::<f32>().unwrap());
        assert!(ksampler_sigmas(&ms, Scheduler::Karras, "euler", 10, Some(0.0)).is_empty());
    }

    #[test]
    fn start_end_steps() {
        let s: Vec<f32> = (0..=10).rev().map(|v| v as f32).collect();
        assert_eq!(
            select_steps(&s, Some(3), None, false),
            StepSelection::Sigmas(s[3..].to_vec())
        );
        let StepSelection::Sigmas(e) = select_steps(&s, None, Some(4), true) else {
            panic!()
        };
        assert_eq!(e, vec![10.0, 9.0, 8.0, 7.0, 0.0]);
        let StepSelection::Sigmas(e) = select_steps(&s, Some(2), Some(4), false) else {
            panic!()
        };
        assert_eq!(e, vec![8.0, 7.0, 6.0]);
        assert_eq!(
            select_steps(&s, Some(10), None, false),
            StepSelection::ReturnLatent
        );
        assert_eq!(
            select_steps(&s, None, Some(10), true),
            StepSelection::Sigmas(s.clone())
        );
    }

    #[test]
    fn names_round_trip() {
        for (i, n) in Scheduler::NAMES.iter().enumerate() {
            assert_eq!(n.parse::<Scheduler>().unwrap(), Scheduler::ALL[i]);
            assert_eq!(Scheduler::ALL[i].to_string(), *n);
        }
        assert!("bogus".parse::<Scheduler>().is_err());
    }
}

// ---- the scheduler nodes' model-free schedules (comfy/k_diffusion/sampling.py) ----

/// `get_sigmas_polyexponential` (ρ = 1 by default), float32 like torch.
pub fn polyexponential(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f32> {
    let (lmin, lmax) = (sigma_min.ln(), sigma_max.ln());
    let (diff, lmin, rho) = ((lmax - lmin) as f32, lmin as f32, rho as f32);
    let mut out: Vec<f32> = linspace_f32(1.0, 0.0, n)
        .into_iter()
        .map(|r| {
            let ramp = (r as f64).powf(rho as f64) as f32;
            ((ramp * diff + lmin) as f64).exp() as f32
        })
        .collect();
    out.push(0.0);
    out
}

/// `get_sigmas_vp`: `sqrt(expm1(β_d·t²/2 + β_min·t))` for t from 1 to ε_s, float32.
pub fn vp(n: usize, beta_d: f64, beta_min: f64, eps_s: f64) -> Vec<f32> {
    let (bd, bm) = (beta_d as f32, beta_min as f32);
    let mut out: Vec<f32> = linspace_f32(1.0, eps_s, n)
        .into_iter()
        .map(|t| {
            let v = bd * (t * t) / 2.0 + bm * t;
            ((v as f64).exp_m1() as f32 as f64).sqrt() as f32
        })
        .collect();
    out.push(0.0);
    out
}

/// `get_sigmas_laplace` (no trailing zero, as in ComfyUI), float32.
pub fn laplace(n: usize, sigma_min: f64, sigma_max: f64, mu: f64, beta: f64) -> Vec<f32> {
    let (mu, beta, lo, hi) = (mu as f32, beta as f32, sigma_min as f32, sigma_max as f32);
    linspace_f32(0.0, 1.0, n)
        .into_iter()
        .map(|x| {
            let c = 0.5 - x;
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            let l = ((1.0 - 2.0 * c.abs() + 1e-5f32) as f64).ln() as f32;
            let lmb = mu - (beta * sign) * l;
            let s = (lmb as f64).exp() as f32;
            // torch.clamp(min, max): max wins when min > max.
            s.max(lo).min(hi)
        })
        .collect()
}

/// AlignYourStepsScheduler's noise levels (NVIDIA's published tables, 10 steps).
pub fn ays_levels(model_type: &str) -> Option<&'static [f64]> {
    const SD1: [f64; 11] = [
        14.6146412293,
        6.4745760956,
        3.8636745985,
        2.6946151520,
        1.8841921177,
        1.3943805092,
        0.9642583904,
        0.6523686016,
        0.3977456272,
        0.1515232662,
        0.0291671582,
    ];
    const SDXL: [f64; 11] = [
        14.6146412293,
        6.3184485287,
        3.7681790315,
        2.1811480769,
        1.3405244945,
        0.8620721141,
        0.5550693289,
        0.3798540708,
        0.2332364134,
        0.1114188177,
        0.0291671582,
    ];
    const SVD: [f64; 11] = [
        700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002,
    ];
    match model_type {
        "SD1" => Some(&SD1),
        "SDXL" => Some(&SDXL),
        "SVD" => Some(&SVD),
        _ => None,
    }
}

/// OptimalStepsScheduler's noise levels (the OptimalSteps paper's tables).
pub fn optimal_steps_levels(model_type: &str) -> Option<&'static [f64]> {
    const FLUX: [f64; 11] = [
        0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001,
    ];
    const WAN: [f64; 21] = [
        1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96,
        0.946, 0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001,
    ];
    const CHROMA: [f64; 41] = [
        0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917,
        0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451,
        0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058,
        0.048, 0.001,
    ];
    match model_type {
        "FLUX" => Some(&FLUX),
        "Wan" => Some(&WAN),
        "Chroma" => Some(&CHROMA),
        _ => None,
    }
}

/// numpy's `linspace(0, 1, n)` (f64: `i·step + start`, last = stop).
fn np_linspace01(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = 1.0;
    v
}

/// numpy's `interp(x, xp, fp)` for increasing `xp`.
fn np_interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let last = xp.len() - 1;
    if x >= xp[last] {
        return fp[last];
    }
    if x <= xp[0] {
        return fp[0];
    }
    let j = xp.partition_point(|&v| v <= x) - 1;
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

/// `loglinear_interp` of the AYS / OptimalSteps nodes: log-linear resampling of a
/// decreasing table to `n` points (numpy, f64).
fn loglinear_interp(levels: &[f64], n: usize) -> Vec<f64> {
    let xs = np_linspace01(levels.len());
    let ys: Vec<f64> = levels.iter().rev().map(|v| v.ln()).collect();
    let mut out: Vec<f64> = np_linspace01(n)
        .into_iter()
        .map(|x| np_interp(x, &xs, &ys).exp())
        .collect();
    out.reverse();
    out
}

/// AlignYourStepsScheduler / OptimalStepsScheduler: the table resampled to `steps + 1`
/// levels, the last `round(steps·denoise) + 1` kept, the final one set to 0.
pub fn noise_level_table(levels: &[f64], steps: usize, denoise: f64) -> Vec<f32> {
    let mut total = steps;
    if denoise < 1.0 {
        if denoise <= 0.0 {
            return Vec::new();
        }
        total = (steps as f64 * denoise).round_ties_even() as usize;
    }
    let sig: Vec<f64> = if steps + 1 != levels.len() {
        loglinear_interp(levels, steps + 1)
    } else {
        levels.to_vec()
    };
    let keep = (total + 1).min(sig.len());
    let mut out: Vec<f32> = sig[sig.len() - keep..].iter().map(|&v| v as f32).collect();
    if let Some(l) = out.last_mut() {
        *l = 0.0;
    }
    out
}

// ---- sigma edits (SplitSigmas, SplitSigmasDenoise, ExtendIntermediateSigmas) ----

/// Python's `a[:k]` / `a[-k:]` for k ≥ 0.
fn head(s: &[f32], k: usize) -> Vec<f32> {
    s[..k.min(s.len())].to_vec()
}
fn tail(s: &[f32], k: usize) -> Vec<f32> {
    s[s.len() - k.min(s.len())..].to_vec()
}

/// SplitSigmas: (`sigmas[:step + 1]`, `sigmas[step:]`).
pub fn split_sigmas(s: &[f32], step: usize) -> (Vec<f32>, Vec<f32>) {
    (head(s, step + 1), s[step.min(s.len())..].to_vec())
}

/// SplitSigmasDenoise: with `t = round(steps·denoise)`, (`sigmas[:-t]`, `sigmas[-(t+1):]`);
/// `sigmas[:-0]` is empty, as in Python.
pub fn split_sigmas_denoise(s: &[f32], denoise: f64) -> (Vec<f32>, Vec<f32>) {
    let steps = s.len().saturating_sub(1);
    let total = (steps as f64 * denoise).round_ties_even() as usize;
    let high = if total == 0 {
        Vec::new()
    } else {
        head(s, s.len().saturating_sub(total))
    };
    (high, tail(s, total + 1))
}

/// ExtendIntermediateSigmas' spacing function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Linear,
    Cosine,
    Sine,
}

/// ExtendIntermediateSigmas: `steps − 1` extra sigmas between each pair whose first lies in
/// [end_at_sigma, start_at_sigma] (start < 0: no upper bound), float32 like torch.
pub fn extend_intermediate_sigmas(
    s: &[f32],
    steps: usize,
    start_at_sigma: f64,
    end_at_sigma: f64,
    spacing: Spacing,
) -> Vec<f32> {
    let start = if start_at_sigma < 0.0 {
        f32::INFINITY
    } else {
        start_at_sigma as f32
    };
    let end = end_at_sigma as f32;
    let lin = linspace_f32(0.0, 1.0, steps + 1);
    let inner = if lin.len() > 2 {
        &lin[1..lin.len() - 1]
    } else {
        &[][..]
    };
    let pi = std::f32::consts::PI;
    let spaced: Vec<f32> = inner
        .iter()
        .map(|&x| {
            let a = x * pi / 2.0;
            match spacing {
                Spacing::Linear => x,
                Spacing::Cosine => (a as f64).sin() as f32,
                Spacing::Sine => 1.0 - (a as f64).cos() as f32,
            }
        })
        .collect();
    let mut out = Vec::new();
    for w in s.windows(2) {
        let (cur, next) = (w[0], w[1]);
        out.push(cur);
        if end <= cur && cur <= start {
            out.extend(spaced.iter().map(|&k| k * (next - cur) + cur));
        }
    }
    if let Some(&l) = s.last() {
        out.push(l);
    }
    out
}
