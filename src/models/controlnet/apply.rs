//! One applied ControlNet: ComfyUI's `ControlNet` object after `copy().set_cond_hint(...)`
//! and `set_previous_controlnet(...)` (`comfy/controlnet.py`), and its `get_control` for one
//! batched model call.
//!
//! A CONDITIONING entry holds an `Arc<ControlLink>`; entries holding the *same* link batch
//! together (ComfyUI compares the objects by identity), and a chain is a link whose
//! `previous` is the link the entry held before.
//!
//! The hint ("`cond_hint`") is prepared once per latent size: resized to 8× the latent
//! (nearest-exact, centre crop); for the SD3 ControlNets (`latent_format` set, compression 1
//! × the VAE's 8) then preprocessed, encoded by the VAE, `process_in`-scaled and, for a
//! 17-channel inpaint ControlNet, given a mask channel of ones.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use super::{ControlModel, ControlResiduals};
use crate::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
use crate::models::diffusion::DiffusionNet;
use crate::models::vae::Vae;
use crate::models::{ModelError, Result};

/// What `get_control` sees of one batched model call.
pub struct ControlStep<'a> {
    /// The batch's noisy latent [n, C, h, w] (before `calculate_input`; no concat channels).
    pub x_noisy: &'a Tensor,
    /// `model_sampling.calculate_input(σ, x_noisy)`.
    pub x_in: &'a Tensor,
    pub sigma: f64,
    /// `model_sampling.timestep(σ)`.
    pub timestep: f32,
    /// The batch's `c_crossattn` [n, T, D].
    pub context: &'a Tensor,
    /// The batch's `y` (SDXL's ADM vector, SD3's pooled text) [n, adm].
    pub y: Option<&'a Tensor>,
    /// How many conds were batched (`len(cond_or_uncond)`).
    pub batched_number: usize,
    /// The model sampling's `percent_to_sigma` (ComfyUI's `pre_run`).
    pub percent_to_sigma: &'a dyn Fn(f64) -> f64,
    /// The diffusion network being sampled (SD3.5 ControlNets use its `x_embedder`, as
    /// ComfyUI's `ControlNetSD35.pre_run` copies it in).
    pub model: &'a DiffusionNet,
    /// The sampled model's weights (keys under `model.diffusion_model.`) when it carries no
    /// LoRA patches: a Control-LoRA is built from them (ComfyUI's `ControlLora.pre_run`).
    pub model_weights: Option<&'a Arc<crate::models::checkpoint::WeightMap>>,
}

/// A ControlNet with its hint, strength, timestep range and the previous ControlNet of the
/// chain.
pub struct ControlLink {
    pub model: ControlModel,
    /// `image.movedim(-1, 1)`: [B, C, H, W] f32 on the CPU.
    pub hint: Tensor,
    pub strength: f64,
    /// (start, end) percent of the schedule.
    pub percent_range: (f64, f64),
    pub previous: Option<Arc<ControlLink>>,
    /// The VAE that encodes the hint of a latent-hint ControlNet (SD3); ignored by the
    /// others, as ComfyUI's `set_cond_hint` does.
    pub vae: Option<Vae>,
    /// The prepared hint for the last latent size (h, w), cached like ComfyUI's
    /// `cond_hint`.
    prepared: Mutex<Option<((usize, usize), Tensor)>>,
    /// A T2I-Adapter's features for the last latent size, computed once (ComfyUI's
    /// `control_input`).
    features: Mutex<Option<((usize, usize), ControlResiduals)>>,
}

impl std::fmt::Debug for ControlLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ControlLink({:?}, hint {:?}, strength {}, range {:?}, previous {})",
            self.model,
            self.hint.dims(),
            self.strength,
            self.percent_range,
            self.previous.is_some()
        )
    }
}

/// `broadcast_image_to(tensor, target_batch_size, batched_number)`.
fn broadcast_image_to(t: &Tensor, target: usize, batched_number: usize) -> Result<Tensor> {
    let current = t.dim(0)?;
    if current == 1 {
        return Ok(t.clone());
    }
    let per_batch = target / batched_number.max(1);
    let mut t = t.narrow(0, 0, per_batch.min(current))?;
    let have = t.dim(0)?;
    if per_batch > have {
        let mut parts = vec![t.clone(); per_batch / have];
        if !per_batch.is_multiple_of(have) {
            parts.push(t.narrow(0, 0, per_batch % have)?);
        }
        t = Tensor::cat(&parts, 0)?;
    }
    if t.dim(0)? == target {
        Ok(t)
    } else {
        Ok(Tensor::cat(&vec![t; batched_number], 0)?)
    }
}

