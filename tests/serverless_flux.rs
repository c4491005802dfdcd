//! The `sdxl` and `flux` model ids of the Model API and the ai-toolkit inference API on the
//! tiny fixtures (`tiny_sdxl`, the all-in-one `tiny_flux_dev_fp8`): `/v1/models` lists only
//! ids whose base checkpoint is present (a missing one is `404 MODEL_NOT_FOUND` naming the
//! file), Flux runs ComfyUI's flux_dev_example graph with a LoRA per request, and the Model
//! API's `sdxl/txt2img` and `flux/txt2img` run end to end.

mod server_common;

use comfyrs::server::serverless::{ApiToken, FluxFiles, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "flux-token";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn server(flux_checkpoint: &str) -> TestServer {
    server_with(flux_checkpoint, FluxFiles::default()).await
}

/// The tiny fixtures' split Flux files (as the quickstart loads FLUX.1-dev).
fn tiny_split() -> FluxFiles {
    FluxFiles {
        diffusion_model: "tiny_flux.safetensors".into(),
        clip_l: "tiny_clip_l.safetensors".into(),
        t5xxl: "tiny_t5xxl.safetensors".into(),
        vae: "tiny_flux_vae.safetensors".into(),
    }
}

async fn server_with(flux_checkpoint: &str, flux_files: FluxFiles) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let loras = dir.path().join("models/loras");
    std::fs::create_dir_all(&loras).unwrap();
    for f in ["lora_diffusers.safetensors", "lora_kohya.safetensors"] {
        std::fs::copy(repo().join("tests/data/flux_lora").join(f), loras.join(f)).unwrap();
    }
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![ApiToken {
                name: "f".into(),
                token: TOKEN.into(),
            }],
            deployments_dir: dir.path().join("deployments"),
            sd15_checkpoint: "tiny_sd15.safetensors".into(),
            sdxl_checkpoint: "tiny_sdxl.safetensors".into(),
            flux_checkpoint: flux_checkpoint.into(),
            flux_files,
            ..Default::default()
        },
        ..Default::default()
    };
    start_in(dir, Some(&repo().join("fixtures/models")), cfg).await
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request(addr, method, path, &[("Authorization", &auth)], &body).await
}

