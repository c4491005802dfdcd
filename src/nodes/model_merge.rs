//! Model merging (`comfy_extras/nodes_model_merging.py`, `nodes_model_merging_model_specific.py`):
//! ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, CLIPMergeSimple,
//! CLIPMergeSubtract, CLIPMergeAdd and the block-wise nodes of the families comfyrs runs
//! (ModelMergeSD1, ModelMergeSD2, ModelMergeSDXL, ModelMergeSD3_2B, ModelMergeSD35_Large,
//! ModelMergeFlux1). As in ComfyUI each is a patch on model 1 ([`MergeSource`]): model 2's
//! weights (with its own patches) at `strength_patch`, model 1's own weight scaled by
//! `strength_model`, computed when the model is first evaluated; nothing is copied here.

use std::sync::Arc;

use super::sd_types::{SdClip, SdModel};
use crate::models::lora::{MergeSource, MergeStrengths, PatchCache, PatchEntry, PatchedClip};
use crate::models::unet::UNET_PREFIX;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};

const CATEGORY: &str = "advanced/model_merging";

fn ratio(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .min(0.0)
        .max(1.0)
        .step(0.01)
}

fn multiplier() -> InputSpec {
    InputSpec::float("multiplier")
        .default(1.0)
        .min(-10.0)
        .max(10.0)
        .step(0.01)
}

fn module(s: NodeSchema) -> NodeSchema {
    s.module("comfy_extras.nodes_model_merging")
}

/// `model1` with `model2`'s diffusion weights merged in at `strengths`.
pub fn merge_models(
    ctx: &NodeContext,
    model1: &SdModel,
    model2: &SdModel,
    strengths: MergeStrengths,
) -> SdModel {
    let cache = ctx.env.resources.get_or_default::<PatchCache>();
    merge_models_with(model1, model2, strengths, cache)
}

/// [`merge_models`] with an explicit patch cache.
pub fn merge_models_with(
    model1: &SdModel,
    model2: &SdModel,
    strengths: MergeStrengths,
    cache: Arc<PatchCache>,
) -> SdModel {
    let d2 = &model2.diffusion;
    let source = MergeSource {
        weights: d2.base_weights().clone(),
        patches: d2.patches().to_vec(),
        src_root: UNET_PREFIX.to_string(),
        dst_root: UNET_PREFIX.to_string(),
        skip_suffixes: Vec::new(),
        strengths,
    };
    let mut m = model1.clone();
    m.diffusion = model1
        .diffusion
        .with_patch(PatchEntry::merge(source), cache);
    m
}

/// Where a CLIP member's keys start: the folder holding `text_model.` and
/// `text_projection.weight`.
fn member_root(c: &PatchedClip) -> String {
    let p = c.base().weights_prefix.to_string();
    p.strip_suffix("text_model.").unwrap_or(&p).to_string()
}

/// `clip1` with `clip2`'s text-encoder weights merged in at `strengths` (every CLIP member
/// with the member of the same role; `.position_ids` and `.logit_scale` are left out, as in
/// ComfyUI).
pub fn merge_clips(
    ctx: &NodeContext,
    clip1: &SdClip,
    clip2: &SdClip,
    strengths: MergeStrengths,
) -> Result<SdClip, NodeError> {
    let cache = ctx.env.resources.get_or_default::<PatchCache>();
    merge_clips_with(clip1, clip2, strengths, cache)
}

/// [`merge_clips`] with an explicit patch cache.
pub fn merge_clips_with(
    clip1: &SdClip,
    clip2: &SdClip,
    strengths: MergeStrengths,
    cache: Arc<PatchCache>,
) -> Result<SdClip, NodeError> {
    let (e1, e2) = (&clip1.encoder, &clip2.encoder);
    if e1.has_t5() && e2.has_t5() {
        return Err(NodeError::input(
            "clip2",
            format!(
                "merging T5-XXL text encoders is not supported yet (both CLIPs have one: {} \
                 and {}); merge CLIPs without T5",
                e1.kind(),
                e2.kind()
            ),
        ));
    }
    let others = e2.members_by_role();
    let encoder = e1.map_members(|role, c| {
        let Some(other) = others.iter().find(|(r, _)| *r == role).map(|(_, o)| *o) else {
            // ComfyUI's key-by-key merge: a member clip2 lacks is left as it is.
            return c.clone();
        };
        let source = MergeSource {
            weights: other.base_weights().clone(),
            patches: other.patches().to_vec(),
            src_root: member_root(other),
            dst_root: member_root(c),
            skip_suffixes: vec![".position_ids".into(), ".logit_scale".into()],
            strengths: strengths.clone(),
        };
        c.with_patch(PatchEntry::merge(source), cache.clone())
    });
    Ok(SdClip {
        encoder,
        clip_layer: clip1.clip_layer,
    })
}

