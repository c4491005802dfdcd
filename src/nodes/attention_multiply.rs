//! The attention multipliers (`comfy_extras/nodes_attention_multiply.py`):
//! `UNetSelfAttentionMultiply`, `UNetCrossAttentionMultiply`, `UNetTemporalAttentionMultiply`
//! and `CLIPAttentionMultiply` scale the query, key, value and output projection weights (and
//! biases) of the attention layers. ComfyUI adds each as a zero-strength patch with
//! `strength_model = factor` (`W *= factor`); here each is a weight patch of the MODEL's or
//! CLIP's patch list ([`Adapter::Scale`]), applied in order with any LoRAs when the patched
//! weights are built. Keys that no layer has (a Flux or SD3 model has no `attn1.to_q`, T5 no
//! `self_attn.q_proj`) are left alone, as in ComfyUI.

use super::sd_types::{SdClip, SdModel};
use crate::models::lora::{Adapter, LoadedLora, Patch, PatchCache, PatchEntry, TargetPatch};
use crate::models::unet::UNET_PREFIX;
use crate::models::WeightMap;
use crate::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    RegistryError, Value,
};
use std::collections::BTreeMap;
use std::sync::Arc;

fn factor(name: &str) -> InputSpec {
    InputSpec::float(name)
        .default(1.0)
        .min(0.0)
        .max(10.0)
        .step(0.01)
}

fn schema(class: &str, input: (&str, &str), factors: &[&str]) -> NodeSchema {
    let mut s = NodeSchema::new(class)
        .category("_for_testing/attention_experiments")
        .module("comfy_extras.nodes_attention_multiply")
        .v3()
        .experimental()
        .input(InputSpec::of(input.0, input.1));
    for f in factors {
        s = s.input(factor(f));
    }
    s.output(OutputSpec::new(input.1))
}

/// A patch entry scaling each key of `weights` that `rule` gives a factor for (keys whose
/// factor is 1 are left out: ComfyUI's `weight *= 1.0` is skipped).
fn scale_entry(
    weights: &[&WeightMap],
    identity: String,
    rule: impl Fn(&str) -> Option<f64>,
) -> Option<PatchEntry> {
    let mut patches = BTreeMap::new();
    for w in weights {
        for key in w.keys() {
            if let Some(f) = rule(key).filter(|f| *f != 1.0) {
                patches.insert(
                    key.clone(),
                    vec![TargetPatch {
                        patch: Patch {
                            adapter: Adapter::Scale(f),
                            alpha: None,
                            dora_scale: None,
                            reshape: None,
                        },
                        slice: None,
                        swap_halves: false,
                    }],
                );
            }
        }
    }
    if patches.is_empty() {
        return None;
    }
    Some(PatchEntry::lora(
        Arc::new(LoadedLora {
            patches,
            ..LoadedLora::default()
        }),
        identity,
        1.0,
    ))
}

fn weight_or_bias(key: &str) -> Option<&str> {
    key.strip_suffix(".weight")
        .or_else(|| key.strip_suffix(".bias"))
}

/// `attention_multiply(attn, ...)`: `<attn>.to_q` / `to_k` / `to_v` / `to_out.0` weights and
/// biases of the diffusion model.
fn unet_rule(attn: &'static str, q: f64, k: f64, v: f64, out: f64) -> impl Fn(&str) -> Option<f64> {
    move |key: &str| {
        let base = weight_or_bias(key.strip_prefix(UNET_PREFIX)?)?;
        [("to_q", q), ("to_k", k), ("to_v", v), ("to_out.0", out)]
            .into_iter()
            .find(|(tail, _)| base.ends_with(&format!("{attn}.{tail}")))
            .map(|(_, f)| f)
    }
}

fn patch_model(
    ctx: &NodeContext,
    i: &Inputs,
    identity: String,
    rule: impl Fn(&str) -> Option<f64>,
) -> Result<NodeOutput, NodeError> {
    let model = i.object::<SdModel>("model")?;
    let mut m = (*model).clone();
    if let Some(entry) = scale_entry(&[m.diffusion.base_weights()], identity, rule) {
        let cache = ctx.env.resources.get_or_default::<PatchCache>();
        m.diffusion = m.diffusion.with_patch(entry, cache);
    }
    Ok(NodeOutput::one(Value::object(m)))
}

