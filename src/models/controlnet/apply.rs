//! One applied ControlNet: ComfyUI's `ControlNet` object after `copy().set_cond_hint(...)`
//! and `set_previous_controlnet(...)` (`comfy/controlnet.py`), and its `get_control` for one
//! batched model call.
//!
//! A CONDITIONING entry holds an `Arc<ControlLink>`; entries holding the *same* link batch
//! together (ComfyUI compares the objects by identity), and a chain is a link whose
//! `previous` is the link the entry held before.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use super::{ControlNet, ControlResiduals};
use crate::image_ops::{common_upscale, Crop, Planes, TorchLayout, UpscaleMethod};
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
    /// The batch's `y` (SDXL's ADM vector) [n, adm].
    pub y: Option<&'a Tensor>,
    /// How many conds were batched (`len(cond_or_uncond)`).
    pub batched_number: usize,
    /// The model sampling's `percent_to_sigma` (ComfyUI's `pre_run`).
    pub percent_to_sigma: &'a dyn Fn(f64) -> f64,
}

/// A ControlNet with its hint, strength, timestep range and the previous ControlNet of the
/// chain.
pub struct ControlLink {
    pub net: ControlNet,
    /// `image.movedim(-1, 1)`: [B, C, H, W] f32 on the CPU.
    pub hint: Tensor,
    pub strength: f64,
    /// (start, end) percent of the schedule.
    pub percent_range: (f64, f64),
    pub previous: Option<Arc<ControlLink>>,
    pub global_average_pooling: bool,
    /// The hint resized to the last latent size ([`common_upscale`] to 8× the latent,
    /// nearest-exact, centre crop), cached like ComfyUI's `cond_hint`.
    resized: Mutex<Option<Tensor>>,
}

impl std::fmt::Debug for ControlLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ControlLink({:?}, hint {:?}, strength {}, range {:?}, previous {})",
            self.net,
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
    /// `control_net.copy().set_cond_hint(hint, strength, range)` +
    /// `set_previous_controlnet(previous)`.
    pub fn new(
        net: ControlNet,
        hint: Tensor,
        strength: f64,
        percent_range: (f64, f64),
        previous: Option<Arc<ControlLink>>,
        global_average_pooling: bool,
    ) -> Self {
        ControlLink {
            net,
            hint,
            strength,
            percent_range,
            previous,
            global_average_pooling,
            resized: Mutex::new(None),
        }
    }

    /// The hint at 8× the latent size (cached per size).
    fn hint_for(&self, h: usize, w: usize) -> Result<Tensor> {
        let mut slot = self.resized.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            let (_, _, th, tw) = t.dims4()?;
            if (th, tw) == (h * 8, w * 8) {
                return Ok(t.clone());
            }
        }
        let src = Planes::from_nchw(&self.hint.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)?;
        let out = common_upscale(
            &src,
            w * 8,
            h * 8,
            UpscaleMethod::NearestExact,
            Crop::Center,
            TorchLayout::ChannelsLast,
        )
        .map_err(|e| ModelError::BadInput(format!("the ControlNet hint image: {e}")))?;
        let t = out.to_nchw()?;
        *slot = Some(t.clone());
        Ok(t)
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
        let (n, _, h, w) = s.x_noisy.dims4()?;
        let mut hint = self.hint_for(h, w)?;
        if hint.dim(0)? != n {
            hint = broadcast_image_to(&hint, n, s.batched_number)?;
        }
        let ts = Tensor::from_vec(vec![s.timestep; n], n, s.x_in.device())?;
        let control = self.net.forward(s.x_in, &hint, &ts, s.context, s.y)?;
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
                        let x = if self.global_average_pooling {
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
