//! SaveImageWebsocket (ComfyUI's `custom_nodes/websocket_image_save.py`, which ComfyUI loads
//! by default): each image of the batch goes to the client that queued the prompt as a PNG
//! over its WebSocket, carried by the node's progress reports exactly as ComfyUI's progress
//! bar carries previews (a `PREVIEW_IMAGE` frame with format 2, or `PREVIEW_IMAGE_WITH_METADATA`
//! for clients that announce `supports_preview_metadata`). Nothing is written to disk and the
//! node has no UI output, so history records nothing for it.

use super::image_io::{encode_png_with_text, tensor_to_images8};
use crate::env::Environment;
use crate::node::types::Image;
use crate::node::{
    Fingerprint, InputSpec, Inputs, LiteralInputs, Node, NodeContext, NodeError, NodeOutput,
    NodeSchema, PreviewImage, Registry, RegistryError,
};

/// The zlib level ComfyUI's `send_image` saves with (`compress_level=1`).
const COMPRESS_LEVEL: u8 = 1;

struct SaveImageWebsocket;

impl Node for SaveImageWebsocket {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveImageWebsocket")
            .display("SaveImageWebsocket")
            .category("api/image")
            .module("custom_nodes.websocket_image_save")
            .input(InputSpec::of("images", "IMAGE"))
            .output_node()
    }

    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let images = i.object::<Image>("images")?;
        let frames = tensor_to_images8(&images.0).map_err(|e| NodeError::input("images", e))?;
        let total = frames.len() as u64;
        // ComfyUI's loop: `pbar.update_absolute(step, total, ("PNG", img, None))` with step
        // counting from 0, so the last report says total - 1 of total.
        for (step, frame) in frames.iter().enumerate() {
            let png = encode_png_with_text(frame, &[], COMPRESS_LEVEL)?;
            ctx.progress_with_preview(step as u64, total, Some(PreviewImage::png(png)))?;
        }
        Ok(NodeOutput::default())
    }

    /// ComfyUI's IS_CHANGED returns `time.time()`: the images are sent on every run.
    fn fingerprint(&self, _env: &Environment, _inputs: &LiteralInputs) -> Fingerprint {
        Fingerprint::Always
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(SaveImageWebsocket)
}
