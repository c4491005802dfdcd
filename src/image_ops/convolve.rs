//! The reflect-padded depthwise convolutions of ComfyUI's blur and sharpen operations
//! (nodes_post_processing.py's ImageBlur / ImageSharpen, nodes_latent.py's
//! LatentOperationSharpen): its Gaussian kernel in float32 as torch computes it, the
//! sharpening kernel built from it, and the convolution over the reflected neighbourhood.

use super::planes::Planes;

/// `torch.linspace(-1, 1, n)` in float32 (torch fills the first half from the start and
/// the second from the end).
fn linspace_pm1(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0f32 / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// `gaussian_kernel(kernel_size, sigma)` of nodes_post_processing.py, row-major.
pub fn gaussian_kernel(size: usize, sigma: f64) -> Vec<f32> {
    let l = linspace_pm1(size);
    let two_s2 = (2.0 * sigma * sigma) as f32;
    let mut g = Vec::with_capacity(size * size);
    for &x in &l {
        for &y in &l {
            let d = (x * x + y * y).sqrt();
            g.push((-(d * d) / two_s2).exp());
        }
    }
    let sum: f32 = g.iter().sum();
    g.iter().map(|v| v / sum).collect()
}

/// Depthwise `F.conv2d` of the reflect-padded image (`F.pad(.., 'reflect')`) with a
/// `(2r+1)²` kernel, cropped back to the image: every output pixel sees its reflected
/// neighbourhood.
pub fn convolve_reflect(img: &Planes, kernel: &[f32], r: usize) -> Result<Planes, String> {
    if r >= img.h || r >= img.w {
        return Err(format!(
            "is {}x{}: a radius of {r} needs an image larger than the radius on both sides \
             (reflect padding)",
            img.w, img.h
        ));
    }
    let k = 2 * r + 1;
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    let mut out = Planes::zeros(img.n, img.c, img.h, img.w);
    for b in 0..img.n {
        for ch in 0..img.c {
            let p = img.plane(b, ch);
            for y in 0..img.h {
                for x in 0..img.w {
                    let mut acc = 0f32;
                    for i in 0..k {
                        let yy = reflect(y as isize + i as isize - r as isize, img.h);
                        for j in 0..k {
                            let xx = reflect(x as isize + j as isize - r as isize, img.w);
                            acc += kernel[i * k + j] * p[yy * img.w + xx];
                        }
                    }
                    let o = out.at(b, ch, y, x);
                    out.data[o] = acc;
                }
            }
        }
    }
    Ok(out)
}

/// The sharpening kernel of ImageSharpen / LatentOperationSharpen: the Gaussian times
/// `−alpha·10` with its centre raised so the kernel sums to 1, row-major `(2r+1)²`.
pub fn sharpen_kernel(radius: usize, sigma: f64, alpha: f64) -> Vec<f32> {
    let size = 2 * radius + 1;
    let scale = (-(alpha * 10.0)) as f32;
    let mut kernel: Vec<f32> = gaussian_kernel(size, sigma)
        .into_iter()
        .map(|v| v * scale)
        .collect();
    let sum: f32 = kernel.iter().sum();
    let c = radius * size + radius;
    kernel[c] = kernel[c] - sum + 1.0;
    kernel
}
