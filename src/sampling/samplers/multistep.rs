//! Linear multistep samplers: lms (§3.6), ipndm / ipndm_v (§3.17) and deis (§3.18).

use super::k_diffusion::to_d;
use super::{Ctx, SamplingError};

type R = Result<Vec<f32>, SamplingError>;

// QUADPACK qk21: Kronrod abscissae (descending, last = centre) and weights, Gauss weights.
const XGK: [f64; 11] = [
    0.995_657_163_025_808_1,
    0.973_906_528_517_171_7,
    0.930_157_491_355_708_2,
    0.865_063_366_688_984_5,
    0.780_817_726_586_416_9,
    0.679_409_568_299_024_4,
    0.562_757_134_668_604_7,
    0.433_395_394_129_247_2,
    0.294_392_862_701_460_2,
    0.148_874_338_981_631_2,
    0.0,
];
const WGK: [f64; 11] = [
    0.011_694_638_867_371_874,
    0.032_558_162_307_964_73,
    0.054_755_896_574_352,
    0.075_039_674_810_919_95,
    0.093_125_454_583_697_6,
    0.109_387_158_802_297_64,
    0.123_491_976_262_065_85,
    0.134_709_217_311_473_33,
    0.142_775_938_577_060_08,
    0.147_739_104_901_338_5,
    0.149_445_554_002_916_9,
];

/// QUADPACK's 21-point Gauss–Kronrod estimate of ∫_a^b f (what `scipy.integrate.quad`
/// returns for these low-degree polynomial integrands).
pub(crate) fn qk21(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let centr = 0.5 * (a + b);
    let hlgth = 0.5 * (b - a);
    let mut resk = WGK[10] * f(centr);
    for j in (1..10).step_by(2) {
        let absc = hlgth * XGK[j];
        resk += WGK[j] * (f(centr - absc) + f(centr + absc));
    }
    for j in (0..10).step_by(2) {
        let absc = hlgth * XGK[j];
        resk += WGK[j] * (f(centr - absc) + f(centr + absc));
    }
    resk * hlgth
}

/// `linear_multistep_coeff(order, t, i, j)`: the Lagrange product is evaluated in float32
/// (NumPy ≥ 2 semantics with float32 sigmas), the quadrature in f64.
fn lms_coeff(order: usize, t: &[f32], i: usize, j: usize) -> f64 {
    let f = |tau: f64| -> f64 {
        let tau = tau as f32;
        let mut prod = 1.0f32;
        for k in 0..order {
            if k == j {
                continue;
            }
            prod *= (tau - t[i - k]) / (t[i - j] - t[i - k]);
        }
        prod as f64
    };
    qk21(f, t[i] as f64, t[i + 1] as f64)
}

/// `sample_lms` (order 4 unless SamplerLMS sets it).
pub(super) fn lms(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32], order: usize) -> R {
    let order = order.max(1);
    let mut ds: Vec<Vec<f32>> = Vec::new();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let den = ctx.model(&x, s[i])?;
        ds.push(to_d(&x, s[i], &den));
        if ds.len() > order {
            ds.remove(0);
        }
        if s[i + 1] == 0.0 {
            x = den;
        } else {
            let cur = (i + 1).min(order);
            let coeffs: Vec<f32> = (0..cur).map(|j| lms_coeff(cur, s, i, j) as f32).collect();
            let mut acc: Option<Vec<f32>> = None;
            for (c, d) in coeffs.iter().zip(ds.iter().rev()) {
                let term: Vec<f32> = d.iter().map(|v| c * v).collect();
                acc = Some(match acc {
                    None => term,
                    Some(a) => a.iter().zip(&term).map(|(p, q)| p + q).collect(),
                });
            }
            let acc = acc.expect("at least one coefficient");
            x = x.iter().zip(&acc).map(|(p, q)| p + q).collect();
        }
        ctx.end(i);
    }
    Ok(x)
}

