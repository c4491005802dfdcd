//! §2 Model API end to end on the tiny fixture model: schema, txt2img and img2img, field
//! errors in the body's own vocabulary, seeds, the shared /v1/requests routes, cancel.

mod server_common;

use base64::Engine;
use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "model-token";

async fn server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        serverless: ServerlessConfig {
            tokens: vec![ApiToken {
                name: "m".into(),
                token: TOKEN.into(),
            }],
            deployments_dir: dir.path().join("deployments"),
            sd15_checkpoint: "tiny_sd15.safetensors".into(),
            // The ComfyUI routes take an admin token (issue 18, defect 3).
            admins: vec!["m".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    start_in(dir, Some(&models), cfg).await
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

fn path_of(addr: SocketAddr, url: &Value) -> String {
    url.as_str()
        .unwrap()
        .strip_prefix(&format!("http://{addr}"))
        .unwrap()
        .to_string()
}

async fn finish(addr: SocketAddr, sub: &Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let st = call(
            addr,
            "GET",
            &path_of(addr, &sub["status_url"]),
            &Value::Null,
        )
        .await
        .json();
        if ["completed", "failed", "cancelled"].contains(&st["status"].as_str().unwrap()) {
            return call(
                addr,
                "GET",
                &path_of(addr, &sub["result_url"]),
                &Value::Null,
            )
            .await
            .json();
        }
        assert!(std::time::Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_txt2img_img2img_and_errors() {
    let s = server().await;
    let addr = s.addr;

    let sch = call(addr, "GET", "/v1/models/sd15/txt2img/schema", &Value::Null)
        .await
        .json();
    assert_eq!(sch["title"], "sd15/txt2img");
    assert_eq!(sch["required"], json!(["prompt"]));
    assert_eq!(sch["additionalProperties"], false);
    let p = &sch["properties"];
    assert_eq!(p["steps"]["type"], "integer");
    assert_eq!(p["steps"]["minimum"], 1);
    assert_eq!(p["steps"]["default"], 20);
    assert_eq!(p["width"]["default"], 512);
    assert_eq!(p["cfg"]["type"], "number");
    assert!(p["sampler"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("euler")));
    assert!(p["seed"].get("default").is_none());
    assert_eq!(p["lora"]["required"], json!(["path"]));

    // txt2img with a fixed seed.
    let r = call(
        addr,
        "POST",
        "/v1/models/sd15/txt2img",
        &json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "cfg": 5.0, "seed": 5,
                "sampler": "euler", "scheduler": "karras"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = r.json();
    let rid = sub["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        sub["status_url"],
        format!("http://{addr}/v1/requests/{rid}/status")
    );
    assert_eq!(
        sub["cancel_url"],
        format!("http://{addr}/v1/requests/{rid}/cancel")
    );
    let res = finish(addr, &sub).await;
    assert_eq!(res["status"], "completed", "{res}");
    assert_eq!(res["metadata"]["seed"], 5);
    assert_eq!(res["metadata"]["model_id"], "sd15/txt2img");
    let f = call(
        addr,
        "GET",
        &path_of(addr, &res["outputs"]["7"]["images"][0]["url"]),
        &Value::Null,
    )
    .await;
    assert_eq!(f.status, 200);
    let png = image::load_from_memory(&f.body).unwrap();
    assert_eq!((png.width(), png.height()), (64, 64));
    let job = s.server.queue.store().get(&rid).unwrap().unwrap();
    assert_eq!(job.prompt["5"]["inputs"]["scheduler"], "karras");
    assert_eq!(job.prompt["2"]["inputs"]["text"], "a cat");
    assert_eq!(
        job.prompt["1"]["inputs"]["ckpt_name"],
        "tiny_sd15.safetensors"
    );
    assert_eq!(job.source, "models");

    // No seed: one is drawn, used and reported.
    let sub = call(
        addr,
        "POST",
        "/v1/models/sd15/txt2img",
        &json!({"prompt": "x", "width": 64, "height": 64, "steps": 1}),
    )
    .await
    .json();
    let res = finish(addr, &sub).await;
    let seed = res["metadata"]["seed"].as_u64().expect("a drawn seed");
    let job = s
        .server
        .queue
        .store()
        .get(res["request_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(job.prompt["5"]["inputs"]["seed"], seed);

    // img2img on a data URI.
    let src = png_bytes(64, 64, 3);
    let uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&src)
    );
    let sub = call(
        addr,
        "POST",
        "/v1/models/sd15/img2img",
        &json!({"prompt": "a dog", "image": uri, "strength": 0.5, "steps": 2, "seed": 1}),
    )
    .await;
    assert_eq!(sub.status, 200, "{}", String::from_utf8_lossy(&sub.body));
    let res = finish(addr, &sub.json()).await;
    assert_eq!(res["status"], "completed", "{res}");
    let job = s
        .server
        .queue
        .store()
        .get(res["request_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(job.prompt["5"]["inputs"]["denoise"], 0.5);
    assert!(job.prompt["4"]["inputs"]["image"]
        .as_str()
        .unwrap()
        .ends_with(".png"));

    // Errors speak the body's field names.
    let bad = |body: Value| async move {
        let r = call(addr, "POST", "/v1/models/sd15/txt2img", &body).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let e = bad(json!({"prompt": "x", "sampler": "nope"})).await;
    assert_eq!(e["code"], "INVALID_INPUT");
    let p = &e["details"]["errors"][0];
    assert_eq!(p["field"], "sampler");
    assert_eq!(p["node_id"], "5");
    assert_eq!(p["input"], "sampler_name");
    assert!(p["allowed"].as_array().unwrap().contains(&json!("euler")));
    assert!(
        e["message"].as_str().unwrap().starts_with("sampler: "),
        "{e}"
    );
    let e = bad(json!({"prompt": "x", "steps": 0})).await;
    assert_eq!(e["details"]["errors"][0]["field"], "steps");
    assert_eq!(e["details"]["errors"][0]["allowed"]["min"], 1);
    let e = bad(json!({"negative_prompt": "x"})).await;
    assert_eq!(e["message"], "prompt: required");
    let e = bad(json!({"prompt": "x", "colour": "red"})).await;
    assert_eq!(e["code"], "INVALID_INPUT");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("colour: unknown field"),
        "{e}"
    );
    let e = bad(json!({"prompt": "x", "width": [1]})).await;
    assert_eq!(
        e["message"],
        "width: expected a single value, found an array"
    );
    let r = call(
        addr,
        "POST",
        "/v1/models/sd99/txt2img",
        &json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "MODEL_NOT_FOUND");
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_the_shared_request_routes() {
    let s = server().await;
    let addr = s.addr;
    // A long ComfyUI job occupies the one executor.
    let blocker = post_json(
        addr,
        &format!("/prompt?token={TOKEN}"),
        &json!({"prompt": sleep_workflow(60_000, "b")}),
    )
    .await
    .json();
    wait_queue_at(addr, &format!("/queue?token={TOKEN}"), 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    let sub = call(
        addr,
        "POST",
        "/v1/models/sd15/txt2img",
        &json!({"prompt": "x", "width": 64, "height": 64, "steps": 1}),
    )
    .await
    .json();
    let st = call(
        addr,
        "GET",
        &path_of(addr, &sub["status_url"]),
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(st["status"], "in_queue");
    assert_eq!(st["queue_position"], 0);
    let r = call(
        addr,
        "POST",
        &path_of(addr, &sub["cancel_url"]),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "cancelled");
    let res = call(
        addr,
        "GET",
        &path_of(addr, &sub["result_url"]),
        &Value::Null,
    )
    .await
    .json();
    assert_eq!(res["status"], "cancelled");
    // A ComfyUI job is not a serverless request.
    let r = call(
        addr,
        "GET",
        &format!(
            "/v1/requests/{}/status",
            blocker["prompt_id"].as_str().unwrap()
        ),
        &Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    post_json(addr, &format!("/interrupt?token={TOKEN}"), &json!({})).await;
    s.server.shutdown().await;
}

/// A small kohya-format LoRA touching one UNet attention block and two CLIP MLPs of the tiny
/// model (the layout tests/lora.rs uses).
fn write_tiny_lora(dir: &Path) {
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
    for (i, m) in ["attn1_to_q", "attn2_to_out_0", "ff_net_0_proj"]
        .iter()
        .enumerate()
    {
        let x = format!("lora_unet_input_blocks_3_1_transformer_blocks_0_{m}");
        let out = if *m == "ff_net_0_proj" { 512 } else { 64 };
        t.insert(
            format!("{x}.lora_down.weight"),
            rnd(300 + i as u64, &[4, 64]),
        );
        t.insert(
            format!("{x}.lora_up.weight"),
            rnd(310 + i as u64, &[out, 4]),
        );
        t.insert(
            format!("{x}.alpha"),
            Tensor::new(4.0f32, &Device::Cpu).unwrap(),
        );
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&t, dir.join("style.safetensors")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_in_the_body_changes_the_picture() {
    let s = server().await;
    let addr = s.addr;
    write_tiny_lora(&s.dir.path().join("models/loras"));
    let base = json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 9});
    let mut with = base.clone();
    with["lora"] = json!({"path": "style.safetensors", "scale": 0.8});
    let mut picture = Vec::new();
    for body in [base, with] {
        let r = call(addr, "POST", "/v1/models/sd15/txt2img", &body).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let res = finish(addr, &r.json()).await;
        assert_eq!(res["status"], "completed", "{res}");
        let job = s
            .server
            .queue
            .store()
            .get(res["request_id"].as_str().unwrap())
            .unwrap()
            .unwrap();
        let f = call(
            addr,
            "GET",
            &path_of(addr, &res["outputs"]["7"]["images"][0]["url"]),
            &Value::Null,
        )
        .await;
        picture.push((job.prompt, f.body));
    }
    let (plain, lora) = (&picture[0], &picture[1]);
    assert!(plain.0.get("1_lora0").is_none());
    let node = &lora.0["1_lora0"];
    assert_eq!(node["class_type"], "LoraLoader");
    assert_eq!(node["inputs"]["lora_name"], "style.safetensors");
    assert_eq!(node["inputs"]["strength_model"], 0.8);
    assert_eq!(lora.0["5"]["inputs"]["model"], json!(["1_lora0", 0]));
    assert_eq!(lora.0["2"]["inputs"]["clip"], json!(["1_lora0", 1]));
    assert_ne!(plain.1, lora.1, "the LoRA must change the image");
    // A LoRA that is not there is named.
    let r = call(
        addr,
        "POST",
        "/v1/models/sd15/txt2img",
        &json!({"prompt": "x", "loras": [{"path": "gone.safetensors"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "LORA_NOT_FOUND");
    let r = call(
        addr,
        "POST",
        "/v1/models/sd15/txt2img",
        &json!({"prompt": "x", "lora": {"scale": 1}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "lora[0].path: the LoRA file name is required"
    );
    s.server.shutdown().await;
}
