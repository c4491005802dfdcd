//! §3 The ai-toolkit inference API: `GET /health`, `GET /v1/models`, `POST /v1/inference`.
//!
//! A request (one LoRA, several prompts) becomes one job whose graph has one sampling chain per
//! prompt behind a shared checkpoint + LoraLoader. `[trigger]` is replaced by the trigger word,
//! sizes are floored to the model's resolution divisor, a missing seed is the model default plus
//! the prompt index and `-1` draws one (reported in the result). Only models comfyrs can run
//! and whose base checkpoint is present are listed; any other id is `MODEL_NOT_FOUND`.
//!
//! `sd15` and `sdxl` sample as ai-toolkit's DDPMScheduler does ([`Sampling::Ddpm`]); `flux`
//! (FLUX.1-dev) runs ComfyUI's flux_dev_example sampling graph ([`Sampling::Flux`]).

use super::auth::Caller;
use super::bases::Base;
use super::errors::{code, json_kind, parse_object, SResult, ServerlessError};
use super::openapi::ApiRoute;
use super::requests::{base_url, iso_time, request_urls, submit, Family, RequestMeta};
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Map, Value};

/// One model id of the API and its defaults.
pub struct AitkModel {
    /// How it samples: ai-toolkit's scheduler mapped onto comfyrs' samplers.
    pub sampling: Sampling,
    /// The family, whose configured checkpoint it loads.
    pub base: Base,
    pub id: &'static str,
    pub steps: i64,
    pub guidance: f64,
    pub width: i64,
    pub height: i64,
    pub seed: i64,
    pub divisor: i64,
    pub requires_control_image: bool,
    /// How many control images (`ctrl_img`, `ctrl_img_1..3`) a prompt may carry; 0: none.
    pub max_control_images: usize,
    /// Takes `transformer: low|high` LoRAs (Wan 2.2 MoE).
    pub moe: bool,
    pub max_loras: usize,
}

/// The models this server runs (others join as their model families land).
pub const MODELS: &[AitkModel] = &[
    AitkModel {
        id: "sd15",
        base: Base::Sd15,
        // ai-toolkit samples SD 1.5 with diffusers' DDPMScheduler on its `sd_config`
        // (scaled_linear betas 0.00085..0.012, epsilon, "leading" spacing, steps_offset 0).
        sampling: Sampling::Ddpm,
        steps: 25,
        guidance: 6.0,
        width: 512,
        height: 512,
        seed: 42,
        divisor: 8,
        requires_control_image: false,
        max_control_images: 0,
        moe: false,
        max_loras: 1,
    },
    AitkModel {
        id: "sdxl",
        base: Base::Sdxl,
        // The same DDPMScheduler config as sd15 (SDXL's betas are SD1's), at SDXL's 1024².
        sampling: Sampling::Ddpm,
        steps: 25,
        guidance: 6.0,
        width: 1024,
        height: 1024,
        seed: 42,
        divisor: 8,
        requires_control_image: false,
        max_control_images: 0,
        moe: false,
        max_loras: 1,
    },
    AitkModel {
        id: "flux",
        base: Base::Flux,
        // FLUX.1-dev: distilled guidance 3.5, 25 steps (ai-toolkit's Flux notes: 20-28),
        // flow-matching Euler with resolution-dependent shift; 16 = VAE ×8 · 2×2 patches.
        sampling: Sampling::Flux,
        steps: 25,
        guidance: 3.5,
        width: 1024,
        height: 1024,
        seed: 42,
        divisor: 16,
        requires_control_image: false,
        max_control_images: 0,
        moe: false,
        max_loras: 1,
    },
];

pub fn api() -> Vec<ApiRoute> {
    const T: &str = "ai-toolkit inference";
    vec![
        ApiRoute::new(
            "GET",
            "/v1/models",
            T,
            "The model ids served, with defaults",
            get(list_models),
        )
        .returns("AitkModels"),
        ApiRoute::new(
            "POST",
            "/v1/inference",
            T,
            "LoRA inference on one model, several prompts",
            post(inference),
        )
        .body("AitkInference")
        .returns("AitkQueued"),
    ]
}

/// Routes that need no token (`GET /health`, for load balancers).
pub fn public_api() -> Vec<ApiRoute> {
    vec![ApiRoute::new(
        "GET",
        "/health",
        "ai-toolkit inference",
        "Liveness",
        get(health),
    )
    .access(super::openapi::Access::Public)
    .returns("Health")]
}

