//! InstructPixToPixConditioning (`comfy_extras/nodes_ip2p.py`): the image's latent as
//! `concat_latent_image` on both conditionings, and an all-zero latent of its size. Models
//! whose input takes extra channels concatenate it to the latent (Flux Canny/Depth through
//! `model_base.Flux.concat_cond`, see `crate::sampling::conds::flux_concat`).

use super::sd_types::{Conditioning, SdVae};
use crate::node::types::{Image, Latent};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

/// The pixels cropped (centered) to multiples of 8, as the node encodes them.
pub fn crop_to_8(pixels: &candle_core::Tensor) -> Result<candle_core::Tensor, NodeError> {
    let dims = pixels.dims().to_vec();
    if dims.len() != 4 || dims[1] < 8 || dims[2] < 8 {
        return Err(NodeError::input(
            "pixels",
            format!("expected an IMAGE [B, H, W, C] of at least 8x8 px, got shape {dims:?}"),
        ));
    }
    let (h, w) = (dims[1], dims[2]);
    let (nh, nw) = (h / 8 * 8, w / 8 * 8);
    if (nh, nw) == (h, w) {
        return Ok(pixels.clone());
    }
    let (oy, ox) = ((h % 8) / 2, (w % 8) / 2);
    Ok(pixels.narrow(1, oy, nh)?.narrow(2, ox, nw)?)
}

struct InstructPixToPixConditioning;
impl Node for InstructPixToPixConditioning {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("InstructPixToPixConditioning")
            .category("conditioning/instructpix2pix")
            .module("comfy_extras.nodes_ip2p")
            .v3()
            .input(InputSpec::of("positive", "CONDITIONING"))
            .input(InputSpec::of("negative", "CONDITIONING"))
            .input(InputSpec::of("vae", "VAE"))
            .input(InputSpec::of("pixels", "IMAGE"))
            .output(OutputSpec::new("CONDITIONING").named("positive"))
            .output(OutputSpec::new("CONDITIONING").named("negative"))
            .output(OutputSpec::new("LATENT").named("latent"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let positive = i.object::<Conditioning>("positive")?;
        let negative = i.object::<Conditioning>("negative")?;
        let vae = i.object::<SdVae>("vae")?;
        let pixels = i.object::<Image>("pixels")?;
        let px = crop_to_8(&pixels.0)?;
        ctx.check_interrupt()?;
        let concat_latent = vae
            .0
            .encode(&px)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        let latent = Latent::new(concat_latent.zeros_like()?);
        let with_concat = |c: &Conditioning| {
            let mut c = c.clone();
            for e in &mut c.0 {
                e.opts.concat_latent_image = Some(concat_latent.clone());
            }
            Value::object(c)
        };
        Ok(NodeOutput::values(vec![
            with_concat(&positive),
            with_concat(&negative),
            Value::object(latent),
        ]))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(InstructPixToPixConditioning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn crops_centered_to_multiples_of_8() {
        let px = Tensor::arange(0f32, (13 * 19 * 3) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 13, 19, 3))
            .unwrap();
        let c = crop_to_8(&px).unwrap();
        assert_eq!(c.dims(), &[1, 8, 16, 3]);
        // offsets (13 % 8) / 2 = 2 rows, (19 % 8) / 2 = 1 column.
        let first = c.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert_eq!(first, ((2 * 19 + 1) * 3) as f32);
        let e = crop_to_8(&px.narrow(1, 0, 7).unwrap()).unwrap_err();
        assert!(e.to_string().contains("at least 8x8"), "{e}");
    }
}