struct ModelMergeSimple;
impl Node for ModelMergeSimple {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("ModelMergeSimple"))
            .category(CATEGORY)
            .input(InputSpec::of("model1", "MODEL"))
            .input(InputSpec::of("model2", "MODEL"))
            .input(ratio("ratio"))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (m1, m2) = (
            i.object::<SdModel>("model1")?,
            i.object::<SdModel>("model2")?,
        );
        let s = MergeStrengths::ratio(i.float("ratio")?);
        Ok(NodeOutput::one(Value::object(merge_models(
            ctx, &m1, &m2, s,
        ))))
    }
}

struct ModelMergeSubtract;
impl Node for ModelMergeSubtract {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("ModelMergeSubtract"))
            .category(CATEGORY)
            .input(InputSpec::of("model1", "MODEL"))
            .input(InputSpec::of("model2", "MODEL"))
            .input(multiplier())
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (m1, m2) = (
            i.object::<SdModel>("model1")?,
            i.object::<SdModel>("model2")?,
        );
        let m = i.float("multiplier")?;
        let s = MergeStrengths::Fixed {
            patch: -m,
            model: m,
        };
        Ok(NodeOutput::one(Value::object(merge_models(
            ctx, &m1, &m2, s,
        ))))
    }
}

struct ModelMergeAdd;
impl Node for ModelMergeAdd {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("ModelMergeAdd"))
            .category(CATEGORY)
            .input(InputSpec::of("model1", "MODEL"))
            .input(InputSpec::of("model2", "MODEL"))
            .output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (m1, m2) = (
            i.object::<SdModel>("model1")?,
            i.object::<SdModel>("model2")?,
        );
        let s = MergeStrengths::Fixed {
            patch: 1.0,
            model: 1.0,
        };
        Ok(NodeOutput::one(Value::object(merge_models(
            ctx, &m1, &m2, s,
        ))))
    }
}

struct ClipMergeSimple;
impl Node for ClipMergeSimple {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("CLIPMergeSimple"))
            .category(CATEGORY)
            .input(InputSpec::of("clip1", "CLIP"))
            .input(InputSpec::of("clip2", "CLIP"))
            .input(ratio("ratio"))
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (c1, c2) = (i.object::<SdClip>("clip1")?, i.object::<SdClip>("clip2")?);
        let s = MergeStrengths::ratio(i.float("ratio")?);
        Ok(NodeOutput::one(Value::object(merge_clips(
            ctx, &c1, &c2, s,
        )?)))
    }
}

struct ClipMergeSubtract;
impl Node for ClipMergeSubtract {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("CLIPMergeSubtract"))
            .category(CATEGORY)
            .input(InputSpec::of("clip1", "CLIP"))
            .input(InputSpec::of("clip2", "CLIP"))
            .input(multiplier())
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (c1, c2) = (i.object::<SdClip>("clip1")?, i.object::<SdClip>("clip2")?);
        let m = i.float("multiplier")?;
        let s = MergeStrengths::Fixed {
            patch: -m,
            model: m,
        };
        Ok(NodeOutput::one(Value::object(merge_clips(
            ctx, &c1, &c2, s,
        )?)))
    }
}

struct ClipMergeAdd;
impl Node for ClipMergeAdd {
    fn schema(&self) -> NodeSchema {
        module(NodeSchema::new("CLIPMergeAdd"))
            .category(CATEGORY)
            .input(InputSpec::of("clip1", "CLIP"))
            .input(InputSpec::of("clip2", "CLIP"))
            .output(OutputSpec::new("CLIP"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (c1, c2) = (i.object::<SdClip>("clip1")?, i.object::<SdClip>("clip2")?);
        let s = MergeStrengths::Fixed {
            patch: 1.0,
            model: 1.0,
        };
        Ok(NodeOutput::one(Value::object(merge_clips(
            ctx, &c1, &c2, s,
        )?)))
    }
}

/// ModelMergeBlocks and its model-specific subclasses: a ratio per key prefix (the longest
/// matching one wins), and for keys no prefix matches the ratio of the first block input in
/// the prompt's order (ComfyUI's `next(iter(kwargs.values()))`).
struct ModelMergeBlocks {
    class: &'static str,
    category: &'static str,
    module: &'static str,
    blocks: Vec<String>,
}

impl ModelMergeBlocks {
    fn plain() -> Self {
        ModelMergeBlocks {
            class: "ModelMergeBlocks",
            category: CATEGORY,
            module: "comfy_extras.nodes_model_merging",
            blocks: vec!["input".into(), "middle".into(), "out".into()],
        }
    }

    fn specific(class: &'static str, blocks: Vec<String>) -> Self {
        ModelMergeBlocks {
            class,
            category: "advanced/model_merging/model_specific",
            module: "comfy_extras.nodes_model_merging_model_specific",
            blocks,
        }
    }
}

fn numbered(prefix: &str, n: usize, dot: bool) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}{i}{}", if dot { "." } else { "" }))
}