/// The bodies of the ai-toolkit routes (OpenAPI components).
pub fn schemas() -> Vec<super::schemas::Named> {
    use super::schemas::*;
    vec![
        (
            "Health",
            object(&["status"], vec![("status", words(&["healthy"]))]),
        ),
        (
            "AitkModels",
            object(
                &["models"],
                vec![(
                    "models",
                    array(object(
                        &[
                            "id",
                            "base_checkpoint",
                            "defaults",
                            "resolution_divisor",
                            "requires_control_image",
                            "moe_lora_format",
                            "max_loras",
                        ],
                        vec![
                            ("id", string()),
                            ("base_checkpoint", string()),
                            (
                                "defaults",
                                object(
                                    &["sample_steps", "guidance_scale", "width", "height", "seed"],
                                    vec![
                                        ("sample_steps", integer()),
                                        ("guidance_scale", number()),
                                        ("width", integer()),
                                        ("height", integer()),
                                        ("seed", integer()),
                                    ],
                                ),
                            ),
                            ("resolution_divisor", integer()),
                            ("requires_control_image", boolean()),
                            ("moe_lora_format", boolean()),
                            ("max_loras", integer()),
                        ],
                    )),
                )],
            ),
        ),
        (
            "AitkInference",
            super::bodies::schema_of::<super::bodies::AitkRequest>(),
        ),
        (
            "AitkQueued",
            object(
                &[
                    "request_id",
                    "status",
                    "status_url",
                    "result_url",
                    "created_at",
                ],
                vec![
                    ("request_id", string()),
                    ("status", words(&["queued"])),
                    ("status_url", uri()),
                    ("result_url", uri()),
                    ("created_at", nullable(timestamp())),
                ],
            ),
        ),
        (
            "InferenceOutputs",
            object(
                &["images", "videos"],
                vec![
                    (
                        "images",
                        array(object(
                            &["format", "width", "height", "file_path", "seed"],
                            vec![
                                ("format", string()),
                                ("width", integer()),
                                ("height", integer()),
                                ("file_path", described(uri(), "Served to the owner")),
                                ("seed", integer()),
                            ],
                        )),
                    ),
                    ("videos", array(any())),
                ],
            ),
        ),
        (
            "InferenceMetadata",
            object(
                &["model", "timings"],
                vec![
                    ("model", string()),
                    (
                        "timings",
                        object(
                            &["queue_ms", "inference_ms", "total_ms"],
                            vec![
                                ("queue_ms", nullable(integer())),
                                ("inference_ms", nullable(integer())),
                                ("total_ms", nullable(integer())),
                            ],
                        ),
                    ),
                ],
            ),
        ),
    ]
}

async fn health() -> Json<Value> {
    Json(json!({"status": "healthy"}))
}