/// Polls `rid`'s result until it is final.
async fn result(addr: SocketAddr, rid: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let r = call(
            addr,
            "GET",
            &format!("/v1/requests/{rid}/result"),
            &Value::Null,
        )
        .await
        .json();
        let st = r["status"].as_str().unwrap_or("").to_string();
        if ["succeeded", "completed", "failed", "canceled", "cancelled"].contains(&st.as_str()) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bytes of the first output image of a result (ai-toolkit: `outputs.images[0].file_path`;
/// Model API: `outputs.{node}.images[0].url`).
async fn first_image(addr: SocketAddr, res: &Value) -> Vec<u8> {
    let out = &res["outputs"];
    let url = out["images"][0]["file_path"]
        .as_str()
        .or_else(|| {
            out.as_object()?
                .values()
                .find_map(|v| v["images"][0]["url"].as_str())
        })
        .unwrap_or_else(|| panic!("no image in {res}"));
    let path = url.strip_prefix(&format!("http://{addr}")).unwrap();
    let f = call(addr, "GET", path, &Value::Null).await;
    assert_eq!(f.status, 200);
    f.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_present_bases_with_their_defaults() {
    let s = server("tiny_flux_dev_fp8.safetensors").await;
    let m = call(s.addr, "GET", "/v1/models", &Value::Null).await.json();
    let by_id = |id: &str| {
        m["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {m}"))
    };
    assert_eq!(m["models"].as_array().unwrap().len(), 3);
    let flux = by_id("flux");
    assert_eq!(flux["base_checkpoint"], "tiny_flux_dev_fp8.safetensors");
    assert_eq!(
        flux["defaults"],
        json!({"sample_steps": 25, "guidance_scale": 3.5, "width": 1024, "height": 1024, "seed": 42})
    );
    assert_eq!(flux["resolution_divisor"], 16);
    let sdxl = by_id("sdxl");
    assert_eq!(sdxl["base_checkpoint"], "tiny_sdxl.safetensors");
    assert_eq!(
        sdxl["defaults"],
        json!({"sample_steps": 25, "guidance_scale": 6.0, "width": 1024, "height": 1024, "seed": 42})
    );
    assert_eq!(sdxl["resolution_divisor"], 8);
    s.server.shutdown().await;

    // A base that is not there: not listed, and its id answers 404 naming the file.
    let s = server("flux1-dev-fp8.safetensors").await;
    let m = call(s.addr, "GET", "/v1/models", &Value::Null).await.json();
    let ids: Vec<&str> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sd15", "sdxl"]);
    let r = call(
        s.addr,
        "POST",
        "/v1/inference",
        &json!({"model": "flux",
        "loras": [{"path": "lora_kohya.safetensors"}], "prompts": [{"prompt": "a"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"code": "MODEL_NOT_FOUND", "message": "model \"flux\" is not available on this \
               server: its base checkpoint \"flux1-dev-fp8.safetensors\" (flux_checkpoint) is not \
               under models/checkpoints, nor are its separate files (flux_files: \
               diffusion_models/flux1-dev.safetensors, text_encoders/clip_l.safetensors and \
               t5xxl_fp16.safetensors, vae/ae.safetensors)"})
    );
    let r = call(
        s.addr,
        "POST",
        "/v1/models/flux/txt2img",
        &json!({"prompt": "a"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "MODEL_NOT_FOUND");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_inference_runs_the_quickstart_graph_with_a_lora() {
    let s = server("tiny_flux_dev_fp8.safetensors").await;
    let addr = s.addr;
    let run = |mult: f64, guidance: Option<f64>| {
        let mut p =
            json!({"prompt": "[trigger] a fox", "width": 72, "height": 50, "sample_steps": 3});
        if let Some(g) = guidance {
            p["guidance_scale"] = json!(g);
        }
        json!({"model": "flux", "trigger_word": "sks",
            "loras": [{"path": "lora_diffusers.safetensors", "network_multiplier": mult}],
            "prompts": [p]})
    };
    let mut images = Vec::new();
    for (mult, guidance) in [(1.0, None), (0.0, None), (1.0, Some(1.0))] {
        let r = call(addr, "POST", "/v1/inference", &run(mult, guidance)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rid = r.json()["request_id"].as_str().unwrap().to_string();
        let res = result(addr, &rid).await;
        assert_eq!(res["status"], "succeeded", "{res}");
        let img = &res["outputs"]["images"][0];
        // 72×50 floored to the divisor 16: 64×48.
        assert_eq!(
            (img["width"].as_i64(), img["height"].as_i64()),
            (Some(64), Some(48))
        );
        assert_eq!(img["seed"], 42);
        images.push(first_image(addr, &res).await);
        if images.len() == 1 {
            let job = s.server.queue.store().get(&rid).unwrap().unwrap();
            let g = &job.prompt;
            assert_eq!(
                g["ckpt"]["inputs"]["ckpt_name"],
                "tiny_flux_dev_fp8.safetensors"
            );
            assert_eq!(g["p0_pos"]["inputs"]["text"], "sks a fox");
            assert_eq!(g["p0_guidance"]["class_type"], "FluxGuidance");
            assert_eq!(g["p0_guidance"]["inputs"]["guidance"], 3.5);
            assert_eq!(g["p0_model"]["class_type"], "ModelSamplingFlux");
            assert_eq!(g["p0_model"]["inputs"]["model"], json!(["lora", 0]));
            assert_eq!(
                (
                    g["p0_model"]["inputs"]["width"].as_i64(),
                    g["p0_model"]["inputs"]["height"].as_i64()
                ),
                (Some(64), Some(48))
            );
            assert_eq!(g["p0_latent"]["class_type"], "EmptySD3LatentImage");
            assert_eq!(g["p0_sigmas"]["inputs"]["steps"], 3);
            assert_eq!(g["p0_sigmas"]["inputs"]["scheduler"], "simple");
            assert_eq!(g["p0_sampler"]["inputs"]["sampler_name"], "euler");
            assert_eq!(g["p0_noise"]["inputs"]["noise_seed"], 42);
            assert_eq!(g["p0_sample"]["class_type"], "SamplerCustomAdvanced");
            assert!(g.get("p0_neg").is_none(), "Flux takes no negative prompt");
        }
    }
    assert_ne!(images[0], images[1], "the LoRA changed nothing");
    assert_ne!(images[0], images[2], "the guidance changed nothing");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_api_sdxl_and_flux_pipelines_run_with_a_lora() {
    let s = server("tiny_flux_dev_fp8.safetensors").await;
    let addr = s.addr;
    let schema = call(addr, "GET", "/v1/models/flux/txt2img/schema", &Value::Null)
        .await
        .json();
    assert_eq!(schema["properties"]["guidance"]["default"], 3.5);
    assert_eq!(schema["properties"]["steps"]["default"], 20);
    assert!(schema["properties"].get("negative_prompt").is_none());
    let mut images = Vec::new();
    for (id, body) in [
        (
            "flux/txt2img",
            json!({"prompt": "a fox", "width": 64, "height": 48, "steps": 2, "seed": 5}),
        ),
        (
            "flux/txt2img",
            json!({"prompt": "a fox", "width": 64, "height": 48, "steps": 2, "seed": 5,
            "lora": {"path": "lora_kohya.safetensors", "scale": 1.0}}),
        ),
        (
            "sdxl/txt2img",
            json!({"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 5}),
        ),
    ] {
        let r = call(addr, "POST", &format!("/v1/models/{id}"), &body).await;
        assert_eq!(r.status, 200, "{id}: {}", String::from_utf8_lossy(&r.body));
        let rid = r.json()["request_id"].as_str().unwrap().to_string();
        let res = result(addr, &rid).await;
        assert_eq!(res["status"], "completed", "{id}: {res}");
        assert_eq!(res["metadata"]["model_id"], id);
        images.push(first_image(addr, &res).await);
        let job = s.server.queue.store().get(&rid).unwrap().unwrap();
        let ck = if id.starts_with("flux") {
            "tiny_flux_dev_fp8.safetensors"
        } else {
            "tiny_sdxl.safetensors"
        };
        assert_eq!(job.prompt["1"]["inputs"]["ckpt_name"], ck);
        if id.starts_with("flux") {
            assert_eq!(job.prompt["8"]["inputs"]["width"], 64);
            assert_eq!(job.prompt["4"]["inputs"]["height"], 48);
        }
    }
    assert_ne!(images[0], images[1], "the LoRA changed nothing");
    // Flux has no negative prompt: an unknown field, named.
    let r = call(
        addr,
        "POST",
        "/v1/models/flux/txt2img",
        &json!({"prompt": "a", "negative_prompt": "b"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("negative_prompt: unknown field"),
        "{}",
        r.json()
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_from_the_quickstart_split_files() {
    let s = server_with("flux1-dev-fp8.safetensors", tiny_split()).await;
    let addr = s.addr;
    let m = call(addr, "GET", "/v1/models", &Value::Null).await.json();
    let flux = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "flux")
        .cloned()
        .unwrap_or_else(|| panic!("flux not listed: {m}"));
    assert_eq!(flux["base_checkpoint"], "tiny_flux.safetensors");
    let mut images = Vec::new();
    for mult in [1.0, 0.0] {
        let r = call(
            addr,
            "POST",
            "/v1/inference",
            &json!({"model": "flux",
            "loras": [{"path": "lora_diffusers.safetensors", "network_multiplier": mult}],
            "prompts": [{"prompt": "a fox", "width": 64, "height": 48, "sample_steps": 2}]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rid = r.json()["request_id"].as_str().unwrap().to_string();
        let res = result(addr, &rid).await;
        assert_eq!(res["status"], "succeeded", "{res}");
        images.push(first_image(addr, &res).await);
        let g = s.server.queue.store().get(&rid).unwrap().unwrap().prompt;
        assert_eq!(g["ckpt"]["class_type"], "UNETLoader");
        assert_eq!(g["ckpt"]["inputs"]["unet_name"], "tiny_flux.safetensors");
        assert_eq!(g["ckpt_clip"]["class_type"], "DualCLIPLoader");
        assert_eq!(g["lora"]["inputs"]["clip"], json!(["ckpt_clip", 0]));
        assert_eq!(g["lora"]["inputs"]["model"], json!(["ckpt", 0]));
        assert_eq!(g["p0_decode"]["inputs"]["vae"], json!(["ckpt_vae", 0]));
    }
    assert_ne!(images[0], images[1], "the LoRA changed nothing");
    // The Model API's flux/txt2img on the same files, with a LoRA.
    let r = call(
        addr,
        "POST",
        "/v1/models/flux/txt2img",
        &json!({"prompt": "a fox",
        "width": 64, "height": 48, "steps": 2, "seed": 1,
        "lora": {"path": "lora_kohya.safetensors", "scale": 0.5}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rid = r.json()["request_id"].as_str().unwrap().to_string();
    let res = result(addr, &rid).await;
    assert_eq!(res["status"], "completed", "{res}");
    let g = s.server.queue.store().get(&rid).unwrap().unwrap().prompt;
    assert_eq!(g["1"]["class_type"], "UNETLoader");
    assert_eq!(g["1_lora0"]["inputs"]["clip"], json!(["1_clip", 0]));
    assert_eq!(g["14"]["inputs"]["vae"], json!(["1_vae", 0]));
    s.server.shutdown().await;
}
