//! Prints `RSQRT_STEPS` of `src/sampling/torch_math.rs` from this CPU's `rsqrtss`.
//!
//! Run on the reference machine (AMD EPYC): `cargo run --example amd_rsqrt_table`.
//! Other CPUs (Intel in particular) print their own estimate, which differs.

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::x86_64::{_mm_cvtss_f32, _mm_rsqrt_ss, _mm_set_ss};
    // One estimate per 12-bit mantissa prefix of [1, 2) and [2, 4).
    let k: Vec<u32> = (0..8192u32)
        .map(|i| {
            let x = f32::from_bits(0x3f80_0000 + (i << 11));
            // SAFETY: SSE is part of the x86_64 baseline.
            let y = unsafe { _mm_cvtss_f32(_mm_rsqrt_ss(_mm_set_ss(x))) };
            let b = y.to_bits();
            assert_eq!(b >> 23, 126, "estimate of {x} outside [0.5, 1)");
            assert_eq!(
                b & 0x7ff,
                0,
                "estimate of {x} has more than 12 mantissa bits"
            );
            (b >> 11) & 0xfff
        })
        .collect();
    println!("first values: k[0] = {}, k[4096] = {}", k[0], k[4096]);
    let mut words = [0u64; 256];
    for i in 0..8191 {
        if i == 4095 {
            continue;
        }
        let step = k[i] - k[i + 1];
        assert!(step <= 3, "step {step} at {i} does not fit 2 bits");
        words[i / 32] |= (step as u64) << (2 * (i % 32));
    }
    for w in words {
        let h = format!("{w:016x}");
        println!(
            "    0x{}_{}_{}_{},",
            &h[0..4],
            &h[4..8],
            &h[8..12],
            &h[12..16]
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("rsqrtss is an x86_64 instruction");
}