async fn list_models(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let cfg = &state.serverless.config;
    let env = state.queue.env();
    let models: Vec<Value> = MODELS
        .iter()
        .filter_map(|m| Some((m, m.base.resolve(cfg, env)?)))
        .map(|(m, files)| {
            json!({
                "id": m.id,
                "base_checkpoint": files.name(),
                "defaults": {"sample_steps": m.steps, "guidance_scale": m.guidance,
                             "width": m.width, "height": m.height, "seed": m.seed},
                "resolution_divisor": m.divisor,
                "requires_control_image": m.requires_control_image,
                "moe_lora_format": m.moe,
                "max_loras": m.max_loras,
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

/// A model's sampler, as comfyrs nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Ancestral DDPM (diffusers' `DDPMScheduler.step`: the posterior mean plus its
    /// "fixed_small" variance) is ComfyUI's `ddpm` sampler; "leading" timestep spacing
    /// (every ⌊1000/steps⌋-th timestep) is its `ddim_uniform` scheduler, whose grid starts
    /// at timestep 1 where ai-toolkit's starts at 0.
    Ddpm,
    /// FLUX.1-dev as diffusers' FluxPipeline samples it (FlowMatchEulerDiscreteScheduler with
    /// dynamic shifting, base 0.5 / max 1.15 over the image's token count; distilled guidance,
    /// no CFG, the negative prompt unused) = ComfyUI's flux_dev_example: FluxGuidance,
    /// ModelSamplingFlux, BasicScheduler (simple), KSamplerSelect (euler), BasicGuider,
    /// RandomNoise, EmptySD3LatentImage, SamplerCustomAdvanced.
    Flux,
}

impl Sampling {
    /// The KSamplerAdvanced inputs `(sampler_name, scheduler, start_at_step)` that sample
    /// `steps` steps. `ddim_uniform` yields one step more than asked when `steps` does not
    /// divide 1000 (the grid is filled up to timestep 999); starting past the extra steps keeps
    /// the asked count, on the same spacing as ai-toolkit's.
    pub fn ksampler(self, steps: i64) -> (&'static str, &'static str, i64) {
        match self {
            Sampling::Flux => ("euler", "simple", 0),
            Sampling::Ddpm => {
                let ms = crate::sampling::model_sampling::ModelSampling::sd15(
                    crate::sampling::model_sampling::Prediction::Eps,
                );
                let n = steps.max(1) as usize;
                let made = crate::sampling::schedulers::ddim_uniform(&ms, n).len() - 1;
                ("ddpm", "ddim_uniform", made.saturating_sub(n) as i64)
            }
        }
    }
}

fn err(status: StatusCode, code: &'static str, msg: impl Into<String>) -> ServerlessError {
    ServerlessError::new(status, code, msg)
}

/// One prompt after defaults, flooring and seeding.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPrompt {
    pub prompt: String,
    pub neg: String,
    pub width: i64,
    pub height: i64,
    pub steps: i64,
    pub guidance: f64,
    pub seed: i64,
}

/// The LoRA of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLora {
    pub path: String,
    pub multiplier: f64,
}

fn int_field(p: &Map<String, Value>, k: &str, i: usize) -> SResult<Option<i64>> {
    match p.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                format!(
                    "prompts[{i}].{k}: expected an integer, found {}",
                    json_kind(v)
                ),
            )
        }),
    }
}

/// Validates the body and applies the API's rules (everything but running).
pub fn plan(
    model: &AitkModel,
    body: &Map<String, Value>,
    lora_exists: &dyn Fn(&str) -> bool,
    draw_seed: &mut dyn FnMut() -> i64,
) -> SResult<(PlannedLora, Vec<PlannedPrompt>)> {
    let bad = |m: String| err(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, m);
    let loras = match body.get("loras") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                code::LORA_FILE_REQUIRED,
                "loras: at least one {\"path\": \"...safetensors\"} is required",
            ))
        }
    };
    let has_transformer = loras.iter().any(|l| l.get("transformer").is_some());
    if has_transformer && !model.moe {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::MOE_FORMAT_NOT_SUPPORTED,
            format!(
                "loras[].transformer: model {} is not a MoE model; drop \"transformer\"",
                model.id
            ),
        ));
    }
    if model.moe && !has_transformer {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::MOE_FORMAT_REQUIRED,
            format!(
                "loras[].transformer: model {} needs \"low\" or \"high\" on each LoRA",
                model.id
            ),
        ));
    }
    if loras.len() > model.max_loras {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::SINGLE_LORA_ONLY,
            format!(
                "loras: model {} takes {} LoRA, got {}",
                model.id,
                model.max_loras,
                loras.len()
            ),
        ));
    }
    let l = &loras[0];
    let path = l
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                code::LORA_FILE_REQUIRED,
                "loras[0].path: the LoRA file (under models/loras) is required",
            )
        })?;
    if !lora_exists(path) {
        return Err(err(
            StatusCode::NOT_FOUND,
            code::LORA_NOT_FOUND,
            format!("loras[0].path: no LoRA {path:?} under models/loras"),
        ));
    }
    let multiplier = match l.get("network_multiplier") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("loras[0].network_multiplier: expected a number".into()))?,
    };
    let prompts = match body.get("prompts") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad(
                "prompts: a non-empty list of {\"prompt\": ...} is required".into(),
            ))
        }
    };
    let trigger = body
        .get("trigger_word")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let p = p
            .as_object()
            .ok_or_else(|| bad(format!("prompts[{i}]: expected an object")))?;
        let text = p
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("prompts[{i}].prompt: a string is required")))?;
        check_control_images(model, p, i)?;
        let trig = p
            .get("trigger_word")
            .and_then(Value::as_str)
            .unwrap_or(trigger);
        let floor = |v: i64, k: &str| -> SResult<i64> {
            let f = v / model.divisor * model.divisor;
            if f < model.divisor {
                return Err(bad(format!(
                    "prompts[{i}].{k}: {v} is smaller than the resolution divisor {}",
                    model.divisor
                )));
            }
            Ok(f)
        };
        let width = floor(int_field(p, "width", i)?.unwrap_or(model.width), "width")?;
        let height = floor(int_field(p, "height", i)?.unwrap_or(model.height), "height")?;
        let seed = match int_field(p, "seed", i)? {
            None => model.seed + i as i64,
            Some(-1) => draw_seed(),
            Some(s) if s < 0 => {
                return Err(bad(format!(
                    "prompts[{i}].seed: {s}; use -1 for a random seed"
                )))
            }
            Some(s) => s,
        };
        let guidance = match p.get("guidance_scale") {
            None | Some(Value::Null) => model.guidance,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("prompts[{i}].guidance_scale: expected a number")))?,
        };
        out.push(PlannedPrompt {
            prompt: text.replace("[trigger]", trig),
            neg: p
                .get("neg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            width,
            height,
            steps: int_field(p, "sample_steps", i)?.unwrap_or(model.steps),
            guidance,
            seed,
        });
    }
    Ok((
        PlannedLora {
            path: path.to_string(),
            multiplier,
        },
        out,
    ))
}

