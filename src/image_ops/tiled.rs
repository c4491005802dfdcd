//! Tiled processing with feathered blending, as `comfy.utils.tiled_scale_multidim` does it for
//! two spatial dimensions (tiled VAE decode/encode; the same blend serves any per-tile
//! function that scales its input by a fixed factor).
//!
//! Per batch item: if the item fits one tile the function runs on it whole. Otherwise tiles
//! start every `tile − overlap` samples (the last clamped to `size − overlap`), each output
//! tile is weighted by a mask that ramps `(t+1)/feather` over `feather = round(overlap·scale)`
//! samples at every edge, and the sum of weighted tiles is divided by the sum of the masks.
//! The arithmetic follows torch's float32 in-place operations step by step (mask built by
//! successive multiplications, tiles added in ComfyUI's order), so the blend is bit-exact.

use super::planes::Planes;
use super::upscale::py_round;

/// Why tiling failed: the tile function's own error, or a geometry ComfyUI cannot tile.
#[derive(Debug)]
pub enum TiledError<E> {
    Function(E),
    Geometry(String),
}

/// `tiled_scale(samples, f, tile_x, tile_y, overlap, upscale_amount = scale, out_channels)`:
/// `tile` is (rows, cols) in input samples; `f` maps a `[1, C, h, w]` tile to a
/// `[1, out_channels, ≈h·scale, ≈w·scale]` one. Returns `[N, out_channels, round(H·scale),
/// round(W·scale)]`.
pub fn tiled_scale<E>(
    samples: &Planes,
    tile: (usize, usize),
    overlap: usize,
    scale: f64,
    out_channels: usize,
    mut f: impl FnMut(&Planes) -> Result<Planes, E>,
) -> Result<Planes, TiledError<E>> {
    let dims = [samples.h, samples.w];
    let tiles = [tile.0, tile.1];
    let scaled = |v: usize| py_round(v as f64 * scale).max(0) as usize;
    let (oh, ow) = (scaled(samples.h), scaled(samples.w));
    let mut output = Vec::with_capacity(samples.n * out_channels * oh * ow);
    let item_len = samples.c * samples.h * samples.w;
    for b in 0..samples.n {
        let item = Planes::new(
            1,
            samples.c,
            samples.h,
            samples.w,
            samples.data[b * item_len..(b + 1) * item_len].to_vec(),
        );
        if dims[0] <= tiles[0] && dims[1] <= tiles[1] {
            let ps = f(&item).map_err(TiledError::Function)?;
            if (ps.c, ps.h, ps.w) != (out_channels, oh, ow) {
                return Err(TiledError::Geometry(format!(
                    "the tile function gave {}x{}x{} for an expected {out_channels}x{oh}x{ow}",
                    ps.c, ps.h, ps.w
                )));
            }
            output.extend_from_slice(&ps.data);
            continue;
        }
        let mut positions: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for d in 0..2 {
            if dims[d] > tiles[d] {
                // range(0, size - overlap, tile - overlap)
                if tiles[d] <= overlap {
                    return Err(TiledError::Geometry(format!(
                        "a tile of {} needs an overlap below it, got {overlap}",
                        tiles[d]
                    )));
                }
                let step = tiles[d] - overlap;
                let end = dims[d].saturating_sub(overlap);
                positions[d] = (0..end).step_by(step).collect();
            } else {
                positions[d] = vec![0];
            }
        }
        let mut out = vec![0f32; out_channels * oh * ow];
        let mut out_div = vec![0f32; out_channels * oh * ow];
        for &py in &positions[0] {
            for &px in &positions[1] {
                let mut start = [0usize; 2];
                let mut len = [0usize; 2];
                let mut placed = [0usize; 2];
                for (d, it) in [py, px].into_iter().enumerate() {
                    let pos = it.min(dims[d] - overlap.min(dims[d]));
                    start[d] = pos;
                    len[d] = tiles[d].min(dims[d] - pos);
                    placed[d] = scaled(pos);
                }
                let s_in = item.window(start[0], start[1], len[0], len[1]);
                let ps = f(&s_in).map_err(TiledError::Function)?;
                if ps.c != out_channels || ps.n != 1 {
                    return Err(TiledError::Geometry(format!(
                        "the tile function gave {} channels, expected {out_channels}",
                        ps.c
                    )));
                }
                let (th, tw) = (ps.h, ps.w);
                if placed[0] + th > oh || placed[1] + tw > ow {
                    return Err(TiledError::Geometry(format!(
                        "a {th}x{tw} output tile at ({}, {}) exceeds the {oh}x{ow} output \
                         (the tile and overlap must keep tile edges on whole output samples)",
                        placed[0], placed[1]
                    )));
                }
                let mask = feather_mask(th, tw, scaled(overlap));
                for c in 0..out_channels {
                    for y in 0..th {
                        let orow = (c * oh + placed[0] + y) * ow + placed[1];
                        let prow = (c * th + y) * tw;
                        for x in 0..tw {
                            let m = mask[y * tw + x];
                            out[orow + x] += ps.data[prow + x] * m;
                            out_div[orow + x] += m;
                        }
                    }
                }
            }
        }
        output.extend(out.iter().zip(&out_div).map(|(o, d)| o / d));
    }
    Ok(Planes::new(samples.n, out_channels, oh, ow, output))
}

/// The blend weights of one `rows x cols` output tile: ones, each edge row/column `t` (from
/// either side) multiplied in place by `(t+1)/feather` as a float32, rows first, then columns,
/// in ComfyUI's order (a dimension no larger than `feather` is left unweighted).
fn feather_mask(rows: usize, cols: usize, feather: usize) -> Vec<f32> {
    let factors = |n: usize| -> Vec<Vec<f32>> {
        let mut f = vec![Vec::new(); n];
        if feather < n {
            for t in 0..feather {
                let a = ((t + 1) as f64 / feather as f64) as f32;
                f[t].push(a);
                f[n - 1 - t].push(a);
            }
        }
        f
    };
    let (fr, fc) = (factors(rows), factors(cols));
    let mut mask = Vec::with_capacity(rows * cols);
    for r in &fr {
        let row: f32 = r.iter().fold(1f32, |m, a| m * a);
        for c in &fc {
            mask.push(c.iter().fold(row, |m, a| m * a));
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_ramps_from_both_edges() {
        let m = feather_mask(1, 6, 2);
        assert_eq!(m, vec![0.5, 1.0, 1.0, 1.0, 1.0, 0.5]);
        // A dimension no longer than the feather keeps its weights.
        assert_eq!(feather_mask(2, 1, 2), vec![1.0, 1.0]);
        // Overlapping ramps multiply twice, as the in-place narrows do.
        let m = feather_mask(1, 3, 2);
        assert_eq!(m, vec![0.5, 1.0, 0.5]);
    }
}
