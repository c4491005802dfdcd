//! §3 ai-toolkit inference API over HTTP (what runs without LoRA support: health, the model
//! list, validation and its error codes) and the OpenAPI document of every serverless route.

mod server_common;

use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;

const TOKEN: &str = "aitk-token";

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    write_tiny_lora(&dir.path().join("models/loras"), "mine.safetensors");
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![ApiToken {
                name: "a".into(),
                token: TOKEN.into(),
            }],
            deployments_dir: dir.path().join("deployments"),
            sd15_checkpoint: "tiny_sd15.safetensors".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    start_in(dir, Some(&models), cfg).await
}

/// A small kohya-format LoRA for the tiny model (the layout tests/lora.rs uses).
fn write_tiny_lora(dir: &std::path::Path, name: &str) {
    use candle_core::{Device, Tensor};
    let rnd = |seed: u64, shape: &[usize]| {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let mut t = std::collections::HashMap::new();
    let x = "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q";
    t.insert(format!("{x}.lora_down.weight"), rnd(1, &[4, 64]));
    t.insert(format!("{x}.lora_up.weight"), rnd(2, &[64, 4]));
    t.insert(
        format!("{x}.alpha"),
        Tensor::new(4.0f32, &Device::Cpu).unwrap(),
    );
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&t, dir.join(name)).unwrap();
}

async fn infer(addr: SocketAddr, body: Value) -> Resp {
    request(
        addr,
        "POST",
        "/v1/inference",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_error_codes() {
    let s = server().await;
    let addr = s.addr;
    // Health needs no token.
    let h = get(addr, "/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json(), json!({"status": "healthy"}));

    let m = request(
        addr,
        "GET",
        "/v1/models",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await
    .json();
    let ids: Vec<&str> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sd15"]);
    let sd = &m["models"][0];
    assert_eq!(sd["resolution_divisor"], 8);
    assert_eq!(sd["requires_control_image"], false);
    assert_eq!(sd["defaults"]["sample_steps"], 25);
    assert_eq!(sd["base_checkpoint"], "tiny_sd15.safetensors");

    let prompts = json!([{"prompt": "[trigger] a cat"}]);
    let cases = [
        (
            json!({"model": "flux", "loras": [{"path": "mine.safetensors"}], "prompts": prompts}),
            404,
            "MODEL_NOT_FOUND",
        ),
        (
            json!({"model": "sd15", "prompts": prompts}),
            400,
            "LORA_FILE_REQUIRED",
        ),
        (
            json!({"model": "sd15", "loras": [{"path": "gone.safetensors"}], "prompts": prompts}),
            404,
            "LORA_NOT_FOUND",
        ),
        (
            json!({"model": "sd15", "loras": [{"path": "mine.safetensors"}, {"path": "mine.safetensors"}], "prompts": prompts}),
            400,
            "SINGLE_LORA_ONLY",
        ),
        (
            json!({"model": "sd15", "loras": [{"path": "mine.safetensors", "transformer": "high"}], "prompts": prompts}),
            400,
            "MOE_FORMAT_NOT_SUPPORTED",
        ),
    ];
    for (body, status, code) in cases {
        let r = infer(addr, body).await;
        assert_eq!(
            r.status,
            status,
            "{code}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["code"], code);
    }
    // A valid request runs end to end on the tiny model with a tiny LoRA.
    let r = infer(addr, json!({"model": "sd15", "trigger_word": "sks",
        "loras": [{"path": "mine.safetensors", "network_multiplier": 0.5}],
        "prompts": [{"prompt": "[trigger] a cat", "width": 70, "height": 64, "sample_steps": 2},
                    {"prompt": "plain", "width": 64, "height": 64, "sample_steps": 1, "seed": -1}]})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = r.json();
    assert_eq!(sub["status"], "queued");
    assert!(sub["created_at"].is_string());
    let rid = sub["request_id"].as_str().unwrap().to_string();
    let auth = format!("Bearer {TOKEN}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let res = loop {
        let res = request(
            addr,
            "GET",
            &format!("/v1/requests/{rid}/result"),
            &[("Authorization", &auth)],
            b"",
        )
        .await
        .json();
        if res["status"] == "succeeded" || res["status"] == "failed" {
            break res;
        }
        assert!(std::time::Instant::now() < deadline, "{res}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(res["status"], "succeeded", "{res}");
    let imgs = res["outputs"]["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0]["seed"], 42);
    assert_eq!(
        (imgs[0]["width"].as_i64(), imgs[0]["height"].as_i64()),
        (Some(64), Some(64))
    );
    assert_eq!(imgs[0]["format"], "png");
    assert!(imgs[1]["seed"].as_i64().unwrap() >= 0);
    assert_eq!(res["outputs"]["videos"], json!([]));
    assert!(res["metadata"]["timings"]["total_ms"].as_i64().is_some());
    let path = imgs[0]["file_path"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("http://{addr}"))
        .unwrap()
        .to_string();
    let f = request(addr, "GET", &path, &[("Authorization", &auth)], b"").await;
    assert_eq!(f.status, 200);
    let job = s.server.queue.store().get(&rid).unwrap().unwrap();
    assert_eq!(job.prompt["p0_pos"]["inputs"]["text"], "sks a cat");
    assert_eq!(job.prompt["lora"]["inputs"]["strength_model"], 0.5);
    // An unknown request id.
    let r = request(
        addr,
        "GET",
        "/v1/requests/5b8e0000-0000-4000-8000-000000000000/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "REQUEST_NOT_FOUND");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route() {
    let s = server().await;
    let doc = get(s.addr, "/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/prod/v1/deployments", "post"),
        ("/prod/v1/deployments/{deployment_id}", "delete"),
        ("/prod/v2/deployments/{deployment_id}/inference", "post"),
        (
            "/prod/v1/deployments/{deployment_id}/requests/{request_id}/cancel",
            "post",
        ),
        ("/v1/models/{model_id}", "post"),
        ("/v1/models/sd15/txt2img", "post"),
        ("/v1/requests/{id}/status", "get"),
        ("/v1/files/{id}/{filename}", "get"),
        ("/v1/inference", "post"),
        ("/health", "get"),
        ("/api/admin/loras", "get"),
        ("/api/admin/models/download/{filename}", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let op = &paths["/prod/v1/deployments/{deployment_id}/requests/{request_id}/status"]["get"];
    assert_eq!(op["parameters"][1]["name"], "request_id");
    assert_eq!(op["security"], json!([{"bearer": []}]));
    assert_eq!(
        paths["/api/admin/loras"]["get"]["security"],
        json!([{"adminKey": []}])
    );
    let schema = &paths["/v1/models/sd15/txt2img"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert_eq!(schema["required"], json!(["prompt"]));
    // Every documented route answers (something other than "no route").
    for (path, ops) in paths {
        if path.contains('{') {
            continue;
        }
        for method in ops.as_object().unwrap().keys() {
            let r = request(s.addr, &method.to_uppercase(), path, &[], b"").await;
            let body = String::from_utf8_lossy(&r.body).to_string();
            assert!(!body.contains("no route for"), "{method} {path}: {body}");
        }
    }
    let html = get(s.addr, "/docs").await;
    assert_eq!(html.status, 200);
    let text = String::from_utf8_lossy(&html.body);
    assert!(text.contains("/prod/v1/deployments/{deployment_id}/inference"));
    s.server.shutdown().await;
}