/// `ctrl_img` and `ctrl_img_1..3` of prompt `i`: required where the model requires one
/// (`CONTROL_IMAGE_REQUIRED`), refused beyond what the model takes (a model without control
/// images would silently ignore it).
fn check_control_images(model: &AitkModel, p: &Map<String, Value>, i: usize) -> SResult<()> {
    let given: Vec<&String> = p
        .iter()
        .filter(|(k, v)| k.starts_with("ctrl_img") && !v.is_null())
        .map(|(k, _)| k)
        .collect();
    if model.requires_control_image && given.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::CONTROL_IMAGE_REQUIRED,
            format!(
                "prompts[{i}].ctrl_img: model {} requires a control image (a URL or base64)",
                model.id
            ),
        ));
    }
    if given.len() > model.max_control_images {
        let field = given[0];
        let msg = if model.max_control_images == 0 {
            format!(
                "prompts[{i}].{field}: model {} takes no control image (GET /v1/models: \
                 requires_control_image false); drop {field}",
                model.id
            )
        } else {
            format!(
                "prompts[{i}]: model {} takes at most {} control images, got {}",
                model.id,
                model.max_control_images,
                given.len()
            )
        };
        return Err(err(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, msg));
    }
    Ok(())
}

/// The graph: checkpoint -> LoraLoader -> per prompt (encode, empty latent, sampling,
/// decode, save). Save node of prompt `i` is `"p{i}_save"`.
pub fn graph(
    sampling: Sampling,
    ckpt: &str,
    lora: &PlannedLora,
    prompts: &[PlannedPrompt],
) -> Value {
    let mut g = Map::new();
    g.insert(
        "ckpt".into(),
        json!({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}),
    );
    g.insert(
        "lora".into(),
        json!({"class_type": "LoraLoader", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": lora.path,
        "strength_model": lora.multiplier, "strength_clip": lora.multiplier}}),
    );
    for (i, p) in prompts.iter().enumerate() {
        let n = |s: &str| format!("p{i}_{s}");
        g.insert(n("pos"), json!({"class_type": "CLIPTextEncode", "inputs": {"text": p.prompt, "clip": ["lora", 1]}}));
        match sampling {
            Sampling::Ddpm => {
                g.insert(
                    n("neg"),
                    json!({"class_type": "CLIPTextEncode", "inputs": {"text": p.neg, "clip": ["lora", 1]}}),
                );
                g.insert(n("latent"), json!({"class_type": "EmptyLatentImage", "inputs": {"width": p.width, "height": p.height, "batch_size": 1}}));
                let (sampler, scheduler, start) = sampling.ksampler(p.steps);
                g.insert(n("sample"), json!({"class_type": "KSamplerAdvanced", "inputs": {
                    "model": ["lora", 0], "add_noise": "enable", "noise_seed": p.seed, "steps": p.steps,
                    "cfg": p.guidance, "sampler_name": sampler, "scheduler": scheduler,
                    "positive": [n("pos"), 0], "negative": [n("neg"), 0], "latent_image": [n("latent"), 0],
                    "start_at_step": start, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}));
            }
            Sampling::Flux => flux_chain(&mut g, i, p),
        }
        g.insert(n("decode"), json!({"class_type": "VAEDecode", "inputs": {"samples": [n("sample"), 0], "vae": ["ckpt", 2]}}));
        g.insert(n("save"), json!({"class_type": "SaveImage", "inputs": {"images": [n("decode"), 0], "filename_prefix": format!("aitk_p{i}")}}));
    }
    Value::Object(g)
}

