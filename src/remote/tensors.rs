//! IMAGE, MASK and LATENT values across the process boundary: each crosses as one file in
//! safetensors layout (8-byte header length, JSON header, raw little-endian data) in the
//! host's exchange folder, which lives in `/dev/shm` where it exists so the bytes stay in
//! memory. Any language can read the format in a few lines; Python's `safetensors` and
//! `torch` read it directly.
//!
//! Layouts are ComfyUI's: IMAGE `image` [B,H,W,C] f32, MASK `mask` [B,H,W] f32, LATENT
//! `samples` [B,C,H,W] (or [B,C,T,H,W]) f32 with optional `noise_mask`, and `batch_index`
//! as JSON in the header's `__metadata__`.

use crate::node::types::{Image, Latent, Mask};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// The kinds of tensor value that cross by file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    Image,
    Mask,
    Latent,
}

impl TensorKind {
    pub fn from_type(ty: &str) -> Option<TensorKind> {
        match ty {
            "IMAGE" => Some(TensorKind::Image),
            "MASK" => Some(TensorKind::Mask),
            "LATENT" => Some(TensorKind::Latent),
            _ => None,
        }
    }
    /// The `$ref` tag in messages.
    pub fn tag(self) -> &'static str {
        match self {
            TensorKind::Image => "image",
            TensorKind::Mask => "mask",
            TensorKind::Latent => "latent",
        }
    }
    pub fn from_tag(tag: &str) -> Option<TensorKind> {
        match tag {
            "image" => Some(TensorKind::Image),
            "mask" => Some(TensorKind::Mask),
            "latent" => Some(TensorKind::Latent),
            _ => None,
        }
    }
}

fn f32_bytes(t: &Tensor) -> candle_core::Result<(Vec<usize>, Vec<u8>)> {
    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let shape = t.dims().to_vec();
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    Ok((shape, le_bytes(&data)))
}

/// f32 values as little-endian bytes (one copy; safetensors data is little-endian).
fn le_bytes(data: &[f32]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: any f32 bit pattern is valid bytes; the slice covers exactly `data`.
        let bytes =
            unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), data.len() * 4) };
        bytes.to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    {
        data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

fn write(
    path: &Path,
    tensors: Vec<(&str, &Tensor)>,
    meta: Option<HashMap<String, String>>,
) -> Result<(), String> {
    let mut buffers = Vec::new();
    for (name, t) in tensors {
        let (shape, bytes) = f32_bytes(t).map_err(|e| e.to_string())?;
        buffers.push((name.to_string(), shape, bytes));
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    safetensors::tensor::serialize_to_file(views, meta, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes an IMAGE, MASK or LATENT value to `path`.
pub fn write_image(path: &Path, image: &Image) -> Result<(), String> {
    write(path, vec![("image", &image.0)], None)
}

pub fn write_mask(path: &Path, mask: &Mask) -> Result<(), String> {
    write(path, vec![("mask", &mask.0)], None)
}

pub fn write_latent(path: &Path, latent: &Latent) -> Result<(), String> {
    let mut tensors = vec![("samples", &latent.samples)];
    if let Some(m) = &latent.noise_mask {
        tensors.push(("noise_mask", m));
    }
    let meta = latent.batch_index.as_ref().map(|b| {
        HashMap::from([(
            "batch_index".to_string(),
            serde_json::to_string(b).expect("ints serialise"),
        )])
    });
    write(path, tensors, meta)
}

/// A file's tensors by name, and its `__metadata__`.
type TensorFile = (HashMap<String, Tensor>, HashMap<String, String>);

/// The file's tensors, as f32 on the CPU.
fn read(path: &Path) -> Result<TensorFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("{} is not a safetensors file: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{} is not a safetensors file: {e}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_raw_buffer(data, DType::F32, &shape, &Device::Cpu),
            Dtype::F16 => Tensor::from_raw_buffer(data, DType::F16, &shape, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32)),
            Dtype::BF16 => Tensor::from_raw_buffer(data, DType::BF16, &shape, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32)),
            Dtype::F64 => Tensor::from_raw_buffer(data, DType::F64, &shape, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32)),
            other => return Err(format!("tensor '{name}' has dtype {other:?}; expected F32")),
        }
        .map_err(|e| format!("tensor '{name}': {e}"))?;
        out.insert(name, t);
    }
    Ok((out, meta))
}

fn take(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    ranks: &[usize],
    what: &str,
) -> Result<Tensor, String> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| format!("the {what} file has no tensor '{name}'"))?;
    if !ranks.contains(&t.rank()) {
        return Err(format!(
            "{what} tensor '{name}' has shape {:?}; expected {} dimensions",
            t.dims(),
            ranks
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    Ok(t)
}

pub fn read_image(path: &Path) -> Result<Image, String> {
    let (mut t, _) = read(path)?;
    let image = take(&mut t, "image", &[4], "IMAGE")?;
    Ok(Image(image))
}

/// A MASK; a single [H,W] mask (as ComfyUI nodes sometimes return) becomes [1,H,W].
pub fn read_mask(path: &Path) -> Result<Mask, String> {
    let (mut t, _) = read(path)?;
    let mask = take(&mut t, "mask", &[2, 3], "MASK")?;
    let mask = if mask.rank() == 2 {
        mask.unsqueeze(0).map_err(|e| e.to_string())?
    } else {
        mask
    };
    Ok(Mask(mask))
}

pub fn read_latent(path: &Path) -> Result<Latent, String> {
    let (mut t, meta) = read(path)?;
    let samples = take(&mut t, "samples", &[4, 5], "LATENT")?;
    let noise_mask = t.remove("noise_mask");
    let batch_index = match meta.get("batch_index") {
        None => None,
        Some(s) => Some(
            serde_json::from_str::<Vec<i64>>(s)
                .map_err(|e| format!("LATENT batch_index metadata {s:?}: {e}"))?,
        ),
    };
    Ok(Latent {
        samples,
        noise_mask,
        batch_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 3))
            .unwrap();
        let p = dir.path().join("i.safetensors");
        write_image(&p, &Image(img.clone())).unwrap();
        let back = read_image(&p).unwrap().0;
        assert_eq!(back.dims(), &[1, 2, 4, 3]);
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            img.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // Raw layout: 8-byte little-endian header length, then the JSON header.
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["image"]["dtype"], "F32");
        assert_eq!(header["image"]["shape"], serde_json::json!([1, 2, 4, 3]));

        let lat = Latent {
            samples: Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            noise_mask: Some(Tensor::ones((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap()),
            batch_index: Some(vec![3, 4]),
        };
        let p = dir.path().join("l.safetensors");
        write_latent(&p, &lat).unwrap();
        let back = read_latent(&p).unwrap();
        assert_eq!(back.batch_index, Some(vec![3, 4]));
        assert_eq!(back.noise_mask.unwrap().dims(), &[2, 1, 3, 3]);

        // A 2-D mask becomes a batch of one; a wrong rank is refused by name.
        let p = dir.path().join("m.safetensors");
        let m = Tensor::zeros((5, 6), DType::F32, &Device::Cpu).unwrap();
        write(&p, vec![("mask", &m)], None).unwrap();
        assert_eq!(read_mask(&p).unwrap().0.dims(), &[1, 5, 6]);
        let e = read_image(&p).unwrap_err();
        assert_eq!(e, "the IMAGE file has no tensor 'image'");
        write(&p, vec![("image", &m)], None).unwrap();
        let e = read_image(&p).unwrap_err();
        assert!(e.contains("[5, 6]") && e.contains("4 dimensions"), "{e}");
    }
}
