//! `MaskPreview+`: shows a MASK as a grey image, saved to the temp folder the way ComfyUI's
//! PreviewImage saves (the pack's class derives from SaveImage): prefix `ComfyUI_temp_` plus
//! five random letters chosen once per node, PNG compression level 4, the prompt and workflow
//! as PNG text chunks.

use candle_core::Tensor;
use comfyrs::node::types::Mask;
use comfyrs::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema,
};
use comfyrs::nodes::image_io::save_images;
use serde_json::{json, Map};

/// The letters the pack draws the suffix from (its alphabet has no `w` and two `p`s).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstupvxyz";

pub(crate) struct MaskPreview;
impl Node for MaskPreview {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("MaskPreview+")
            .display("\u{1f527} Mask Preview")
            .category("essentials/mask")
            .description("Saves the input images to your ComfyUI output directory.")
            .input(InputSpec::of("mask", "MASK"))
            .hidden(Hidden::Prompt)
            .hidden(Hidden::ExtraPngInfo)
            .output_node()
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mask = i.object::<Mask>("mask")?;
        let dims = mask.0.dims();
        if dims.len() < 2 {
            return Err(NodeError::input(
                "mask",
                format!("a MASK needs at least 2 dimensions, got shape {dims:?}"),
            ));
        }
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let n = mask.0.elem_count() / (h * w).max(1);
        // [N, H, W, 1] repeated to three channels.
        let image: Tensor = mask
            .0
            .reshape((n, h, w, 1))?
            .broadcast_as((n, h, w, 3))?
            .contiguous()?;
        let append = match ctx.state.as_ref().and_then(|s| s.downcast_ref::<String>()) {
            Some(s) => s.clone(),
            None => {
                let letters: String = (0..5)
                    .map(|_| LETTERS[rand::random_range(0..LETTERS.len())] as char)
                    .collect();
                let s = format!("_temp_{letters}");
                *ctx.state = Some(Box::new(s.clone()));
                s
            }
        };
        let results = save_images(
            &image,
            &format!("ComfyUI{append}"),
            &ctx.env.paths.temp,
            "temp",
            4,
            Some(ctx.prompt.json()),
            ctx.extra_pnginfo,
        )?;
        let mut ui = Map::new();
        ui.insert("images".into(), json!(results));
        Ok(NodeOutput::ui(ui))
    }
}