fn push_buffer(buf: &mut Vec<Vec<f32>>, d: Vec<f32>, max_order: usize) {
    if buf.len() == max_order - 1 {
        buf.remove(0);
    }
    buf.push(d);
}

pub(super) fn ipndm(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    const MAX: usize = 4;
    let mut buf: Vec<Vec<f32>> = Vec::new();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (tc, tn) = (s[i], s[i + 1]);
        let den = ctx.model(&x, tc)?;
        let d = to_d(&x, tc, &den);
        let order = (i + 1).min(MAX);
        let dt = tn - tc;
        let n = buf.len();
        x = if tn == 0.0 {
            den
        } else {
            (0..x.len())
                .map(|k| {
                    let g = match order {
                        1 => return x[k] + dt * d[k],
                        2 => (dt * (3.0 * d[k] - buf[n - 1][k])) / 2.0,
                        3 => {
                            (dt * ((23.0 * d[k] - 16.0 * buf[n - 1][k]) + 5.0 * buf[n - 2][k]))
                                / 12.0
                        }
                        _ => {
                            (dt * (((55.0 * d[k] - 59.0 * buf[n - 1][k]) + 37.0 * buf[n - 2][k])
                                - 9.0 * buf[n - 3][k]))
                                / 24.0
                        }
                    };
                    x[k] + g
                })
                .collect()
        };
        push_buffer(&mut buf, d, MAX);
        ctx.end(i);
    }
    Ok(x)
}

pub(super) fn ipndm_v(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    const MAX: usize = 4;
    let mut buf: Vec<Vec<f32>> = Vec::new();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (tc, tn) = (s[i], s[i + 1]);
        let den = ctx.model(&x, tc)?;
        let d = to_d(&x, tc, &den);
        let order = (i + 1).min(MAX);
        let dt = tn - tc;
        let n = buf.len();
        if tn == 0.0 {
            x = den;
        } else if order == 1 {
            x = x.iter().zip(&d).map(|(a, b)| a + dt * b).collect();
        } else {
            let hn = tn - tc;
            let hn1 = tc - s[i - 1];
            let coeffs: Vec<f32> = match order {
                2 => vec![(2.0 + hn / hn1) / 2.0, -(hn / hn1) / 2.0],
                3 => {
                    let hn2 = s[i - 1] - s[i - 2];
                    let temp = (1.0
                        - hn / (3.0 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2)))
                        / 2.0;
                    vec![
                        (2.0 + hn / hn1) / 2.0 + temp,
                        -(hn / hn1) / 2.0 - (1.0 + hn1 / hn2) * temp,
                        temp * hn1 / hn2,
                    ]
                }
                _ => {
                    let hn2 = s[i - 1] - s[i - 2];
                    let hn3 = s[i - 2] - s[i - 3];
                    let temp1 = (1.0
                        - hn / (3.0 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2)))
                        / 2.0;
                    let temp2 = ((1.0 - hn / (3.0 * (hn + hn1))) / 2.0
                        + (1.0 - hn / (2.0 * (hn + hn1))) * hn / (6.0 * (hn + hn1 + hn2)))
                        * (hn * (hn + hn1) * (hn + hn1 + hn2))
                        / (hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3));
                    let q = hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3));
                    vec![
                        (2.0 + hn / hn1) / 2.0 + temp1 + temp2,
                        -(hn / hn1) / 2.0
                            - (1.0 + hn1 / hn2) * temp1
                            - (1.0 + (hn1 / hn2) + q) * temp2,
                        temp1 * hn1 / hn2 + ((hn1 / hn2) + q * (1.0 + hn2 / hn3)) * temp2,
                        -temp2 * q * hn1 / hn2,
                    ]
                }
            };
            x = (0..x.len())
                .map(|k| {
                    let mut acc = coeffs[0] * d[k];
                    for (m, c) in coeffs.iter().enumerate().skip(1) {
                        acc += c * buf[n - m][k];
                    }
                    x[k] + dt * acc
                })
                .collect();
        }
        push_buffer(&mut buf, d, MAX);
        ctx.end(i);
    }
    Ok(x)
}

