//! VAEDecode and VAEEncode (nodes.py). LATENT holds unscaled VAE latents.

use super::sd_types::SdVae;
use crate::node::types::{Image, Latent};
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

struct VaeDecode;
impl Node for VaeDecode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEDecode")
            .display("VAE Decode")
            .category("latent")
            .description("Decodes latent images back into pixel space images.")
            .input(InputSpec::of("samples", "LATENT").tooltip("The latent to be decoded."))
            .input(
                InputSpec::of("vae", "VAE").tooltip("The VAE model used for decoding the latent."),
            )
            .output(OutputSpec::new("IMAGE").tooltip("The decoded image."))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let latent = i.object::<Latent>("samples")?;
        ctx.check_interrupt()?;
        let img = vae
            .0
            .decode(&latent.samples)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(NodeOutput::one(Value::object(Image(img))))
    }
}

struct VaeEncode;
impl Node for VaeEncode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("VAEEncode")
            .display("VAE Encode")
            .category("latent")
            .input(InputSpec::of("pixels", "IMAGE"))
            .input(InputSpec::of("vae", "VAE"))
            .output(OutputSpec::new("LATENT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let vae = i.object::<SdVae>("vae")?;
        let pixels = i.object::<Image>("pixels")?;
        ctx.check_interrupt()?;
        let z = vae
            .0
            .encode(&pixels.0)
            .map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(NodeOutput::one(Value::object(Latent::new(z))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(VaeDecode)?;
    r.register(VaeEncode)?;
    Ok(())
}
