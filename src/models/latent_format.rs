//! Per-family latent spaces (ComfyUI's `comfy/latent_formats.py`): how many channels a
//! family's VAE latent has, how it maps into the diffusion model's space
//! (`process_in`/`process_out`: scale, and for SD3/Flux a shift), and the linear map the
//! latent2rgb previewer uses.
//!
//! The constants are ComfyUI's; `process_in` is `(z − shift)·scale` and `process_out`
//! `z/scale + shift`, each an f32 tensor op with the Python float rounded to f32 first,
//! as torch does for a float scalar meeting an f32 tensor.

use candle_core::{Result, Tensor};

/// A family's latent space.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentFormat {
    /// ComfyUI's class name (`SD15`, `SDXL`, `SD3`, `Flux`), for messages.
    pub name: &'static str,
    pub channels: usize,
    pub scale_factor: f32,
    /// None for formats without a shift (SD1.x, SDXL).
    pub shift_factor: Option<f32>,
    /// latent channel → (R, G, B) weights of the latent2rgb preview.
    pub rgb_factors: &'static [[f32; 3]],
    pub rgb_bias: Option<[f32; 3]>,
}

const SD15_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

const SDXL_RGB: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];

const SD3_RGB: [[f32; 3]; 16] = [
    [-0.0922, -0.0175, 0.0749],
    [0.0311, 0.0633, 0.0954],
    [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496],
    [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427],
    [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268],
    [0.0922, 0.0988, 0.0951],
    [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895],
    [-0.0069, -0.0030, -0.0810],
    [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
];

const FLUX_RGB: [[f32; 3]; 16] = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
];

impl LatentFormat {
    /// SD1.x and SD2.x: 4 channels, scale 0.18215.
    pub fn sd15() -> Self {
        LatentFormat {
            name: "SD15",
            channels: 4,
            scale_factor: 0.18215,
            shift_factor: None,
            rgb_factors: &SD15_RGB,
            rgb_bias: None,
        }
    }

    /// SDXL base and refiner: 4 channels, scale 0.13025.
    pub fn sdxl() -> Self {
        LatentFormat {
            name: "SDXL",
            channels: 4,
            scale_factor: 0.13025,
            shift_factor: None,
            rgb_factors: &SDXL_RGB,
            rgb_bias: Some([0.1084, -0.0175, -0.0011]),
        }
    }

    /// SD3 / SD3.5: 16 channels, shift 0.0609, scale 1.5305.
    pub fn sd3() -> Self {
        LatentFormat {
            name: "SD3",
            channels: 16,
            scale_factor: 1.5305,
            shift_factor: Some(0.0609),
            rgb_factors: &SD3_RGB,
            rgb_bias: Some([0.2394, 0.2135, 0.1925]),
        }
    }

    /// Flux.1: 16 channels, shift 0.1159, scale 0.3611.
    pub fn flux() -> Self {
        LatentFormat {
            name: "Flux",
            channels: 16,
            scale_factor: 0.3611,
            shift_factor: Some(0.1159),
            rgb_factors: &FLUX_RGB,
            rgb_bias: Some([-0.0329, -0.0718, -0.0851]),
        }
    }

    /// VAE latent → model space.
    pub fn process_in(&self, z: &Tensor) -> Result<Tensor> {
        match self.shift_factor {
            None => z * self.scale_factor as f64,
            Some(s) => (z - s as f64)? * self.scale_factor as f64,
        }
    }

    /// Model space → VAE latent.
    pub fn process_out(&self, z: &Tensor) -> Result<Tensor> {
        // A true division, as torch's `latent / scale_factor` (candle's scalar division
        // multiplies by the reciprocal, an ulp off for some values).
        let scale = Tensor::new(self.scale_factor, z.device())?.to_dtype(z.dtype())?;
        let z = z.broadcast_div(&scale)?;
        match self.shift_factor {
            None => Ok(z),
            Some(s) => z + s as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn process_out_divides_as_torch_does() {
        let f = LatentFormat::sd15();
        let v: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.0137).collect();
        let t = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
        let out = f.process_out(&t).unwrap().to_vec1::<f32>().unwrap();
        let s = f.scale_factor;
        for (x, o) in v.iter().zip(&out) {
            assert_eq!(o.to_bits(), (x / s).to_bits(), "{x}");
        }
        // The reciprocal multiply it replaces is off for some of these values.
        let recip = 1.0 / f.scale_factor;
        assert!(v.iter().any(|x| (x * recip).to_bits() != (x / s).to_bits()));
    }

    #[test]
    fn flux_round_trips_through_its_shift_and_scale() {
        let f = LatentFormat::flux();
        let z = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let m: Vec<f32> = f.process_in(&z).unwrap().to_vec1().unwrap();
        assert!((m[0] - (0.5 - 0.1159) * 0.3611).abs() < 1e-7);
        let back: Vec<f32> = f
            .process_out(&f.process_in(&z).unwrap())
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in back.iter().zip([0.5f32, -1.0, 2.0]) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn factor_tables_have_one_row_per_channel() {
        for f in [
            LatentFormat::sd15(),
            LatentFormat::sdxl(),
            LatentFormat::sd3(),
            LatentFormat::flux(),
        ] {
            assert_eq!(f.rgb_factors.len(), f.channels, "{}", f.name);
        }
    }
}
