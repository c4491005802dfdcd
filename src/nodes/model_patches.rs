//! MODEL patches of the UNet's internals (`comfy_extras/nodes_freelunch.py`'s FreeU and
//! FreeU_V2, `comfy_extras/nodes_model_downscale.py`'s PatchModelAddDownscale,
//! `comfy_extras/nodes_hypertile.py`'s HyperTile): each returns a
//! copy of the model with [`crate::sampling::unet_patches`] entries, which the UNet applies on
//! its skip connections and input blocks at every evaluation.

use super::sd_types::SdModel;
use crate::image_ops::UpscaleMethod;
use crate::models::diffusion::DiffusionNet;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use crate::sampling::unet_patches::{Downscale, FreeU, HyperTile, HyperTileRng, OutputPatch};

fn factor(name: &str, default: f64) -> InputSpec {
    InputSpec::float(name)
        .default(default)
        .min(0.0)
        .max(10.0)
        .step(0.01)
}

fn freeu_schema(class: &str, b1: f64, b2: f64) -> NodeSchema {
    NodeSchema::new(class)
        .category("model_patches/unet")
        .module("comfy_extras.nodes_freelunch")
        .input(InputSpec::of("model", "MODEL"))
        .input(factor("b1", b1))
        .input(factor("b2", b2))
        .input(factor("s1", 0.9))
        .input(factor("s2", 0.2))
        .output(OutputSpec::new("MODEL"))
}

fn freeu_execute(class: &str, i: &Inputs, v2: bool) -> Result<NodeOutput, NodeError> {
    let mut m = (*i.object::<SdModel>("model")?).clone();
    let model_channels = match m.diffusion.base() {
        DiffusionNet::Unet(u) => u.config().model_channels,
        _ => {
            return Err(NodeError::input(
                "model",
                format!(
                    "{class} patches a UNet's skip connections; this {} model has none",
                    m.family.comfy_name()
                ),
            ))
        }
    };
    m.unet_patches.output_block.push(OutputPatch::FreeU(FreeU {
        b1: i.float("b1")?,
        b2: i.float("b2")?,
        s1: i.float("s1")?,
        s2: i.float("s2")?,
        v2,
        model_channels,
    }));
    Ok(NodeOutput::one(Value::object(m)))
}

struct FreeUNode;
impl Node for FreeUNode {
    fn schema(&self) -> NodeSchema {
        freeu_schema("FreeU", 1.1, 1.2)
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        freeu_execute("FreeU", i, false)
    }
}

struct FreeUV2Node;
impl Node for FreeUV2Node {
    fn schema(&self) -> NodeSchema {
        freeu_schema("FreeU_V2", 1.3, 1.4)
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        freeu_execute("FreeU_V2", i, true)
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(FreeUNode)?;
    r.register(FreeUV2Node)?;
    r.register(PatchModelAddDownscale)?;
    r.register(HyperTileNode)?;
    Ok(())
}

/// The node's combo order (not LatentUpscale's).
const DOWNSCALE_METHODS: [&str; 5] = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"];

fn downscale_method(i: &Inputs, name: &str) -> Result<UpscaleMethod, NodeError> {
    let v = i.string(name)?;
    UpscaleMethod::from_name(v)
        .filter(|_| DOWNSCALE_METHODS.contains(&v))
        .ok_or_else(|| {
            NodeError::input(
                name,
                format!("{v:?} is not one of {}", DOWNSCALE_METHODS.join(", ")),
            )
        })
}

struct PatchModelAddDownscale;
impl Node for PatchModelAddDownscale {
    fn schema(&self) -> NodeSchema {
        let percent = |name: &str, default: f64| {
            InputSpec::float(name)
                .default(default)
                .min(0.0)
                .max(1.0)
                .step(0.001)
        };
        NodeSchema::new("PatchModelAddDownscale")
            .display("PatchModelAddDownscale (Kohya Deep Shrink)")
            .category("model_patches/unet")
            .module("comfy_extras.nodes_model_downscale")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .input(
                InputSpec::int("block_number")
                    .default(3)
                    .min(1)
                    .max(32)
                    .step(1),
            )
            .input(
                InputSpec::float("downscale_factor")
                    .default(2.0)
                    .min(0.1)
                    .max(9.0)
                    .step(0.001),
            )
            .input(percent("start_percent", 0.0))
            .input(percent("end_percent", 0.35))
            .input(InputSpec::boolean("downscale_after_skip").default(true))
            .input(InputSpec::combo("downscale_method", &DOWNSCALE_METHODS))
            .input(InputSpec::combo("upscale_method", &DOWNSCALE_METHODS))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut m = (*i.object::<SdModel>("model")?).clone();
        let block = i.int("block_number")?;
        let factor = i.float("downscale_factor")?;
        if factor.is_nan() || factor <= 0.0 {
            return Err(NodeError::input(
                "downscale_factor",
                format!("{factor} is not a positive factor"),
            ));
        }
        let percent = |name: &str| -> Result<f64, NodeError> {
            let v = i.float(name)?;
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(NodeError::input(name, format!("{v} is outside 0..=1")))
            }
        };
        let down = Downscale {
            // A negative block number matches no block (ComfyUI compares and never equals).
            block: usize::try_from(block).unwrap_or(usize::MAX),
            factor,
            sigma_start: m.sampling.percent_to_sigma(percent("start_percent")?),
            sigma_end: m.sampling.percent_to_sigma(percent("end_percent")?),
            after_skip: i.boolean("downscale_after_skip")?,
            method: downscale_method(i, "downscale_method")?,
        };
        let up = downscale_method(i, "upscale_method")?;
        m.unet_patches.input_block.push(down);
        m.unet_patches.output_block.push(OutputPatch::MatchSkip(up));
        Ok(NodeOutput::one(Value::object(m)))
    }
}

struct HyperTileNode;
impl Node for HyperTileNode {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("HyperTile")
            .category("model_patches/unet")
            .module("comfy_extras.nodes_hypertile")
            .v3()
            .input(InputSpec::of("model", "MODEL"))
            .input(InputSpec::int("tile_size").default(256).min(1).max(2048))
            .input(InputSpec::int("swap_size").default(2).min(1).max(128))
            .input(InputSpec::int("max_depth").default(0).min(0).max(10))
            .input(InputSpec::boolean("scale_depth").default(false))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let count = |name: &str, min: i64| -> Result<usize, NodeError> {
            let v = i.int(name)?;
            usize::try_from(v)
                .ok()
                .filter(|&u| u as i64 >= min)
                .ok_or_else(|| NodeError::input(name, format!("{v} is below {min}")))
        };
        let tile = count("tile_size", 1)?;
        let mut m = (*i.object::<SdModel>("model")?).clone();
        m.unet_patches.hypertile = Some(HyperTile {
            latent_tile_size: tile.max(32) / 8,
            swap_size: count("swap_size", 1)?,
            max_depth: count("max_depth", 0)?,
            scale_depth: i.boolean("scale_depth")?,
            rng: HyperTileRng::default(),
        });
        Ok(NodeOutput::one(Value::object(m)))
    }
}