impl ControlLink {
    /// `control_net.copy().set_cond_hint(hint, strength, range, vae)` +
    /// `set_previous_controlnet(previous)`.
    pub fn new(
        model: ControlModel,
        hint: Tensor,
        strength: f64,
        percent_range: (f64, f64),
        previous: Option<Arc<ControlLink>>,
        vae: Option<Vae>,
    ) -> Self {
        let vae = if model.needs_vae() { vae } else { None };
        ControlLink {
            model,
            hint,
            strength,
            percent_range,
            previous,
            vae,
            prepared: Mutex::new(None),
            features: Mutex::new(None),
        }
    }

    fn global_average_pooling(&self) -> bool {
        match &self.model {
            ControlModel::Cldm(f) => f.global_average_pooling,
            ControlModel::Sd3(_) | ControlModel::T2i(_) | ControlModel::Lora(_) => false,
        }
    }

    /// The hint image resized to `w`×`h` pixels (nearest-exact, centre crop), [B, C, h, w].
    fn resized(&self, w: usize, h: usize) -> Result<Tensor> {
        let src = Planes::from_nchw(&self.hint.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)?;
        let out = common_upscale(
            &src,
            w,
            h,
            UpscaleMethod::NearestExact,
            Crop::Center,
            TorchLayout::ChannelsLast,
        )
        .map_err(|e| ModelError::BadInput(format!("the ControlNet hint image: {e}")))?;
        Ok(out.to_nchw()?)
    }

    /// The hint for a latent of h×w (cached per size): the image at 8× the latent for cldm
    /// ControlNets, the processed hint latent for SD3 ones.
    fn hint_for(&self, h: usize, w: usize) -> Result<Tensor> {
        let mut slot = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((size, t)) = slot.as_ref() {
            if *size == (h, w) {
                return Ok(t.clone());
            }
        }
        let t = match &self.model {
            ControlModel::Cldm(_) | ControlModel::Lora(_) => self.resized(w * 8, h * 8)?,
            ControlModel::T2i(a) => {
                let (tw, th) = a.scale_image_to(w * 8, h * 8);
                let img = self.resized(tw, th)?;
                if a.input_channels() == 1 && img.dim(1)? > 1 {
                    img.mean_keepdim(1)?
                } else {
                    img
                }
            }
            ControlModel::Sd3(net) => {
                let vae = self.vae.as_ref().ok_or_else(|| {
                    ModelError::BadInput(
                        "This Controlnet needs a VAE but none was provided, please use a \
                         ControlNetApply node with a VAE input and connect it."
                            .into(),
                    )
                })?;
                let f = vae.config().downscale();
                let img = net.preprocess().apply(&self.resized(w * f, h * f)?)?;
                let c = img.dim(1)?;
                if c < 3 {
                    return Err(ModelError::BadInput(format!(
                        "the ControlNet hint image has {c} channels; the VAE encodes 3"
                    )));
                }
                let z = vae.encode(&img.permute((0, 2, 3, 1))?.contiguous()?)?;
                let zc = z.dim(1)?;
                if zc != 16 {
                    return Err(ModelError::BadInput(format!(
                        "the VAE gives {zc}-channel latents; {} takes SD3's 16-channel \
                         latents: connect the SD3/SD3.5 model's VAE",
                        self.model.kind_name()
                    )));
                }
                let mut z = net.latent_format().process_in(&z)?;
                if net.hint_channels() == 17 {
                    // `concat_mask`: a mask of ones at the latent's size.
                    let (b, _, zh, zw) = z.dims4()?;
                    let ones = Tensor::ones((b, 1, zh, zw), DType::F32, z.device())?;
                    z = Tensor::cat(&[&z, &ones], 1)?;
                }
                z
            }
        };
        *slot = Some(((h, w), t.clone()));
        Ok(t)
    }

