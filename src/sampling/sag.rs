//! SelfAttentionGuidance's arithmetic (`comfy_extras/nodes_sag.py`) on flat float32 buffers:
//! the blur map built from the unconditional pass's middle-block self-attention
//! probabilities ([`create_blur_map`]) and its 9-tap Gaussian blur ([`gaussian_blur_2d`]).
//! The blur sums its 81 taps in another order than torch's convolution: float32 rounding,
//! not bit for bit.

/// `gaussian_blur_2d(img, 9, sigma)`: the normalised kernel of `exp(−½(x/σ)²)` at x = −4..4
/// (float32, as torch builds it), applied per channel over the reflect-padded `[N, C, H, W]`
/// image. H and W must exceed 4 (the padding).
pub fn gaussian_blur_2d(img: &[f32], dims: [usize; 4], sigma: f64) -> Vec<f32> {
    const K: usize = 9;
    const HALF: usize = K / 2;
    let s = sigma as f32;
    let pdf: Vec<f32> = (0..K)
        .map(|i| {
            let x = i as f32 - HALF as f32;
            let r = x / s;
            (-0.5f32 * (r * r)).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    let k1: Vec<f32> = pdf.iter().map(|p| p / sum).collect();
    let [n, c, h, w] = dims;
    let reflect = |i: isize, len: usize| -> usize {
        let l = len as isize;
        let mut i = i;
        if i < 0 {
            i = -i;
        }
        if i >= l {
            i = 2 * (l - 1) - i;
        }
        i as usize
    };
    let mut out = vec![0f32; img.len()];
    for p in 0..n * c {
        let src = &img[p * h * w..(p + 1) * h * w];
        let dst = &mut out[p * h * w..(p + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0f32;
                for (dy, ky) in k1.iter().enumerate() {
                    let sy = reflect(y as isize + dy as isize - HALF as isize, h);
                    for (dx, kx) in k1.iter().enumerate() {
                        let sx = reflect(x as isize + dx as isize - HALF as isize, w);
                        acc += (ky * kx) * src[sy * w + sx];
                    }
                }
                dst[y * w + x] = acc;
            }
        }
    }
    out
}

/// `create_blur_map(x0, attn, sigma, threshold)`: `attn` is the unconditional batch's
/// attention probabilities `[B·heads, T, T]` (T = tokens of the middle block); a token
/// receiving more than `threshold` of the head-averaged attention marks its region, which is
/// upsampled (nearest) to the latent and blurred there. Returns the degraded `x0`.
pub fn create_blur_map(
    x0: &[f32],
    dims: [usize; 4],
    attn: &[f32],
    attn_dims: [usize; 3],
    sigma: f64,
    threshold: f32,
) -> Result<Vec<f32>, String> {
    let [b, c, lh, lw] = dims;
    let [bh, hw1, hw2] = attn_dims;
    if b == 0 || bh % b != 0 {
        return Err(format!(
            "the attention map has {bh} rows of heads for a batch of {b}"
        ));
    }
    let heads = bh / b;
    // mean over heads, then sum over the queries: [b, hw2]
    let mut mask = vec![0f32; b * hw2];
    for bi in 0..b {
        for j in 0..hw2 {
            let mut total = 0f32;
            for i in 0..hw1 {
                let mut m = 0f32;
                for h in 0..heads {
                    m += attn[((bi * heads + h) * hw1 + i) * hw2 + j];
                }
                total += m / heads as f32;
            }
            mask[bi * hw2 + j] = if total > threshold { 1.0 } else { 0.0 };
        }
    }
    // The token grid: rows x near sqrt(lh/lw · total) dividing total.
    let total = hw2;
    let x_guess = ((lh as f64 / lw as f64) * total as f64)
        .sqrt()
        .round_ties_even() as i64;
    let mut rows = None;
    'search: for i in 0..((total as f64).sqrt() / 2.0).floor() as i64 {
        for j in [x_guess + i, (x_guess - i).max(1)] {
            if j > 0 && total as i64 % j == 0 {
                rows = Some(j as usize);
                break 'search;
            }
        }
    }
    let rows =
        rows.ok_or_else(|| format!("no token grid of {total} tokens fits a {lh}x{lw} latent"))?;
    let cols = total / rows;
    // F.interpolate(mask [b,1,rows,cols], (lh, lw)), mode "nearest".
    let (sy, sx) = (rows as f32 / lh as f32, cols as f32 / lw as f32);
    let blurred = gaussian_blur_2d(x0, dims, sigma);
    let mut out = vec![0f32; x0.len()];
    for bi in 0..b {
        for y in 0..lh {
            let my = ((y as f32 * sy).floor() as usize).min(rows - 1);
            for x in 0..lw {
                let mx = ((x as f32 * sx).floor() as usize).min(cols - 1);
                let m = mask[bi * hw2 + my * cols + mx];
                for ch in 0..c {
                    let i = ((bi * c + ch) * lh + y) * lw + x;
                    out[i] = blurred[i] * m + x0[i] * (1.0 - m);
                }
            }
        }
    }
    Ok(out)
}
