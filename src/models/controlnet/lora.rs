//! Control-LoRA (Stability's `control-lora-*-rank*.safetensors`) as ComfyUI 0.3.64 runs it
//! (`comfy/controlnet.py` `ControlLora`): the file (marker key `lora_controlnet`) holds the
//! hint encoder, the zero convs and some full weights of a cldm ControlNet, and low-rank
//! `up`/`down` pairs for the rest. When sampling starts (`pre_run`) ComfyUI builds the
//! ControlNet from the *model being sampled*: its UNet weights for every layer the ControlNet
//! shares (`input_blocks`, `middle_block`, `time_embed`, `label_emb`), the file's
//! `.weight`/`.bias` tensors over them, and each layer with an `up`/`down` pair computing
//! with `weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)`.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device};

use super::network::ControlNet;
use crate::models::checkpoint::WeightMap;
use crate::models::unet::UNET_PREFIX;
use crate::models::{ModelError, Result};

/// The UNet parts a cldm ControlNet shares with the model.
const SHARED: [&str; 4] = [
    "input_blocks.",
    "middle_block.",
    "time_embed.",
    "label_emb.",
];

struct Inner {
    /// The file's tensors (`lora_controlnet` removed).
    weights: WeightMap,
    dtype: DType,
    device: Device,
    /// The network built for the last model (keyed by its weight map's address).
    built: Mutex<Option<(usize, ControlNet)>>,
}

/// A loaded Control-LoRA. Cheap to clone.
#[derive(Clone)]
pub struct ControlLora(Arc<Inner>);

impl std::fmt::Debug for ControlLora {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs = self.0.weights.keys().filter(|k| k.ends_with(".up")).count();
        write!(f, "ControlLora({pairs} low-rank layers)")
    }
}

/// Whether a state dict is a Control-LoRA (`lora_controlnet` key).
pub fn is_control_lora(sd: &WeightMap) -> bool {
    sd.contains_key("lora_controlnet")
}

impl ControlLora {
    pub fn from_weights(mut sd: WeightMap, dtype: DType, device: &Device) -> Result<Self> {
        sd.remove("lora_controlnet");
        let hint = "input_hint_block.0.weight";
        if !sd.contains_key(hint) {
            return Err(ModelError::MissingKey(hint.into()));
        }
        for k in sd.keys() {
            if let Some(base) = k.strip_suffix(".up") {
                let down = format!("{base}.down");
                if !sd.contains_key(&down) {
                    return Err(ModelError::MissingKey(down));
                }
            }
        }
        Ok(ControlLora(Arc::new(Inner {
            weights: sd,
            dtype,
            device: device.clone(),
            built: Mutex::new(None),
        })))
    }

    /// Channels of the hint image.
    pub fn hint_channels(&self) -> usize {
        self.0.weights["input_hint_block.0.weight"]
            .dim(1)
            .unwrap_or(3)
    }

    /// The ControlNet for a model whose UNet weights are `unet` (keys under
    /// `model.diffusion_model.`), built once per weight map.
    pub fn network(&self, unet: &Arc<WeightMap>) -> Result<ControlNet> {
        let id = Arc::as_ptr(unet) as usize;
        let mut slot = self.0.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, net)) = slot.as_ref() {
            if *k == id {
                return Ok(net.clone());
            }
        }
        let net = self.build(unet)?;
        *slot = Some((id, net.clone()));
        Ok(net)
    }

    fn build(&self, unet: &WeightMap) -> Result<ControlNet> {
        let m = &self.0;
        let mut w: WeightMap = WeightMap::new();
        for (k, t) in unet {
            if let Some(rest) = k.strip_prefix(UNET_PREFIX) {
                if SHARED.iter().any(|p| rest.starts_with(p)) {
                    w.insert(rest.to_string(), t.clone());
                }
            }
        }
        for (k, t) in &m.weights {
            if (k.ends_with(".weight") || k.ends_with(".bias")) && !k.contains("__") {
                w.insert(k.clone(), t.clone());
            }
        }
        for (k, up) in &m.weights {
            let Some(base) = k.strip_suffix(".up") else {
                continue;
            };
            if base.contains("__") {
                continue;
            }
            let down = &m.weights[&format!("{base}.down")];
            let wk = format!("{base}.weight");
            let Some(weight) = w.get(&wk) else {
                return Err(ModelError::BadInput(format!(
                    "the Control-LoRA has {k} but neither it nor the model has {wk}: it \
                     belongs to another model family"
                )));
            };
            let up = up.to_dtype(DType::F32)?.flatten_from(1)?;
            let down = down.to_dtype(DType::F32)?.flatten_from(1)?;
            let delta = up.matmul(&down).map_err(|e| {
                ModelError::BadInput(format!("the Control-LoRA's {base} up/down: {e}"))
            })?;
            if delta.elem_count() != weight.elem_count() {
                return Err(ModelError::BadInput(format!(
                    "the Control-LoRA's {base} up·down is {:?}, the weight is {:?}: it belongs \
                     to another model",
                    delta.dims(),
                    weight.dims()
                )));
            }
            let delta = delta.reshape(weight.dims())?;
            let sum = (crate::models::nn::widen(weight, DType::F32)? + delta)?;
            w.insert(wk, sum);
        }
        let w: WeightMap = w
            .into_iter()
            .map(|(k, t)| Ok((k, crate::models::nn::widen(&t, m.dtype)?)))
            .collect::<std::result::Result<_, candle_core::Error>>()?;
        ControlNet::from_weights(&w, "", m.dtype, &m.device)
    }
}