    /// The batch's hint (prepared, broadcast to the batch) and timesteps.
    fn step_hint(&self, s: &ControlStep) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = s.x_noisy.dims4()?;
        let mut hint = self.hint_for(h, w)?;
        if hint.dim(0)? != n {
            hint = broadcast_image_to(&hint, n, s.batched_number)?;
        }
        let ts = Tensor::from_vec(vec![s.timestep; n], n, s.x_in.device())?;
        Ok((hint, ts))
    }

    /// `T2IAdapter.get_control`'s `control_input`: the adapter run once on the (broadcast)
    /// hint per latent size, reused for every later step.
    fn t2i_features(&self, a: &super::T2iAdapter, s: &ControlStep) -> Result<ControlResiduals> {
        let (_, _, h, w) = s.x_noisy.dims4()?;
        let mut slot = self.features.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((size, f)) = slot.as_ref() {
            if *size == (h, w) {
                return Ok(f.clone());
            }
        }
        let (hint, _) = self.step_hint(s)?;
        let f = a.forward(&hint)?;
        *slot = Some(((h, w), f.clone()));
        Ok(f)
    }

    /// `ControlNet.get_control`: the previous link's residuals, then (inside the timestep
    /// range) this network's, scaled by the strength and added to the previous ones.
    pub fn get_control(&self, s: &ControlStep) -> Result<Option<ControlResiduals>> {
        let prev = match &self.previous {
            Some(p) => p.get_control(s)?,
            None => None,
        };
        let sigma = s.sigma as f32;
        let start = (s.percent_to_sigma)(self.percent_range.0) as f32;
        let end = (s.percent_to_sigma)(self.percent_range.1) as f32;
        if sigma > start || sigma < end {
            return Ok(prev);
        }
        let control = match (&self.model, s.model) {
            (ControlModel::Cldm(f), DiffusionNet::Unet(_)) => {
                let (hint, ts) = self.step_hint(s)?;
                f.net.forward(s.x_in, &hint, &ts, s.context, s.y)?
            }
            (ControlModel::Sd3(net), DiffusionNet::Mmdit(m)) => {
                let (hint, ts) = self.step_hint(s)?;
                net.forward(s.x_in, &hint, &ts, s.context, s.y, m)?
            }
            (ControlModel::T2i(a), DiffusionNet::Unet(_)) => self.t2i_features(a, s)?,
            (ControlModel::Lora(cl), DiffusionNet::Unet(_)) => {
                let weights = s.model_weights.ok_or_else(|| {
                    ModelError::NotSupported(
                        "a Control-LoRA on a LoRA-patched model: comfyrs builds Control-LoRAs \
                         from the unpatched model only"
                            .into(),
                    )
                })?;
                let net = cl.network(weights)?;
                let (hint, ts) = self.step_hint(s)?;
                net.forward(s.x_in, &hint, &ts, s.context, s.y)?
            }
            (cm, model) => {
                let family = match model {
                    DiffusionNet::Unet(_) => "an SD1.x/SDXL UNet",
                    DiffusionNet::Flux(_) => "Flux",
                    DiffusionNet::Mmdit(_) => "SD3/SD3.5 (MMDiT)",
                };
                return Err(ModelError::BadInput(format!(
                    "the ControlNet is {}, the model being sampled is {family}: use a \
                     ControlNet made for this model",
                    cm.kind_name()
                )));
            }
        };
        Ok(Some(self.merge(control, prev)?))
    }

    /// `control_merge`: strength (and global average pooling) on this link's residuals,
    /// then `prev + o` per position.
    fn merge(
        &self,
        control: ControlResiduals,
        prev: Option<ControlResiduals>,
    ) -> Result<ControlResiduals> {
        let scale = |list: Vec<Option<Tensor>>| -> Result<Vec<Option<Tensor>>> {
            list.into_iter()
                .map(|x| match x {
                    None => Ok(None),
                    Some(x) => {
                        let x = if self.global_average_pooling() {
                            let (_, _, h, w) = x.dims4()?;
                            x.mean_keepdim(3)?.mean_keepdim(2)?.repeat((1, 1, h, w))?
                        } else {
                            x
                        };
                        Ok(Some((x * self.strength)?))
                    }
                })
                .collect()
        };
        let mut out = ControlResiduals {
            input: scale(control.input)?,
            middle: scale(control.middle)?,
            output: scale(control.output)?,
        };
        if let Some(prev) = prev {
            let add = |o: &mut Vec<Option<Tensor>>, p: Vec<Option<Tensor>>| -> Result<()> {
                for (i, pv) in p.into_iter().enumerate() {
                    if i >= o.len() {
                        o.push(pv);
                    } else if let Some(pv) = pv {
                        o[i] = Some(match o[i].take() {
                            None => pv,
                            Some(x) => pv.broadcast_add(&x)?,
                        });
                    }
                }
                Ok(())
            };
            add(&mut out.input, prev.input)?;
            add(&mut out.middle, prev.middle)?;
            add(&mut out.output, prev.output)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_like_comfyui() {
        let t = Tensor::arange(0f32, 3.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 1, 1))
            .unwrap();
        // 3 images, 2 conds of batch 2: the first 2 images, twice.
        let b = broadcast_image_to(&t, 4, 2).unwrap();
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0.0, 1.0, 0.0, 1.0]);
        // 2 images, 1 cond of batch 5: 0 1 0 1 0.
        let t2 = t.narrow(0, 0, 2).unwrap();
        let b = broadcast_image_to(&t2, 5, 1).unwrap();
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0.0, 1.0, 0.0, 1.0, 0.0]);
        // A single image is left for broadcasting.
        let one = t.narrow(0, 0, 1).unwrap();
        assert_eq!(broadcast_image_to(&one, 4, 2).unwrap().dim(0).unwrap(), 1);
    }
}
