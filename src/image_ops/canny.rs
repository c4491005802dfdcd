//! The Canny edge detector of the `Canny` node (`comfy_extras/nodes_canny.py` calls
//! `kornia.filters.canny(image, low, high)`), with kornia 0.9's defaults and steps, in f32:
//!
//! 1. grey = 0.299·R + 0.587·G + 0.114·B (one channel is used as is);
//! 2. Gaussian blur, 5×5, σ = 1, separable (horizontal then vertical), reflect padding;
//! 3. unnormalised Sobel gradients (replicate padding); magnitude `sqrt(gx² + gy² + 1e-6)`
//!    (zero padding around the magnitude map, so border neighbours read `sqrt(1e-6)`);
//!
//! Steps 1–3 use torch's CPU rounding (checked bit for bit against kornia): the grey sum and
//! the blur taps are fused multiply-adds in tap order, the Sobel taps plain multiply-adds in
//! row-major order.
//! 4. non-maximum suppression along the gradient direction rounded to 45° (`round` half to
//!    even of `atan2(gy, gx)·4/π`): the pixel must beat both neighbours, ties allowed toward
//!    direction indices 0 and 2, and must exceed `sqrt(1e-6)`;
//! 5. weak (> low) and strong (> high) pixels; hysteresis: a weak pixel next to a strong one
//!    (8-neighbourhood) becomes strong, repeated until nothing changes. Edges are 0 / 1.

use super::Planes;

/// kornia's `(dy, dx)` window offsets: direction index k looks at `offsets[k]`.
const OFFSETS: [(isize, isize); 8] = [
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
];

const EPS: f32 = 1e-6;

fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

fn replicate(i: isize, n: usize) -> usize {
    i.clamp(0, n as isize - 1) as usize
}

/// kornia's `get_gaussian_kernel1d(5, 1.0)` (`exp(-x²/2σ²)` normalised, computed in f32),
/// as the f32 bits kornia 0.9 produces.
const GAUSSIAN_5: [u32; 5] = [0x3d5f2f88, 0x3e7a0fec, 0x3ece2434, 0x3e7a0fec, 0x3d5f2f88];

/// The Sobel kernels (`spatial_gradient(normalized=False)`), row-major.
const SOBEL_X: [f32; 9] = [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0];
const SOBEL_Y: [f32; 9] = [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0];

/// The edge map and the suppressed magnitude of one grey plane.
pub struct CannyOutput {
    /// [h·w] magnitude after non-maximum suppression.
    pub magnitude: Vec<f32>,
    /// [h·w] 0 / 1.
    pub edges: Vec<f32>,
}