fn qkvo(i: &Inputs) -> Result<(f64, f64, f64, f64), NodeError> {
    Ok((i.float("q")?, i.float("k")?, i.float("v")?, i.float("out")?))
}

struct UNetSelfAttentionMultiply;
impl Node for UNetSelfAttentionMultiply {
    fn schema(&self) -> NodeSchema {
        schema(
            "UNetSelfAttentionMultiply",
            ("model", "MODEL"),
            &["q", "k", "v", "out"],
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (q, k, v, out) = qkvo(i)?;
        let id = format!("UNetSelfAttentionMultiply:{q}:{k}:{v}:{out}");
        patch_model(ctx, i, id, unet_rule("attn1", q, k, v, out))
    }
}

struct UNetCrossAttentionMultiply;
impl Node for UNetCrossAttentionMultiply {
    fn schema(&self) -> NodeSchema {
        schema(
            "UNetCrossAttentionMultiply",
            ("model", "MODEL"),
            &["q", "k", "v", "out"],
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (q, k, v, out) = qkvo(i)?;
        let id = format!("UNetCrossAttentionMultiply:{q}:{k}:{v}:{out}");
        patch_model(ctx, i, id, unet_rule("attn2", q, k, v, out))
    }
}

struct UNetTemporalAttentionMultiply;
impl Node for UNetTemporalAttentionMultiply {
    fn schema(&self) -> NodeSchema {
        schema(
            "UNetTemporalAttentionMultiply",
            ("model", "MODEL"),
            &[
                "self_structural",
                "self_temporal",
                "cross_structural",
                "cross_temporal",
            ],
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (ss, st) = (i.float("self_structural")?, i.float("self_temporal")?);
        let (cs, ct) = (i.float("cross_structural")?, i.float("cross_temporal")?);
        let id = format!("UNetTemporalAttentionMultiply:{ss}:{st}:{cs}:{ct}");
        patch_model(ctx, i, id, move |key: &str| {
            // Every key of the model's state dict, as ComfyUI iterates it.
            let key = key.strip_prefix(UNET_PREFIX)?;
            let base = weight_or_bias(key)?;
            let temporal = key.contains(".time_stack.");
            if base.ends_with("attn1.to_out.0") {
                Some(if temporal { st } else { ss })
            } else if base.ends_with("attn2.to_out.0") {
                Some(if temporal { ct } else { cs })
            } else {
                None
            }
        })
    }
}

struct CLIPAttentionMultiply;
impl Node for CLIPAttentionMultiply {
    fn schema(&self) -> NodeSchema {
        schema(
            "CLIPAttentionMultiply",
            ("clip", "CLIP"),
            &["q", "k", "v", "out"],
        )
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let (q, k, v, out) = qkvo(i)?;
        let clip = i.object::<SdClip>("clip")?;
        let mut c = (*clip).clone();
        let weights: Vec<&WeightMap> = c
            .encoder
            .members()
            .into_iter()
            .map(|m| m.base_weights().as_ref())
            .collect();
        let id = format!("CLIPAttentionMultiply:{q}:{k}:{v}:{out}");
        let entry = scale_entry(&weights, id, |key| {
            match weight_or_bias(key)?.rsplit_once("self_attn.")?.1 {
                "q_proj" => Some(q),
                "k_proj" => Some(k),
                "v_proj" => Some(v),
                "out_proj" => Some(out),
                _ => None,
            }
        });
        if let Some(entry) = entry {
            let cache = ctx.env.resources.get_or_default::<PatchCache>();
            c.encoder = c.encoder.with_patch(entry, cache);
        }
        Ok(NodeOutput::one(Value::object(c)))
    }
}

pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.register(UNetSelfAttentionMultiply)?;
    r.register(UNetCrossAttentionMultiply)?;
    r.register(CLIPAttentionMultiply)?;
    r.register(UNetTemporalAttentionMultiply)?;
    Ok(())
}
