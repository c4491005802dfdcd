//! §3 ai-toolkit inference API over HTTP (health, the model list, validation and its error
//! codes, a run on the tiny model) and the OpenAPI document of every serverless route, whose
//! body schemas are checked field by field and against live responses of every family.

mod server_common;

use comfyrs::server::serverless::{ApiToken, ServerlessConfig};
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::net::SocketAddr;

const TOKEN: &str = "aitk-token";

async fn server() -> TestServer {
    server_with(|_, _| {}).await
}

async fn server_with(tweak: impl FnOnce(&std::path::Path, &mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models/loras")).unwrap();
    write_tiny_lora(&dir.path().join("models/loras"), "mine.safetensors");
    let mut cfg = ServerConfig {
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
    tweak(dir.path(), &mut cfg);
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
    // ai-toolkit samples SD 1.5 with DDPM on "leading" timesteps: ddpm + ddim_uniform.
    let sample = &job.prompt["p0_sample"];
    assert_eq!(sample["class_type"], "KSamplerAdvanced");
    assert_eq!(sample["inputs"]["sampler_name"], "ddpm");
    assert_eq!(sample["inputs"]["scheduler"], "ddim_uniform");
    assert_eq!(sample["inputs"]["steps"], 2);
    assert_eq!(sample["inputs"]["start_at_step"], 0);
    assert_eq!(sample["inputs"]["noise_seed"], 42);
    // sd15 takes no control image: one given is refused, nothing queued.
    let r = infer(
        addr,
        json!({"model": "sd15", "loras": [{"path": "mine.safetensors"}],
        "prompts": [{"prompt": "a", "ctrl_img": "https://example.com/pose.png"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": "INVALID_REQUEST", "message": "prompts[0].ctrl_img: model sd15 takes no control image (GET /v1/models: requires_control_image false); drop ctrl_img"})
    );
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

/// Checks `v` against `schema` (the subset of JSON Schema the document uses: `$ref`, `type`,
/// `enum`, `const`, `anyOf`, `required`, `properties`, `additionalProperties`, `items`);
/// returns every violation with its location.
fn violations(doc: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/components/schemas/").expect("local $ref");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling $ref {r}");
        return violations(doc, target, v, at);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|s| violations(doc, s, v, at).is_empty()) {
            errs.push(format!(
                "{at}: {v} matches none of {}",
                Value::Array(any.clone())
            ));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return errs;
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: required field {r} missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => errs.extend(violations(doc, ps, x, &here)),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{here}: field not declared")),
                    Some(s @ Value::Object(_)) => errs.extend(violations(doc, s, x, &here)),
                    _ => {}
                },
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            errs.extend(violations(doc, items, x, &format!("{at}[{i}]")));
        }
    }
    errs
}

/// The JSON schema the document gives for `method path` answering `status`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let responses = &doc["paths"][path][method]["responses"];
    let key = match status {
        400..=499 if responses.get(status.to_string()).is_none() => "4XX".to_string(),
        _ => status.to_string(),
    };
    let s = &responses[key]["content"]["application/json"]["schema"];
    assert!(
        !s.is_null(),
        "{method} {path} declares no {status} JSON body"
    );
    s
}

/// Asserts a live answer matches what the document says `method path` answers.
fn conforms(doc: &Value, path: &str, method: &str, r: &Resp) -> Value {
    let body = r.json();
    let schema = response_schema(doc, path, method, r.status);
    let errs = violations(doc, schema, &body, "body");
    assert!(
        errs.is_empty(),
        "{method} {path} ({}): {errs:#?}\n{body}",
        r.status
    );
    body
}

#[test]
fn the_schema_checker_rejects_what_it_should() {
    let doc = json!({"components": {"schemas": {"P": {"type": "object", "required": ["a"],
        "properties": {"a": {"type": "integer"}, "b": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "additionalProperties": false}}}});
    let p = json!({"$ref": "#/components/schemas/P"});
    assert!(violations(&doc, &p, &json!({"a": 1, "b": null}), "x").is_empty());
    assert_eq!(
        violations(&doc, &p, &json!({"b": "s"}), "x"),
        ["x: required field \"a\" missing"]
    );
    assert_eq!(
        violations(&doc, &p, &json!({"a": 1.5}), "x"),
        ["x.a: 1.5 is not of type \"integer\""]
    );
    assert_eq!(
        violations(&doc, &p, &json!({"a": 1, "c": 2}), "x"),
        ["x.c: field not declared"]
    );
    assert_eq!(violations(&doc, &p, &json!({"a": 1, "b": 3}), "x").len(), 1);
}

const KEY: &str = "admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_schemas_field_by_field_and_against_live_answers() {
    let s = server_with(|dir, cfg| {
        cfg.serverless.admin_keys = vec![KEY.into()];
        cfg.serverless.catalogs_dir = dir.join("catalogs");
        std::fs::create_dir_all(dir.join("catalogs")).unwrap();
        let catalog = json!({"version": 1, "date": "2026-12-01", "categories": [
            {"id": "sd", "name": "SD", "models": [
                {"name": "Mine High Noise", "file": "mine.safetensors", "dest": "loras", "size_gb": 0.001,
                 "base_model": "SD 1.5", "pair_id": "mine", "pair_role": "high", "tags": ["t"]},
                {"name": "Other", "file": "other.safetensors", "dest": "loras", "size_gb": 0.001,
                 "base_model": "SD 1.5", "tags": []}]}]});
        std::fs::write(dir.join("catalogs/loras.json"), catalog.to_string()).unwrap();
    })
    .await;
    let addr = s.addr;
    let doc = get(addr, "/openapi.json").await.json();
    conforms(
        &doc,
        "/openapi.json",
        "get",
        &get(addr, "/openapi.json").await,
    );
    let schemas = &doc["components"]["schemas"];

    // Every route declares what it answers; no generic "an object" is left.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let ok = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.starts_with('2'))
                .unwrap_or_else(|| panic!("{method} {path}: no 2xx"))
                .1;
            assert_ne!(
                ok["description"], "OK",
                "{method} {path} has no declared body"
            );
            if let Some(j) = ok["content"].get("application/json") {
                let r = j["schema"]["$ref"].as_str().unwrap_or("");
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(schemas.get(name).is_some(), "{method} {path}: {r}");
            }
            if let Some(b) = op.get("requestBody") {
                assert!(!b["content"]["application/json"]["schema"].is_null());
            }
        }
    }

    // Field by field, a few routes.
    let op = &doc["paths"]["/prod/v1/deployments/{deployment_id}/inference"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/DeploymentInference"})
    );
    let params: Vec<(&str, &str)> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(
        params,
        [
            ("deployment_id", "path"),
            ("webhook", "query"),
            ("webhook_intermediate_status", "query")
        ]
    );
    let di = &schemas["DeploymentInference"];
    assert_eq!(di["type"], "object");
    assert_eq!(di["additionalProperties"], false);
    let keys: Vec<&String> = di["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "overrides",
            "workflow_api_json",
            "webhook",
            "webhook_intermediate_status"
        ]
    );
    assert_eq!(
        di["properties"]["overrides"]["additionalProperties"]["required"],
        json!(["inputs"])
    );
    // Derived from the typed body (issue 18): optional fields also take null.
    assert_eq!(
        di["properties"]["webhook_intermediate_status"]["type"],
        json!(["boolean", "null"])
    );
    assert_eq!(
        schemas["RequestHandle"]["required"],
        json!(["request_id", "status_url", "result_url", "cancel_url"])
    );
    assert_eq!(
        schemas["RequestStatus"]["properties"]["status"]["enum"],
        json!([
            "in_queue",
            "in_progress",
            "succeeded",
            "completed",
            "failed",
            "cancelled",
            "canceled"
        ])
    );
    assert_eq!(
        doc["paths"]["/prod/v1/deployments"]["post"]["responses"]["201"]["content"]
            ["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/Deployment"})
    );
    let ai = &schemas["AitkInference"];
    assert_eq!(ai["required"], json!(["model", "loras", "prompts"]));
    assert_eq!(
        ai["properties"]["loras"]["items"]["properties"]["transformer"]["enum"],
        json!(["low", "high"])
    );
    let prompt = &ai["properties"]["prompts"]["items"];
    assert_eq!(prompt["required"], json!(["prompt"]));
    assert_eq!(
        prompt["properties"]["seed"]["type"],
        json!(["integer", "null"])
    );
    assert_eq!(
        prompt["properties"]["guidance_scale"]["type"],
        json!(["number", "null"])
    );
    assert_eq!(
        schemas["InferenceOutputs"]["properties"]["images"]["items"]["required"],
        json!(["format", "width", "height", "file_path", "seed"])
    );
    assert!(
        doc["paths"]["/api/admin/models/download/{filename}"]["post"]["responses"]
            .get("202")
            .is_some()
    );
    assert_eq!(
        schemas["CatalogListing"]["properties"]["stats"]["required"],
        json!([
            "queued_count",
            "downloading_count",
            "present_count",
            "total_count",
            "global_speed",
            "models_bytes",
            "free_bytes"
        ])
    );
    assert!(
        doc["paths"]["/v1/files/{id}/{filename}"]["get"]["responses"]["200"]["content"]
            .get("application/octet-stream")
            .is_some()
    );

    // Live answers of every family match the document.
    let auth = format!("Bearer {TOKEN}");
    let call = |method: &'static str, path: String, body: Value| {
        let auth = auth.clone();
        async move {
            let b = if body.is_null() {
                vec![]
            } else {
                body.to_string().into_bytes()
            };
            request(
                addr,
                method,
                &path,
                &[("Authorization", &auth), ("X-API-Key", KEY)],
                &b,
            )
            .await
        }
    };
    let wait_done = |status_path: String, schema_path: &'static str| {
        let doc = doc.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let r = call("GET", status_path.clone(), Value::Null).await;
                let st = conforms(&doc, schema_path, "get", &r);
                if ["succeeded", "completed", "failed", "cancelled", "canceled"]
                    .contains(&st["status"].as_str().unwrap())
                {
                    return st;
                }
                assert!(std::time::Instant::now() < deadline, "{st}");
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
        }
    };
    conforms(&doc, "/health", "get", &get(addr, "/health").await);
    conforms(
        &doc,
        "/v1/models",
        "get",
        &call("GET", "/v1/models".into(), Value::Null).await,
    );

    // Deployments.
    let r = call(
        "POST",
        "/prod/v1/deployments".into(),
        json!({"name": "saver", "workflow_api_json":
               {"1": {"class_type": "TestSavePng", "inputs": {"prefix": "oa"}}}}),
    )
    .await;
    assert_eq!(r.status, 201);
    let dep = conforms(&doc, "/prod/v1/deployments", "post", &r);
    let did = dep["deployment_id"].as_str().unwrap().to_string();
    let dp = "/prod/v1/deployments/{deployment_id}";
    conforms(
        &doc,
        "/prod/v1/deployments",
        "get",
        &call("GET", "/prod/v1/deployments".into(), Value::Null).await,
    );
    conforms(
        &doc,
        dp,
        "get",
        &call("GET", format!("/prod/v1/deployments/{did}"), Value::Null).await,
    );
    conforms(
        &doc,
        &format!("{dp}/schema"),
        "get",
        &call(
            "GET",
            format!("/prod/v1/deployments/{did}/schema"),
            Value::Null,
        )
        .await,
    );
    let r = call(
        "POST",
        format!("/prod/v1/deployments/{did}/inference"),
        json!({}),
    )
    .await;
    let h = conforms(&doc, &format!("{dp}/inference"), "post", &r);
    let rid = h["request_id"].as_str().unwrap().to_string();
    let req = "/prod/v1/deployments/{deployment_id}/requests/{request_id}";
    let st = wait_done(
        format!("/prod/v1/deployments/{did}/requests/{rid}/status"),
        "/prod/v1/deployments/{deployment_id}/requests/{request_id}/status",
    )
    .await;
    assert_eq!(st["status"], "succeeded");
    let res = conforms(
        &doc,
        &format!("{req}/result"),
        "get",
        &call(
            "GET",
            format!("/prod/v1/deployments/{did}/requests/{rid}/result"),
            Value::Null,
        )
        .await,
    );
    assert!(res["outputs"]["1"]["images"][0]["url"].is_string(), "{res}");
    // Errors: an override that names no node; cancelling a finished request (409).
    let r = call(
        "POST",
        format!("/prod/v1/deployments/{did}/inference"),
        json!({"overrides": {"99": {"inputs": {"prefix": "x"}}}}),
    )
    .await;
    assert_eq!(r.status, 400);
    conforms(&doc, &format!("{dp}/inference"), "post", &r);
    let r = call(
        "POST",
        format!("/prod/v1/deployments/{did}/requests/{rid}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 409);
    conforms(&doc, &format!("{req}/cancel"), "post", &r);
    // A running and a queued request, cancelled.
    let r = call(
        "POST",
        format!("/prod/v1/deployments/{did}/inference"),
        json!({"workflow_api_json": sleep_workflow(60_000, "z")}),
    )
    .await;
    let running = conforms(&doc, &format!("{dp}/inference"), "post", &r)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.server.queue.running().is_none_or(|r| r.id != running) {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = call(
        "POST",
        format!("/prod/v1/deployments/{did}/inference"),
        json!({}),
    )
    .await;
    let queued = conforms(&doc, &format!("{dp}/inference"), "post", &r)["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call("GET", format!("/v1/requests/{queued}/status"), Value::Null).await;
    let st = conforms(&doc, "/v1/requests/{id}/status", "get", &r);
    assert_eq!(st["status"], "in_queue");
    assert_eq!(st["queue_position"], 0);
    for id in [&queued, &running] {
        let r = call("POST", format!("/v1/requests/{id}/cancel"), Value::Null).await;
        assert_eq!(r.status, 200);
        conforms(&doc, "/v1/requests/{id}/cancel", "post", &r);
    }

    // Model API.
    conforms(
        &doc,
        "/v1/models/{model_id}",
        "get",
        &call("GET", "/v1/models/sd15/txt2img/schema".into(), Value::Null).await,
    );
    let r = call(
        "POST",
        "/v1/models/sd15/txt2img".into(),
        json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 1}),
    )
    .await;
    let h = conforms(&doc, "/v1/models/sd15/txt2img", "post", &r);
    let mid = h["request_id"].as_str().unwrap().to_string();
    let st = wait_done(
        format!("/v1/requests/{mid}/status"),
        "/v1/requests/{id}/status",
    )
    .await;
    assert_eq!(st["status"], "completed", "{st}");
    let res = conforms(
        &doc,
        "/v1/requests/{id}/result",
        "get",
        &call("GET", format!("/v1/requests/{mid}/result"), Value::Null).await,
    );
    assert!(res["metadata"]["seed"].is_u64(), "{res}");

    // ai-toolkit.
    let r = call(
        "POST",
        "/v1/inference".into(),
        json!({"model": "sd15",
        "loras": [{"path": "mine.safetensors"}],
        "prompts": [{"prompt": "a cat", "width": 64, "height": 64, "sample_steps": 1}]}),
    )
    .await;
    let q = conforms(&doc, "/v1/inference", "post", &r);
    let aid = q["request_id"].as_str().unwrap().to_string();
    let st = wait_done(
        format!("/v1/requests/{aid}/status"),
        "/v1/requests/{id}/status",
    )
    .await;
    assert_eq!(st["status"], "succeeded", "{st}");
    let res = conforms(
        &doc,
        "/v1/requests/{id}/result",
        "get",
        &call("GET", format!("/v1/requests/{aid}/result"), Value::Null).await,
    );
    assert_eq!(res["outputs"]["images"].as_array().unwrap().len(), 1);
    let r = call("POST", "/v1/inference".into(), json!({"model": "nope"})).await;
    assert_eq!(r.status, 404);
    conforms(&doc, "/v1/inference", "post", &r);

    // Catalog admin.
    let l = conforms(
        &doc,
        "/api/admin/loras",
        "get",
        &call("GET", "/api/admin/loras".into(), Value::Null).await,
    );
    // Downloads go to the first models root (the read-only fixtures here); `mine` is found in
    // the data dir's own models/loras (the second root) and so reads present; `other` is
    // nowhere.
    assert_eq!(l["categories"][0]["models"][0]["status"], "present");
    assert_eq!(l["categories"][0]["models"][1]["status"], "missing");
    assert_eq!(l["stats"]["total_count"], 2);
    conforms(
        &doc,
        "/api/admin/loras/compatible/{base_model}",
        "get",
        &call(
            "GET",
            "/api/admin/loras/compatible/SD%201.5".into(),
            Value::Null,
        )
        .await,
    );
    conforms(
        &doc,
        "/api/admin/models",
        "get",
        &call("GET", "/api/admin/models".into(), Value::Null).await,
    );
    let r = call(
        "POST",
        "/api/admin/models/download/other.safetensors".into(),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 400);
    conforms(&doc, "/api/admin/models/download/{filename}", "post", &r);
    let r = call(
        "DELETE",
        "/api/admin/models/other.safetensors".into(),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        conforms(&doc, "/api/admin/models/{filename}", "delete", &r)["code"],
        "FILE_NOT_FOUND"
    );

    let r = call("DELETE", format!("/prod/v1/deployments/{did}"), Value::Null).await;
    conforms(&doc, dp, "delete", &r);
    s.server.shutdown().await;
}
