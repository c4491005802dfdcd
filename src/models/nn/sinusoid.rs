//! The frequencies of ComfyUI's sinusoidal timestep embeddings, as torch computes them on the
//! CPU: `exp(-ln(10000) * arange(half, dtype=float32) / half)` in float32.
//!
//! torch's vectorised float32 `exp` (SLEEF, within one ulp) is one ulp off the correctly
//! rounded value at a few of these inputs. That is invisible in most places, but the embedding
//! multiplies the frequency by timestep x 1000 (and Flux's guidance x 1000: 30000 at
//! FluxGuidance 30), where one ulp moves the sinusoid by ~1e-3. The inputs where torch differs
//! are listed with torch's result; `scripts/goldens/gen_torch_expf_table.py` prints them.

/// `(input bits, torch's exp bits)` where torch's CPU float32 exp is not correctly rounded,
/// for the embedding sizes the supported families use (dim 256: Flux, SD3, SDXL's size
/// embedding; dim 320: the SD1.x/SDXL UNets). torch 2.8.0, AVX512.
const TORCH_EXPF: [(u32, u32); 4] = [
    (0xbdebc8e3, 0x3f642906),
    (0xbf6f7807, 0x3ec8eb24),
    (0xc04aa0a3, 0x3d2cba16),
    (0xc10900fa, 0x394860c0),
];

/// torch's CPU float32 `exp(x)` at an embedding frequency input.
fn torch_expf(x: f32) -> f32 {
    let bits = x.to_bits();
    match TORCH_EXPF.iter().find(|(input, _)| *input == bits) {
        Some((_, torch)) => f32::from_bits(*torch),
        None => (x as f64).exp() as f32,
    }
}

/// The `half` frequencies of a `2 * half`-wide embedding with max_period 10000.
pub fn timestep_frequencies(half: usize) -> Vec<f32> {
    // -ln(10000) as torch rounds the Python scalar to f32, times the f32 arange, over `half`.
    let c = -(10000f64.ln()) as f32;
    (0..half)
        .map(|k| torch_expf((c * k as f32) / half as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_differs_by_one_ulp_where_listed() {
        for (x, torch) in TORCH_EXPF {
            let exact = (f32::from_bits(x) as f64).exp() as f32;
            let ulps = (exact.to_bits() as i64 - torch as i64).abs();
            assert_eq!(ulps, 1, "{x:#x}");
        }
    }

    #[test]
    fn the_listed_inputs_are_embedding_frequencies() {
        let used: Vec<u32> = [128usize, 160]
            .iter()
            .flat_map(|&half| {
                let c = -(10000f64.ln()) as f32;
                (0..half).map(move |k| ((c * k as f32) / half as f32).to_bits())
            })
            .collect();
        for (x, _) in TORCH_EXPF {
            assert!(used.contains(&x), "{x:#x}");
        }
        // Flux's 256-wide embedding: entries 13, 44 and 119 are torch's, one ulp off.
        let f = timestep_frequencies(128);
        assert_eq!(f[13].to_bits(), 0x3ec8eb24);
        assert_eq!(f[44].to_bits(), 0x3d2cba16);
        assert_eq!(f[119].to_bits(), 0x394860c0);
        assert_eq!(f[0], 1.0);
    }
}
