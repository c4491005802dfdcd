//! EmptyLatentImage (nodes.py).

use crate::node::types::Latent;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use candle_core::{DType, Device, Tensor};

const MAX_RESOLUTION: i64 = 16384;

struct EmptyLatentImage;
impl Node for EmptyLatentImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyLatentImage")
            .display("Empty Latent Image")
            .category("latent")
            .description("Create a new batch of empty latent images to be denoised via sampling.")
            .input(
                InputSpec::int("width")
                    .default(512)
                    .min(16)
                    .max(MAX_RESOLUTION)
                    .step(8)
                    .tooltip("The width of the latent images in pixels."),
            )
            .input(
                InputSpec::int("height")
                    .default(512)
                    .min(16)
                    .max(MAX_RESOLUTION)
                    .step(8)
                    .tooltip("The height of the latent images in pixels."),
            )
            .input(
                InputSpec::int("batch_size")
                    .default(1)
                    .min(1)
                    .max(4096)
                    .tooltip("The number of latent images in the batch."),
            )
            .output(OutputSpec::new("LATENT").tooltip("The empty latent image batch."))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let dim = |n: &str| -> Result<usize, NodeError> {
            let v = i.int(n)?;
            if v < 0 {
                return Err(NodeError::input(n, "must not be negative"));
            }
            Ok(v as usize)
        };
        let (w, h, b) = (dim("width")?, dim("height")?, dim("batch_size")?);
        let t = Tensor::zeros((b, 4, h / 8, w / 8), DType::F32, &Device::Cpu)?;
        Ok(NodeOutput::one(Value::object(Latent::new(t))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(EmptyLatentImage)?;
    Ok(())
}
