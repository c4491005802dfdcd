//! GFLOP/s of the f32 matrix products the SDXL UNet spends its time in, through
//! `nn::cpu_gemm::par_gemm` (every thread) and `gemm_block` (one thread).
//! `cargo run --release --example gemm_bench [REPEATS]`.
//!
//! Shapes (m × n × k), from a 512² SDXL step (64×64 latent, batch 2 under cfg):
//! 3×3 convs as im2col (`c_out × band × c_in·9`), transformer linears (`tokens × out × in`)
//! and one attention head's QKᵀ (`tokens × tokens × 64`).
use comfyrs::models::nn::cpu_gemm::{gemm_block, par_gemm, Dest, Operand};
use std::time::Instant;

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let shapes: [(&str, usize, usize, usize); 8] = [
        ("conv3x3 320ch 64² band", 320, 2880, 2880),
        ("conv3x3 640ch 32²", 640, 1024, 5760),
        ("conv3x3 1280ch 16²", 1280, 256, 11520),
        ("linear 1024 tok 640→640", 1024, 640, 640),
        ("linear 1024 tok 640→5120 (GEGLU)", 1024, 5120, 640),
        ("linear 256 tok 1280→10240", 256, 10240, 1280),
        ("linear 1024 tok 2560→640", 1024, 640, 2560),
        ("attn QKᵀ 1024 tok, head 64", 1024, 1024, 64),
    ];
    println!("threads: {}", comfyrs::models::nn::cpu_gemm::num_threads());
    for (name, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let mut run = |threaded: bool| {
            let mut best = f64::MAX;
            for _ in 0..repeats {
                let t0 = Instant::now();
                let d = Dest {
                    ptr: c.as_mut_ptr(),
                    rs: n as isize,
                };
                let l = Operand {
                    ptr: a.as_ptr(),
                    rs: k as isize,
                    cs: 1,
                };
                let r = Operand {
                    ptr: b.as_ptr(),
                    rs: n as isize,
                    cs: 1,
                };
                // SAFETY: a, b, c are m×k, k×n and m×n row-major and distinct.
                unsafe {
                    if threaded {
                        par_gemm(m, n, k, d, false, l, r, 1.0)
                    } else {
                        gemm_block(m, n, k, d, false, l, r, 1.0)
                    }
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            flops / best / 1e9
        };
        let one = run(false);
        let all = run(true);
        println!("{name:<36} {m:>5}x{n:>5}x{k:>5}: 1 thread {one:6.1} GFLOP/s, all threads {all:6.1} GFLOP/s");
    }
}
