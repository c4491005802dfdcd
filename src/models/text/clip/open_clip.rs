//! OpenCLIP text-tower keys → HF `CLIPTextModel` keys (ComfyUI's
//! `utils.clip_text_transformers_convert`), so one text model reads both layouts.
//!
//! SDXL checkpoints keep OpenCLIP ViT-bigG under `conditioner.embedders.1.model.` (the
//! refiner under `…embedders.0.model.`), and standalone `open_clip_pytorch_model` files
//! have it at the root: `transformer.resblocks.N.{ln_1, ln_2, attn.in_proj_*,
//! attn.out_proj, mlp.c_fc, mlp.c_proj}`, `token_embedding`, `positional_embedding`,
//! `ln_final`, and `text_projection` stored as `x @ P` (transposed here into a Linear
//! weight). The fused `in_proj` is split into q, k, v thirds.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::models::{ModelError, Result};

/// Does `weights` hold an OpenCLIP text tower under `prefix`?
pub fn is_open_clip(weights: &HashMap<String, Tensor>, prefix: &str) -> bool {
    weights.contains_key(&format!("{prefix}transformer.resblocks.0.ln_1.weight"))
}

/// Moves the OpenCLIP text tower under `from` to HF names under `to`
/// (e.g. `clip_g.transformer.`: the text model lands in `…text_model.`, the projection
/// in `…text_projection.weight`). Keys of the tower that have no HF counterpart
/// (`logit_scale`, attention masks) are dropped.
pub fn convert_open_clip(
    weights: &mut HashMap<String, Tensor>,
    from: &str,
    to: &str,
) -> Result<()> {
    let keys: Vec<String> = weights
        .keys()
        .filter(|k| k.starts_with(from))
        .cloned()
        .collect();
    let tm = format!("{to}text_model.");
    for key in keys {
        let t = weights.remove(&key).expect("listed above");
        let rest = &key[from.len()..];
        if let Some(layer) = rest.strip_prefix("transformer.resblocks.") {
            let (n, name) = layer
                .split_once('.')
                .ok_or_else(|| ModelError::NotSupported(format!("unexpected key {key}")))?;
            let base = format!("{tm}encoder.layers.{n}.");
            let renamed = [
                ("ln_1.", "layer_norm1."),
                ("ln_2.", "layer_norm2."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
                ("attn.out_proj.", "self_attn.out_proj."),
            ]
            .iter()
            .find_map(|(a, b)| name.strip_prefix(a).map(|p| format!("{base}{b}{p}")));
            if let Some(k) = renamed {
                weights.insert(k, t);
                continue;
            }
            let suffix = match name {
                "attn.in_proj_weight" => "weight",
                "attn.in_proj_bias" => "bias",
                _ => continue,
            };
            let third = t.dim(0)? / 3;
            for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let part = t.narrow(0, i * third, third)?.contiguous()?;
                weights.insert(format!("{base}self_attn.{p}.{suffix}"), part);
            }
            continue;
        }
        let target = match rest {
            "token_embedding.weight" => format!("{tm}embeddings.token_embedding.weight"),
            "positional_embedding" => format!("{tm}embeddings.position_embedding.weight"),
            "ln_final.weight" => format!("{tm}final_layer_norm.weight"),
            "ln_final.bias" => format!("{tm}final_layer_norm.bias"),
            "text_projection" => {
                weights.insert(format!("{to}text_projection.weight"), t.t()?.contiguous()?);
                continue;
            }
            _ => continue,
        };
        weights.insert(target, t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn splits_in_proj_and_transposes_the_projection() {
        let d = Device::Cpu;
        let mut w = HashMap::new();
        let in_proj = Tensor::arange(0f32, 24.0, &d)
            .unwrap()
            .reshape((6, 4))
            .unwrap();
        let p = "m.";
        w.insert(
            format!("{p}transformer.resblocks.0.attn.in_proj_weight"),
            in_proj,
        );
        w.insert(
            format!("{p}transformer.resblocks.0.ln_1.weight"),
            Tensor::ones(2, DType::F32, &d).unwrap(),
        );
        let proj = Tensor::arange(0f32, 6.0, &d)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        w.insert(format!("{p}text_projection"), proj);
        w.insert(
            format!("{p}positional_embedding"),
            Tensor::zeros((3, 2), DType::F32, &d).unwrap(),
        );
        w.insert(format!("{p}logit_scale"), Tensor::new(1f32, &d).unwrap());
        assert!(is_open_clip(&w, p));
        convert_open_clip(&mut w, p, "g.").unwrap();
        let k: Vec<Vec<f32>> = w["g.text_model.encoder.layers.0.self_attn.k_proj.weight"]
            .to_vec2()
            .unwrap();
        assert_eq!(
            k,
            vec![vec![8.0, 9.0, 10.0, 11.0], vec![12.0, 13.0, 14.0, 15.0]]
        );
        let pt: Vec<Vec<f32>> = w["g.text_projection.weight"].to_vec2().unwrap();
        assert_eq!(pt, vec![vec![0.0, 3.0], vec![1.0, 4.0], vec![2.0, 5.0]]);
        assert!(w.contains_key("g.text_model.encoder.layers.0.layer_norm1.weight"));
        assert!(w.contains_key("g.text_model.embeddings.position_embedding.weight"));
        assert!(!w.keys().any(|k| k.starts_with("m.")));
    }
}
