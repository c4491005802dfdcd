//! `MaskPreview+`: shows a MASK as a grey image, saved to the temp folder the way ComfyUI's
//! PreviewImage saves (the pack's class derives from SaveImage): prefix `ComfyUI_temp_` plus
//! five random letters chosen once per node, PNG compression level 4, the prompt and workflow
//! as PNG text chunks.

use comfyrs::node::types::Mask;
use comfyrs::node::{
    Hidden, InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema,
};
use comfyrs::nodes::image_io::{mask_preview_image, save_preview};

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
        save_preview(ctx, &mask_preview_image(&mask.0)?, 4)
    }
}