/// DEIS 'tab' coefficients (`get_deis_coeff_list`), float32 with an f64-accumulated sum
/// standing in for torch's 10000-term reduction.
fn deis_coeffs(sigmas: &[f32], max_order: usize) -> Vec<Vec<f32>> {
    const N: usize = 10_000;
    let eps_s = 1e-3f32;
    let (smin, smax) = (0.002f32, 80.0f32);
    let beta_d =
        2.0 * ((smin * smin + 1.0).ln() / eps_s - (smax * smax + 1.0).ln()) / (eps_s - 1.0);
    let beta_min = (smax * smax + 1.0).ln() - 0.5 * beta_d;
    let t: Vec<f32> = sigmas
        .iter()
        .map(|&s| {
            ((beta_min * beta_min + 2.0 * beta_d * (s * s + 1.0).ln()).sqrt() - beta_min) / beta_d
        })
        .collect();
    let (b0, b1) = (beta_min, beta_d + beta_min);
    let mut out = Vec::new();
    for i in 0..t.len() - 1 {
        let order = (i + 1).min(max_order);
        if order == 1 {
            out.push(Vec::new());
            continue;
        }
        let (tc, tn) = (t[i], t[i + 1]);
        let taus = super::super::model_sampling::linspace_f32(tc as f64, tn as f64, N);
        let dtau = (tn - tc) / N as f32;
        let prev: Vec<f32> = (0..order).map(|k| t[i - k]).collect();
        let integrand: Vec<f32> = taus
            .iter()
            .map(|&tau| {
                let alpha = (-0.5 * (tau * tau) * (b1 - b0) - tau * b0).exp();
                let dlog = -0.5 * (b1 - b0) * (2.0 * tau) - b0;
                -0.5 * dlog / (alpha * (1.0 - alpha)).sqrt()
            })
            .collect();
        let coeffs = (0..order)
            .map(|j| {
                let mut sum = 0.0f64;
                for (&tau, &g) in taus.iter().zip(&integrand) {
                    let mut poly = 1.0f32;
                    for (k, &pk) in prev.iter().enumerate() {
                        if k != j {
                            poly *= (tau - pk) / (prev[j] - pk);
                        }
                    }
                    sum += (g * poly) as f64;
                }
                (sum as f32) * dtau
            })
            .collect();
        out.push(coeffs);
    }
    out
}

pub(super) fn deis(ctx: &mut Ctx, mut x: Vec<f32>, s: &[f32]) -> R {
    const MAX: usize = 3;
    let coeffs = deis_coeffs(s, MAX);
    let mut buf: Vec<Vec<f32>> = Vec::new();
    for i in 0..s.len() - 1 {
        ctx.begin(i)?;
        let (tc, tn) = (s[i], s[i + 1]);
        let den = ctx.model(&x, tc)?;
        let d = to_d(&x, tc, &den);
        let mut order = (i + 1).min(MAX);
        if tn <= 0.0 {
            order = 1;
        }
        let n = buf.len();
        x = if order == 1 {
            let dt = tn - tc;
            x.iter().zip(&d).map(|(a, b)| a + dt * b).collect()
        } else {
            let c = &coeffs[i];
            (0..x.len())
                .map(|k| {
                    let mut acc = x[k] + c[0] * d[k];
                    for (m, cm) in c.iter().enumerate().skip(1) {
                        acc += cm * buf[n - m][k];
                    }
                    acc
                })
                .collect()
        };
        push_buffer(&mut buf, d, MAX);
        ctx.end(i);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qk21_is_exact_for_polynomials() {
        for k in 0..8 {
            let got = qk21(|x| x.powi(k), 0.3, 2.5);
            let want = (2.5f64.powi(k + 1) - 0.3f64.powi(k + 1)) / (k + 1) as f64;
            assert!(
                ((got - want) / want).abs() < 1e-14,
                "x^{k}: {got} vs {want}"
            );
        }
    }
}