fn sd1_blocks() -> Vec<String> {
    let mut b = vec!["time_embed.".to_string(), "label_emb.".to_string()];
    b.extend(numbered("input_blocks.", 12, true));
    b.extend(numbered("middle_block.", 3, true));
    b.extend(numbered("output_blocks.", 12, true));
    b.push("out.".into());
    b
}

fn sdxl_blocks() -> Vec<String> {
    let mut b = vec!["time_embed.".to_string(), "label_emb.".to_string()];
    b.extend(numbered("input_blocks.", 9, false));
    b.extend(numbered("middle_block.", 3, false));
    b.extend(numbered("output_blocks.", 9, false));
    b.push("out.".into());
    b
}

fn mmdit_blocks(joint: usize) -> Vec<String> {
    let mut b: Vec<String> = [
        "pos_embed.",
        "x_embedder.",
        "context_embedder.",
        "y_embedder.",
        "t_embedder.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    b.extend(numbered("joint_blocks.", joint, true));
    b.push("final_layer.".into());
    b
}

fn flux_blocks() -> Vec<String> {
    let mut b: Vec<String> = [
        "img_in.",
        "time_in.",
        "guidance_in",
        "vector_in.",
        "txt_in.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    b.extend(numbered("double_blocks.", 19, true));
    b.extend(numbered("single_blocks.", 38, true));
    b.push("final_layer.".into());
    b
}

impl Node for ModelMergeBlocks {
    fn schema(&self) -> NodeSchema {
        let mut s = NodeSchema::new(self.class)
            .module(self.module)
            .category(self.category)
            .input(InputSpec::of("model1", "MODEL"))
            .input(InputSpec::of("model2", "MODEL"));
        for b in &self.blocks {
            s = s.input(ratio(b));
        }
        s.output(OutputSpec::new("MODEL"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (m1, m2) = (
            i.object::<SdModel>("model1")?,
            i.object::<SdModel>("model2")?,
        );
        let mut by_prefix = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            by_prefix.push((b.clone(), i.float(b)?));
        }
        // kwargs in the order the prompt lists the inputs (the schema's for a prompt that
        // does not name them all).
        let prompt_order: Vec<String> = ctx
            .prompt
            .json()
            .get(ctx.node_id)
            .and_then(|n| n.get("inputs"))
            .and_then(|v| v.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let first = prompt_order
            .iter()
            .find(|k| self.blocks.contains(k))
            .cloned()
            .unwrap_or_else(|| self.blocks[0].clone());
        let default = i.float(&first)?;
        let s = MergeStrengths::Ratio { default, by_prefix };
        Ok(NodeOutput::one(Value::object(merge_models(
            ctx, &m1, &m2, s,
        ))))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(ModelMergeSimple)?;
    r.register(ModelMergeBlocks::plain())?;
    r.register(ModelMergeSubtract)?;
    r.register(ModelMergeAdd)?;
    r.register(ClipMergeSimple)?;
    r.register(ClipMergeSubtract)?;
    r.register(ClipMergeAdd)?;
    r.register(ModelMergeBlocks::specific("ModelMergeSD1", sd1_blocks()))?;
    r.register(ModelMergeBlocks::specific("ModelMergeSD2", sd1_blocks()))?;
    r.register(ModelMergeBlocks::specific("ModelMergeSDXL", sdxl_blocks()))?;
    r.register(ModelMergeBlocks::specific(
        "ModelMergeSD3_2B",
        mmdit_blocks(24),
    ))?;
    r.register(ModelMergeBlocks::specific(
        "ModelMergeSD35_Large",
        mmdit_blocks(38),
    ))?;
    r.register(ModelMergeBlocks::specific("ModelMergeFlux1", flux_blocks()))?;
    Ok(())
}