/// The flux_dev_example sampling chain of prompt `i` (its `p{i}_sample` gives the latent).
fn flux_chain(g: &mut Map<String, Value>, i: usize, p: &PlannedPrompt) {
    let n = |s: &str| format!("p{i}_{s}");
    let (sampler, scheduler, _) = Sampling::Flux.ksampler(p.steps);
    g.insert(
        n("guidance"),
        json!({"class_type": "FluxGuidance", "inputs": {
        "guidance": p.guidance, "conditioning": [n("pos"), 0]}}),
    );
    g.insert(
        n("model"),
        json!({"class_type": "ModelSamplingFlux", "inputs": {
        "max_shift": 1.15, "base_shift": 0.5, "width": p.width, "height": p.height,
        "model": ["lora", 0]}}),
    );
    g.insert(
        n("latent"),
        json!({"class_type": "EmptySD3LatentImage", "inputs": {
        "width": p.width, "height": p.height, "batch_size": 1}}),
    );
    g.insert(
        n("sampler"),
        json!({"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}),
    );
    g.insert(
        n("sigmas"),
        json!({"class_type": "BasicScheduler", "inputs": {
        "scheduler": scheduler, "steps": p.steps, "denoise": 1.0, "model": [n("model"), 0]}}),
    );
    g.insert(
        n("guider"),
        json!({"class_type": "BasicGuider", "inputs": {
        "model": [n("model"), 0], "conditioning": [n("guidance"), 0]}}),
    );
    g.insert(
        n("noise"),
        json!({"class_type": "RandomNoise", "inputs": {"noise_seed": p.seed}}),
    );
    g.insert(
        n("sample"),
        json!({"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": [n("noise"), 0], "guider": [n("guider"), 0], "sampler": [n("sampler"), 0],
        "sigmas": [n("sigmas"), 0], "latent_image": [n("latent"), 0]}}),
    );
}

async fn inference(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match inference_inner(&state, &caller, &headers, &body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn inference_inner(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
) -> SResult<Value> {
    let b = parse_object(body)?;
    // Types and field names first (a wrong type is a 400 naming the field), then the API's
    // rules on the same body.
    let typed: super::bodies::AitkRequest = super::bodies::from_value(Value::Object(b.clone()))?;
    if let Some(p) = typed
        .prompts
        .as_ref()
        .filter(|p| p.len() > super::bodies::AITK_MAX_PROMPTS)
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            format!(
                "prompts: {} prompts in one request; at most {} are allowed",
                p.len(),
                super::bodies::AITK_MAX_PROMPTS
            ),
        ));
    }
    let id = typed.model.as_deref().unwrap_or("");
    let model = MODELS.iter().find(|m| m.id == id).ok_or_else(|| {
        let known: Vec<&str> = MODELS.iter().map(|m| m.id).collect();
        err(
            StatusCode::NOT_FOUND,
            code::MODEL_NOT_FOUND,
            format!(
                "model {id:?} is not served here; models: {}",
                known.join(", ")
            ),
        )
    })?;
    let env = state.queue.env().clone();
    let files = model
        .base
        .require(model.id, &state.serverless.config, &env)?;
    let exists = |p: &str| env.paths.find_model("loras", p).is_some();
    let (lora, prompts) = plan(model, &b, &exists, &mut || rand::random::<u32>() as i64)?;
    if state.queue.registry().schema("LoraLoader").is_none() {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            code::LORA_NOT_SUPPORTED,
            "this server has no LoraLoader node yet, so LoRA inference cannot run",
        ));
    }
    let prompt_facts: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"node_id": format!("p{i}_save"), "seed": p.seed, "width": p.width, "height": p.height}))
        .collect();
    let base = base_url(state, headers);
    let meta = RequestMeta {
        family: Family::Inference,
        deployment_id: None,
        webhook: typed.webhook,
        webhook_intermediate_status: typed.webhook_intermediate_status.unwrap_or(false),
        base_url: base.clone(),
        extra: json!({"model": model.id, "prompts": prompt_facts}),
    };
    let mut g = graph(model.sampling, files.name(), &lora, &prompts);
    files.apply(&mut g, "ckpt");
    let rid = submit(state, caller, g, meta.clone(), &[]).await?;
    let job = {
        let (q, rid) = (state.queue.clone(), rid.clone());
        crate::server::blocking(move || q.store().get(&rid).map_err(ServerlessError::from)).await?
    };
    let mut out = Map::new();
    out.insert("request_id".into(), json!(rid));
    out.insert("status".into(), json!("queued"));
    let urls = request_urls(&base, &meta, &rid);
    out.insert("status_url".into(), urls["status_url"].clone());
    out.insert("result_url".into(), urls["result_url"].clone());
    out.insert(
        "created_at".into(),
        job.map(|j| iso_time(j.created_at)).unwrap_or(Value::Null),
    );
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn run(v: Value) -> SResult<(PlannedLora, Vec<PlannedPrompt>)> {
        let mut n = 1000;
        plan(
            &MODELS[0],
            &body(v),
            &|p| p == "mine.safetensors",
            &mut || {
                n += 1;
                n
            },
        )
    }

    #[test]
    fn trigger_flooring_and_seeds() {
        let (lora, ps) = run(json!({"model": "sd15", "trigger_word": "sks",
            "loras": [{"path": "mine.safetensors", "network_multiplier": 0.7}],
            "prompts": [
                {"prompt": "[trigger] a photo, [trigger]", "width": 517, "height": 300},
                {"prompt": "[trigger] art", "trigger_word": "zzz", "seed": -1, "sample_steps": 4, "guidance_scale": 3.5},
                {"prompt": "plain", "seed": 7}
            ]}))
        .unwrap();
        assert_eq!(
            lora,
            PlannedLora {
                path: "mine.safetensors".into(),
                multiplier: 0.7
            }
        );
        assert_eq!(ps[0].prompt, "sks a photo, sks");
        assert_eq!((ps[0].width, ps[0].height), (512, 296));
        assert_eq!(ps[0].seed, 42);
        assert_eq!((ps[0].steps, ps[0].guidance), (25, 6.0));
        assert_eq!(ps[1].prompt, "zzz art");
        assert_eq!(ps[1].seed, 1001);
        assert_eq!((ps[1].steps, ps[1].guidance), (4, 3.5));
        assert_eq!(ps[2].seed, 7);
        // Missing seeds are default + prompt index.
        let (_, ps) = run(
            json!({"model": "sd15", "loras": [{"path": "mine.safetensors"}],
            "prompts": [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}]}),
        )
        .unwrap();
        assert_eq!(ps.iter().map(|p| p.seed).collect::<Vec<_>>(), [42, 43, 44]);
    }

    #[test]
    fn error_codes() {
        let code_of = |v: Value| run(v).unwrap_err().code;
        let p = json!([{"prompt": "a"}]);
        assert_eq!(code_of(json!({"prompts": p})), "LORA_FILE_REQUIRED");
        assert_eq!(
            code_of(json!({"loras": [], "prompts": p})),
            "LORA_FILE_REQUIRED"
        );
        assert_eq!(
            code_of(json!({"loras": [{"scale": 1}], "prompts": p})),
            "LORA_FILE_REQUIRED"
        );
        assert_eq!(
            code_of(json!({"loras": [{"path": "nope.safetensors"}], "prompts": p})),
            "LORA_NOT_FOUND"
        );
        assert_eq!(
            code_of(
                json!({"loras": [{"path": "mine.safetensors"}, {"path": "mine.safetensors"}], "prompts": p})
            ),
            "SINGLE_LORA_ONLY"
        );
        assert_eq!(
            code_of(
                json!({"loras": [{"path": "mine.safetensors", "transformer": "low"}], "prompts": p})
            ),
            "MOE_FORMAT_NOT_SUPPORTED"
        );
        assert_eq!(
            code_of(json!({"loras": [{"path": "mine.safetensors"}], "prompts": []})),
            "INVALID_REQUEST"
        );
        let e = run(json!({"loras": [{"path": "mine.safetensors"}], "prompts": [{"prompt": "a", "width": 5}]})).unwrap_err();
        assert_eq!(
            e.message,
            "prompts[0].width: 5 is smaller than the resolution divisor 8"
        );
    }

    /// ai-toolkit's DDPM timesteps ("leading": k·⌊1000/steps⌋) against the grid comfyrs
    /// samples (ddim_uniform past `start_at_step`): the same count and spacing, one timestep
    /// later.
    #[test]
    fn ddpm_timesteps_follow_leading_spacing() {
        use crate::sampling::model_sampling::{ModelSampling, Prediction};
        let ms = ModelSampling::sd15(Prediction::Eps);
        for steps in [1i64, 2, 3, 7, 20, 25, 30, 50, 999] {
            let (sampler, scheduler, start) = Sampling::Ddpm.ksampler(steps);
            assert_eq!((sampler, scheduler), ("ddpm", "ddim_uniform"));
            let sigmas = crate::sampling::schedulers::ddim_uniform(&ms, steps as usize);
            let used = &sigmas[start as usize..];
            assert_eq!(used.len() as i64, steps + 1, "steps {steps}");
            assert_eq!(*used.last().unwrap(), 0.0);
            let ratio = 1000 / steps as usize;
            let leading: Vec<usize> = (0..steps as usize).rev().map(|k| k * ratio).collect();
            let ours: Vec<usize> = used[..steps as usize]
                .iter()
                .map(|s| ms.timestep(*s) as usize)
                .collect();
            let shifted: Vec<usize> = leading.iter().map(|t| t + 1).collect();
            assert_eq!(ours, shifted, "steps {steps}");
        }
        assert_eq!(Sampling::Ddpm.ksampler(30).2, 1);
        assert_eq!(Sampling::Ddpm.ksampler(25).2, 0);
    }

    #[test]
    fn control_images() {
        let e = run(json!({"loras": [{"path": "mine.safetensors"}],
            "prompts": [{"prompt": "a"}, {"prompt": "b", "ctrl_img": "https://example.com/c.png"}]}))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "INVALID_REQUEST");
        assert_eq!(
            e.message,
            "prompts[1].ctrl_img: model sd15 takes no control image (GET /v1/models: \
             requires_control_image false); drop ctrl_img"
        );
        let e = run(json!({"loras": [{"path": "mine.safetensors"}],
            "prompts": [{"prompt": "a", "ctrl_img_2": "QUJD"}]}))
        .unwrap_err();
        assert!(e
            .message
            .starts_with("prompts[0].ctrl_img_2: model sd15 takes no control image"));
        // null is "not given".
        assert!(run(json!({"loras": [{"path": "mine.safetensors"}],
            "prompts": [{"prompt": "a", "ctrl_img": null}]}))
        .is_ok());
        // A model that requires one.
        let needs = AitkModel {
            id: "edit",
            requires_control_image: true,
            max_control_images: 1,
            ..MODELS[0]
        };
        let p = body(json!({"prompt": "a"}));
        let e = check_control_images(&needs, &p, 0).unwrap_err();
        assert_eq!(e.code, "CONTROL_IMAGE_REQUIRED");
        assert_eq!(
            e.message,
            "prompts[0].ctrl_img: model edit requires a control image (a URL or base64)"
        );
        let p = body(json!({"prompt": "a", "ctrl_img": "x", "ctrl_img_1": "y"}));
        assert_eq!(
            check_control_images(&needs, &p, 0).unwrap_err().message,
            "prompts[0]: model edit takes at most 1 control images, got 2"
        );
    }

    #[test]
    fn graph_wires_the_lora_into_every_chain() {
        let (lora, ps) = run(json!({"loras": [{"path": "mine.safetensors"}],
            "prompts": [{"prompt": "a"}, {"prompt": "b"}]}))
        .unwrap();
        let g = graph(Sampling::Ddpm, "tiny.safetensors", &lora, &ps);
        assert_eq!(g["lora"]["inputs"]["lora_name"], "mine.safetensors");
        assert_eq!(g["p1_sample"]["inputs"]["model"], json!(["lora", 0]));
        assert_eq!(g["p1_pos"]["inputs"]["clip"], json!(["lora", 1]));
        assert_eq!(g["p1_sample"]["inputs"]["noise_seed"], 43);
        assert_eq!(g["p1_sample"]["class_type"], "KSamplerAdvanced");
        assert_eq!(g["p1_sample"]["inputs"]["sampler_name"], "ddpm");
        assert_eq!(g["p1_sample"]["inputs"]["scheduler"], "ddim_uniform");
        assert_eq!(g["p1_sample"]["inputs"]["steps"], 25);
        assert_eq!(g["p1_sample"]["inputs"]["start_at_step"], 0);
        assert_eq!(g["p0_save"]["class_type"], "SaveImage");
    }
}