fn canny_plane(grey: &[f32], h: usize, w: usize, low: f32, high: f32) -> CannyOutput {
    let k = GAUSSIAN_5.map(f32::from_bits);
    let at = |y: usize, x: usize| y * w + x;
    // Horizontal pass, then vertical (kornia's separable filter2d), reflect borders.
    let mut tmp = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0f32;
            for (j, kv) in k.iter().enumerate() {
                s = kv.mul_add(grey[at(y, reflect(x as isize + j as isize - 2, w))], s);
            }
            tmp[at(y, x)] = s;
        }
    }
    let mut blur = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0f32;
            for (j, kv) in k.iter().enumerate() {
                s = kv.mul_add(tmp[at(reflect(y as isize + j as isize - 2, h), x)], s);
            }
            blur[at(y, x)] = s;
        }
    }
    // Sobel, replicate borders.
    let b = |y: isize, x: isize| blur[at(replicate(y, h), replicate(x, w))];
    let mut gx = vec![0f32; h * w];
    let mut gy = vec![0f32; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            // torch's conv: taps in row-major order, zero taps included.
            let (mut gxv, mut gyv) = (0f32, 0f32);
            for (t, (kx, ky)) in SOBEL_X.iter().zip(&SOBEL_Y).enumerate() {
                let v = b(y + (t / 3) as isize - 1, x + (t % 3) as isize - 1);
                gxv += kx * v;
                gyv += ky * v;
            }
            gx[at(y as usize, x as usize)] = gxv;
            gy[at(y as usize, x as usize)] = gyv;
        }
    }
    let mag: Vec<f32> = gx
        .iter()
        .zip(&gy)
        .map(|(a, c)| (a * a + c * c + EPS).sqrt())
        .collect();
    let border = EPS.sqrt();
    let m_at = |y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            border
        } else {
            mag[at(y as usize, x as usize)]
        }
    };
    let mut magnitude = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let i = at(y, x);
            let mut angle = gy[i].atan2(gx[i]);
            if angle.is_nan() {
                angle = 0.0;
            }
            let a45 = (angle * (4.0 / std::f32::consts::PI)).round_ties_even();
            let pos = a45.rem_euclid(8.0) as usize;
            let neg = (a45 + 4.0).rem_euclid(8.0) as usize;
            let m = mag[i];
            let beats = |dir: usize| {
                let (dy, dx) = OFFSETS[dir];
                let nb = m_at(y as isize + dy, x as isize + dx);
                m > nb || ((dir == 0 || dir == 2) && m == nb)
            };
            if beats(pos) && beats(neg) && m > border {
                magnitude[i] = m;
            }
        }
    }
    // 0 / 0.5 (weak) / 1 (strong), then hysteresis.
    let mut edges: Vec<f32> = magnitude
        .iter()
        .map(|&m| {
            let lo = (m > low) as u8 as f32;
            let hi = (m > high) as u8 as f32;
            (lo + hi) * 0.5
        })
        .collect();
    loop {
        let mut next = edges.clone();
        let mut changed = false;
        for y in 0..h {
            for x in 0..w {
                let i = at(y, x);
                if edges[i] != 0.5 {
                    continue;
                }
                let strong_nb = OFFSETS.iter().any(|&(dy, dx)| {
                    let (yy, xx) = (y as isize + dy, x as isize + dx);
                    yy >= 0
                        && xx >= 0
                        && yy < h as isize
                        && xx < w as isize
                        && edges[at(yy as usize, xx as usize)] == 1.0
                });
                if strong_nb {
                    next[i] = 1.0;
                    changed = true;
                }
            }
        }
        edges = next;
        if !changed {
            break;
        }
    }
    for e in &mut edges {
        *e = if *e == 1.0 { 1.0 } else { 0.0 };
    }
    CannyOutput { magnitude, edges }
}

/// Canny on every image of `img` (1 or 3 channels): per image, the magnitude and edge maps
/// as one-channel planes.
pub fn canny(img: &Planes, low: f32, high: f32) -> Result<(Planes, Planes), String> {
    if img.c != 1 && img.c != 3 {
        return Err(format!(
            "canny expects 1 or 3 channels, the image has {}",
            img.c
        ));
    }
    if !(low > 0.0 && low <= high) {
        return Err(format!(
            "the thresholds must satisfy 0 < low_threshold <= high_threshold; got {low} and {high}"
        ));
    }
    let (h, w) = (img.h, img.w);
    let mut mags = Vec::with_capacity(img.n * h * w);
    let mut edges = Vec::with_capacity(img.n * h * w);
    for b in 0..img.n {
        let grey: Vec<f32> = if img.c == 1 {
            img.plane(b, 0).to_vec()
        } else {
            let (r, g, bl) = (img.plane(b, 0), img.plane(b, 1), img.plane(b, 2));
            (0..h * w)
                // `r·w_r`, then two `addcmul`s, which torch's CPU kernel computes as FMAs.
                .map(|i| bl[i].mul_add(0.114f32, g[i].mul_add(0.587f32, r[i] * 0.299f32)))
                .collect()
        };
        let out = canny_plane(&grey, h, w, low, high);
        mags.extend(out.magnitude);
        edges.extend(out.edges);
    }
    Ok((
        Planes::new(img.n, 1, h, w, mags),
        Planes::new(img.n, 1, h, w, edges),
    ))
}
