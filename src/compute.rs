//! Where and in what precision the models compute: the device (`cpu`, `cuda[:N]`) and the
//! weight/compute dtypes of the UNet + text encoder and of the VAE.
//!
//! Only the networks use this. Everything around them (noise, schedules, sampler math) stays
//! f32 on the CPU, as ComfyUI keeps its noise on the CPU and its sampler state in f32: the model
//! wrappers move their inputs to the device and dtype and return f32 CPU tensors.

use candle_core::{DType, Device};
use std::fmt;
use std::str::FromStr;

/// A device as named on the command line: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "unknown device '{s}': allowed are cpu, cuda, cuda:N (N = GPU index)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device. `cuda` in a build without the `cuda` feature, or without a usable
    /// GPU, is an error that says so.
    pub fn open(self) -> Result<Device, String> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(format!(
                        "--device {self}: this comfyrs was built without CUDA support; rebuild \
                         with `cargo build --release --features cuda` (see docs/gpu.md), or use \
                         --device cpu"
                    ));
                }
                Device::new_cuda(n).map_err(|e| {
                    // candle appends a backtrace to the message; the first line is the reason.
                    let reason = e.to_string();
                    let reason = reason.lines().next().unwrap_or("").to_string();
                    format!("--device {self}: cannot open the GPU: {reason}")
                })
            }
        }
    }
}

/// A compute dtype as named on the command line: `fp32`, `fp16` or `bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtypeSpec(pub DType);

impl FromStr for DtypeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(DtypeSpec(DType::F32)),
            "fp16" | "f16" | "float16" | "half" => Ok(DtypeSpec(DType::F16)),
            "bf16" | "bfloat16" => Ok(DtypeSpec(DType::BF16)),
            other => Err(format!(
                "unknown dtype '{other}': allowed are fp32, fp16, bf16"
            )),
        }
    }
}

/// The short name of a float dtype (`fp32`, `fp16`, `bf16`).
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "fp32",
        DType::F16 => "fp16",
        DType::BF16 => "bf16",
        DType::F64 => "fp64",
        _ => "non-float",
    }
}

/// The device and dtypes the models load to and compute in. Shared by every run through
/// [`crate::env::Environment::compute`].
#[derive(Debug, Clone)]
pub struct Compute {
    pub device: Device,
    /// Dtype of the UNet and the text encoder (ComfyUI's unet / text-encoder dtype).
    pub dtype: DType,
    /// Dtype of the VAE (ComfyUI keeps it separate: an fp16 SD VAE can overflow).
    pub vae_dtype: DType,
}

impl Default for Compute {
    /// CPU, f32 everywhere: ComfyUI's numerics on the CPU.
    fn default() -> Self {
        Compute::cpu(DType::F32)
    }
}

impl Compute {
    /// The CPU with one dtype for every model.
    pub fn cpu(dtype: DType) -> Self {
        Compute {
            device: Device::Cpu,
            dtype,
            vae_dtype: dtype,
        }
    }

    /// Opens `device` with the dtypes given, or the device's defaults: f32 on the CPU; on CUDA
    /// fp16 for the UNet and text encoder and bf16 for the VAE (ComfyUI's choices on a GPU that
    /// has bf16).
    pub fn open(
        device: DeviceSpec,
        dtype: Option<DType>,
        vae_dtype: Option<DType>,
    ) -> Result<Self, String> {
        let (default_dtype, default_vae) = match device {
            DeviceSpec::Cpu => (DType::F32, DType::F32),
            DeviceSpec::Cuda(_) => (DType::F16, DType::BF16),
        };
        let (dtype, vae_dtype) = (
            dtype.unwrap_or(default_dtype),
            vae_dtype.unwrap_or(default_vae),
        );
        if device == DeviceSpec::Cpu && (dtype == DType::BF16 || vae_dtype == DType::BF16) {
            // candle 0.11's CPU conv2d has no bf16 kernel ("unsupported dtype BF16 for op
            // matmul" in the middle of a run): refuse it up front.
            return Err(
                "bf16 is not supported on the cpu (candle has no CPU bf16 convolution); use \
                 --dtype fp16 or fp32 (and --vae-dtype fp16 or fp32) there, bf16 on cuda"
                    .into(),
            );
        }
        let device = device.open()?;
        Ok(Compute {
            device,
            dtype,
            vae_dtype,
        })
    }

    /// `cpu, fp32 (vae fp32)`, for logs.
    pub fn describe(&self) -> String {
        let dev = match self.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        };
        format!(
            "{dev}, {} (vae {})",
            dtype_name(self.dtype),
            dtype_name(self.vae_dtype)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("CUDA:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        let e = "cuda:x".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(
            e,
            "unknown device 'cuda:x': allowed are cpu, cuda, cuda:N (N = GPU index)"
        );
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert_eq!("fp16".parse::<DtypeSpec>(), Ok(DtypeSpec(DType::F16)));
        assert_eq!("bf16".parse::<DtypeSpec>(), Ok(DtypeSpec(DType::BF16)));
        assert_eq!("fp32".parse::<DtypeSpec>(), Ok(DtypeSpec(DType::F32)));
        assert_eq!(
            "int8".parse::<DtypeSpec>().unwrap_err(),
            "unknown dtype 'int8': allowed are fp32, fp16, bf16"
        );
    }

    #[test]
    fn defaults_per_device() {
        let c = Compute::open(DeviceSpec::Cpu, None, None).unwrap();
        assert!(c.device.is_cpu());
        assert_eq!((c.dtype, c.vae_dtype), (DType::F32, DType::F32));
        assert_eq!(c.describe(), "cpu, fp32 (vae fp32)");
        let c = Compute::open(DeviceSpec::Cpu, Some(DType::F16), None).unwrap();
        assert_eq!((c.dtype, c.vae_dtype), (DType::F16, DType::F32));
        for (d, v) in [(Some(DType::BF16), None), (None, Some(DType::BF16))] {
            let e = Compute::open(DeviceSpec::Cpu, d, v).unwrap_err();
            assert!(e.starts_with("bf16 is not supported on the cpu"), "{e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let e = Compute::open(DeviceSpec::Cuda(0), None, None).unwrap_err();
        assert!(
            e.starts_with("--device cuda:0: this comfyrs was built without CUDA support"),
            "{e}"
        );
    }
}
