//! ComfyUI's API over real HTTP and WebSocket against an in-process server on 127.0.0.1.

mod server_common;

use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;

fn kinds(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_events_history_and_view() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let mut ws = ws_connect(addr, "clientId=client-a").await;
    let hello = ws_next(&mut ws).await;
    assert_eq!(hello["type"], "status");
    assert_eq!(hello["data"]["sid"], "client-a");
    assert_eq!(hello["data"]["status"]["exec_info"]["queue_remaining"], 0);
    ws_send(
        &mut ws,
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}}),
    )
    .await;
    let ff = ws_next(&mut ws).await;
    assert_eq!(ff["type"], "feature_flags");
    assert_eq!(ff["data"]["supports_preview_metadata"], true);
    assert_eq!(ff["data"]["max_upload_size"], 104857600.0);

    let wf = json!({
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "TestSavePng", "inputs": {"prefix": "flow"}}
    });
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": wf, "client_id": "client-a"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let pid = body["prompt_id"].as_str().unwrap().to_string();
    assert_eq!(body["number"], 0);
    assert_eq!(body["node_errors"], json!({}));

    let msgs = ws_until_done(&mut ws, &pid).await;
    let k = kinds(&msgs);
    // status(queued) ... execution_start, execution_cached, executing/executed..., success,
    // status(q=0), executing null.
    assert_eq!(k[0], "status");
    let pos = |name: &str| {
        k.iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("{name} in {k:?}"))
    };
    assert!(pos("execution_start") < pos("execution_cached"));
    assert!(pos("execution_cached") < pos("executing"));
    assert!(pos("executing") < pos("executed"));
    let success = pos("execution_success");
    assert!(
        k[..success].iter().filter(|x| *x == "executed").count() == 2,
        "{k:?}"
    );
    assert_eq!(k[k.len() - 2], "status");
    assert_eq!(
        msgs[k.len() - 2]["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );
    assert_eq!(k.last().unwrap(), "executing");
    let start = &msgs[pos("execution_start")]["data"];
    assert_eq!(start["prompt_id"], pid.as_str());
    assert!(start["timestamp"].as_u64().unwrap() > 0);
    let executed: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "executed").collect();
    let text = executed.iter().find(|m| m["data"]["node"] == "2").unwrap();
    assert_eq!(text["data"]["output"]["text"], json!(["hello"]));
    assert_eq!(text["data"]["display_node"], "2");
    // progress_state reaches the owner; the last one (just before success) has every node
    // finished.
    let last_state = &msgs[success - 1];
    assert_eq!(last_state["type"], "progress_state", "{k:?}");
    assert_eq!(last_state["data"]["prompt_id"], pid.as_str());
    let nodes = last_state["data"]["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes.values().all(|n| n["state"] == "finished"),
        "{nodes:?}"
    );

    // History.
    let h = get(addr, &format!("/history/{pid}")).await.json();
    let e = &h[&pid];
    assert_eq!(e["status"]["status_str"], "success");
    assert_eq!(e["status"]["completed"], true);
    let mk: Vec<&str> = e["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        mk,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert_eq!(e["prompt"][1], pid.as_str());
    assert_eq!(e["prompt"][3]["client_id"], "client-a");
    assert_eq!(e["outputs"]["2"]["text"], json!(["hello"]));
    assert_eq!(e["meta"]["3"]["node_id"], "3");
    let img = &e["outputs"]["3"]["images"][0];
    let name = img["filename"].as_str().unwrap();

    // /view downloads the PNG the job wrote, byte for byte.
    let r = get(
        addr,
        &format!("/view?filename={name}&subfolder=&type=output"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/png"));
    let on_disk = std::fs::read(t.paths().output.join(name)).unwrap();
    assert_eq!(r.body, on_disk);
    // channel=a and a jpeg preview re-encode.
    let r = get(addr, &format!("/api/view?filename={name}&channel=a")).await;
    assert_eq!(r.status, 200);
    let a = image::load_from_memory(&r.body).unwrap().to_rgba8();
    assert_eq!(a.get_pixel(0, 0).0, [0, 0, 0, 200]);
    let r = get(addr, &format!("/view?filename={name}&preview=jpeg;80")).await;
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(&r.body[..2], &[0xFF, 0xD8]);

    // The same prompt again: everything comes from the cache.
    let r = post_json(
        addr,
        "/api/prompt",
        &json!({"prompt": wf, "client_id": "client-a"}),
    )
    .await;
    let pid2 = r.json()["prompt_id"].as_str().unwrap().to_string();
    let msgs = ws_until_done(&mut ws, &pid2).await;
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached")
        .unwrap();
    assert_eq!(cached["data"]["nodes"], json!(["1", "2", "3"]));
    // Nothing runs, so no `executing` with a node; cached output nodes still send `executed`.
    assert!(!msgs
        .iter()
        .any(|m| m["type"] == "executing" && !m["data"]["node"].is_null()));
    assert_eq!(kinds(&msgs).iter().filter(|k| *k == "executed").count(), 2);

    // Another client does not receive client-a's execution events.
    let mut other = ws_connect(addr, "clientId=client-b").await;
    let _ = ws_next(&mut other).await;
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("x"), "client_id": "client-a"}),
    )
    .await;
    let pid3 = r.json()["prompt_id"].as_str().unwrap().to_string();
    ws_until_done(&mut ws, &pid3).await;
    // client-b saw only status broadcasts.
    let mut seen = Vec::new();
    while let Ok(m) =
        tokio::time::timeout(std::time::Duration::from_millis(300), ws_next(&mut other)).await
    {
        seen.push(m["type"].as_str().unwrap().to_string());
    }
    assert!(seen.iter().all(|k| k == "status"), "{seen:?}");
    assert!(!seen.is_empty());

    // GET /history lists all three, oldest first; max_items keeps the last.
    let h = get(addr, "/history").await.json();
    let ids: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(ids, [&pid, &pid2, &pid3]);
    let h = get(addr, "/history?max_items=1").await.json();
    assert_eq!(h.as_object().unwrap().keys().collect::<Vec<_>>(), [&pid3]);
    let h = get(addr, "/history?max_items=1&offset=1").await.json();
    assert_eq!(h.as_object().unwrap().keys().collect::<Vec<_>>(), [&pid2]);
    assert_eq!(
        post_json(addr, "/history", &json!({"delete": [pid2]}))
            .await
            .status,
        200
    );
    assert_eq!(
        get(addr, &format!("/history/{pid2}")).await.json(),
        json!({})
    );
    assert_eq!(
        get(addr, "/prompt").await.json(),
        json!({"exec_info": {"queue_remaining": 0}})
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_field_by_field() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let r = post_json(addr, "/prompt", &json!({"client_id": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"type": "no_prompt", "message": "No prompt provided",
                         "details": "No prompt provided", "extra_info": {}}, "node_errors": {}})
    );
    // A required input missing.
    let wf = json!({"2": {"class_type": "PreviewAny", "inputs": {}}});
    let r = post_json(addr, "/prompt", &json!({"prompt": wf})).await;
    assert_eq!(r.status, 400);
    let b = r.json();
    assert_eq!(b["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(b["error"]["message"], "Prompt outputs failed validation");
    let ne = &b["node_errors"]["2"];
    assert_eq!(ne["class_type"], "PreviewAny");
    assert_eq!(ne["dependent_outputs"], json!(["2"]));
    let e0 = &ne["errors"][0];
    assert_eq!(e0["type"], "required_input_missing");
    assert_eq!(e0["message"], "Required input is missing");
    assert_eq!(e0["details"], "source");
    assert_eq!(e0["extra_info"]["input_name"], "source");
    // No output node.
    let wf = json!({"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}}});
    let b = post_json(addr, "/prompt", &json!({"prompt": wf}))
        .await
        .json();
    assert_eq!(b["error"]["type"], "prompt_no_outputs");
    assert_eq!(b["node_errors"], json!({}));
    // Unknown class.
    let wf = json!({"1": {"class_type": "NoSuchNode", "inputs": {}}});
    let r = post_json(addr, "/prompt", &json!({"prompt": wf})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NoSuchNode"));
    // A wrong value type, with a valid output beside it: 200 with node_errors.
    let wf = json!({
        "1": {"class_type": "DevSleep", "inputs": {"ms": "abc", "text": ""}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": "ok"}}
    });
    let r = post_json(addr, "/prompt", &json!({"prompt": wf})).await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(
        b["node_errors"]["1"]["errors"][0]["type"],
        "invalid_input_type"
    );
    // Bad JSON is a clear 400, not a 500.
    let r = request(addr, "POST", "/prompt", &[], b"{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_json");
    // A duplicate prompt_id.
    let pid = b["prompt_id"].as_str().unwrap();
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("a"), "prompt_id": pid}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_prompt_id");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_priority_delete_and_interrupt() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let mut ws = ws_connect(addr, "clientId=q").await;
    let _ = ws_next(&mut ws).await;
    let slow = post_json(
        addr,
        "/prompt",
        &json!({"prompt": sleep_workflow(20_000, "slow"), "client_id": "q"}),
    )
    .await
    .json();
    let slow_id = slow["prompt_id"].as_str().unwrap().to_string();
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    let a = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("a"), "client_id": "q"}),
    )
    .await
    .json();
    let b = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("b"), "client_id": "q"}),
    )
    .await
    .json();
    let c = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("c"), "client_id": "q", "front": true}),
    )
    .await
    .json();
    let d = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("d"), "client_id": "q", "number": 1.5}),
    )
    .await
    .json();
    assert_eq!(c["number"], -3);
    assert_eq!(d["number"], 1.5);
    let q = get(addr, "/queue").await.json();
    assert_eq!(q["queue_running"][0][1], slow_id.as_str());
    assert_eq!(q["queue_running"][0][4], json!(["1"]));
    let pending: Vec<&str> = q["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 4);
    assert_eq!(pending[0], c["prompt_id"].as_str().unwrap());
    assert_eq!(
        get(addr, "/prompt").await.json()["exec_info"]["queue_remaining"],
        5
    );
    // Delete b; a running job is untouched by delete.
    let r = post_json(
        addr,
        "/queue",
        &json!({"delete": [b["prompt_id"], slow_id]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let q = get(addr, "/queue").await.json();
    assert_eq!(q["queue_pending"].as_array().unwrap().len(), 3);
    assert_eq!(q["queue_running"].as_array().unwrap().len(), 1);
    // Interrupt with another prompt's id does nothing; with the running id it stops it.
    post_json(addr, "/interrupt", &json!({"prompt_id": a["prompt_id"]})).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        get(addr, "/queue").await.json()["queue_running"][0][1],
        slow_id.as_str()
    );
    let r = post_json(addr, "/api/interrupt", &json!({"prompt_id": slow_id})).await;
    assert_eq!(r.status, 200);
    let msgs = ws_until_done(&mut ws, &slow_id).await;
    let k = kinds(&msgs);
    assert!(k.contains(&"execution_interrupted".to_string()), "{k:?}");
    assert!(k.contains(&"progress".to_string()), "{k:?}");
    let h = wait_history(addr, &slow_id, 10).await;
    assert_eq!(h["status"]["status_str"], "error");
    assert_eq!(h["status"]["completed"], false);
    // The rest run in priority order: c, a, d; b never runs.
    for p in [&c, &a, &d] {
        let pid = p["prompt_id"].as_str().unwrap();
        assert_eq!(
            wait_history(addr, pid, 10).await["status"]["status_str"],
            "success"
        );
    }
    let h = get(addr, "/history").await.json();
    let order: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(
        order,
        [
            &slow_id,
            c["prompt_id"].as_str().unwrap(),
            a["prompt_id"].as_str().unwrap(),
            d["prompt_id"].as_str().unwrap()
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .iter()
        .collect::<Vec<_>>()
    );
    assert!(h.get(b["prompt_id"].as_str().unwrap()).is_none());
    // clear empties the pending queue.
    post_json(
        addr,
        "/prompt",
        &json!({"prompt": sleep_workflow(20_000, "s2")}),
    )
    .await;
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    post_json(addr, "/prompt", &json!({"prompt": text_workflow("e")})).await;
    post_json(addr, "/queue", &json!({"clear": true})).await;
    let q = get(addr, "/queue").await.json();
    assert_eq!(q["queue_pending"], json!([]));
    post_json(addr, "/interrupt", &json!({})).await;
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().is_empty()
    })
    .await;
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_api() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let ok = post_json(
        addr,
        "/prompt",
        &json!({"prompt": {"3": {"class_type": "TestSavePng", "inputs": {"prefix": "job"}}}}),
    )
    .await
    .json();
    let ok_id = ok["prompt_id"].as_str().unwrap();
    wait_history(addr, ok_id, 10).await;
    let slow = post_json(
        addr,
        "/prompt",
        &json!({"prompt": sleep_workflow(20_000, "x")}),
    )
    .await
    .json();
    let slow_id = slow["prompt_id"].as_str().unwrap();
    wait_queue(addr, 10, |q| {
        q["queue_running"].as_array().unwrap().len() == 1
    })
    .await;
    let pend = post_json(addr, "/prompt", &json!({"prompt": text_workflow("p")}))
        .await
        .json();
    let pend_id = pend["prompt_id"].as_str().unwrap();

    // /jobs exists only under /api.
    assert_eq!(get(addr, "/jobs").await.status, 404);
    let r = get(addr, "/api/jobs?status=completed").await.json();
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    let j = &r["jobs"][0];
    assert_eq!(j["id"], ok_id);
    assert_eq!(j["status"], "completed");
    assert_eq!(j["outputs_count"], 1);
    assert_eq!(j["preview_output"]["nodeId"], "3");
    assert_eq!(j["preview_output"]["mediaType"], "images");
    assert!(
        j["execution_start_time"].as_i64().unwrap() <= j["execution_end_time"].as_i64().unwrap()
    );
    let r = get(addr, "/api/jobs?status=pending,in_progress&sort_order=asc")
        .await
        .json();
    let st: Vec<&str> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["in_progress", "pending"]);
    assert_eq!(r["pagination"]["total"], 2);
    let r = get(addr, "/api/jobs?limit=1").await.json();
    assert_eq!(r["pagination"]["has_more"], true);
    assert_eq!(get(addr, "/api/jobs?status=bogus").await.status, 400);
    assert_eq!(get(addr, "/api/jobs?sort_by=x").await.status, 400);
    assert_eq!(get(addr, "/api/jobs?limit=-1").await.status, 400);
    let one = get(addr, &format!("/api/jobs/{ok_id}")).await.json();
    assert_eq!(one["workflow"]["prompt"]["3"]["class_type"], "TestSavePng");
    assert_eq!(one["execution_status"]["status_str"], "success");
    let r = get(addr, "/api/jobs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "Job not found"}));
    // Cancel: a pending one is dequeued, the running one is interrupted.
    let r = post_json(addr, &format!("/api/jobs/{pend_id}/cancel"), &json!({}))
        .await
        .json();
    assert_eq!(r, json!({"cancelled": true}));
    assert_eq!(
        post_json(addr, "/api/jobs/cancel", &json!({"job_ids": ["nope"]}))
            .await
            .status,
        400
    );
    let r = post_json(addr, "/api/jobs/cancel", &json!({"job_ids": [slow_id]}))
        .await
        .json();
    assert_eq!(r, json!({"cancelled": true}));
    wait_history(addr, slow_id, 10).await;
    let s = get(addr, &format!("/api/jobs/{slow_id}")).await.json();
    assert_eq!(s["status"], "cancelled");
    let p = get(addr, &format!("/api/jobs/{pend_id}")).await.json();
    assert_eq!(p["status"], "cancelled");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_does_not_take_the_server_down() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let mut ws = ws_connect(addr, "clientId=p").await;
    let _ = ws_next(&mut ws).await;
    let r = post_json(addr, "/prompt", &json!({"prompt": {"1": {"class_type": "TestPanic", "inputs": {"why": "kaboom"}}}, "client_id": "p"})).await.json();
    let pid = r["prompt_id"].as_str().unwrap();
    let msgs = ws_until_done(&mut ws, pid).await;
    let err = msgs
        .iter()
        .find(|m| m["type"] == "execution_error")
        .expect("execution_error");
    assert_eq!(err["data"]["node_id"], "1");
    assert_eq!(err["data"]["node_type"], "TestPanic");
    assert!(err["data"]["exception_message"]
        .as_str()
        .unwrap()
        .contains("kaboom"));
    let h = wait_history(addr, pid, 10).await;
    assert_eq!(h["status"]["status_str"], "error");
    // Still serving and running jobs.
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": text_workflow("after"), "client_id": "p"}),
    )
    .await
    .json();
    let pid2 = r["prompt_id"].as_str().unwrap();
    assert_eq!(
        wait_history(addr, pid2, 10).await["status"]["status_str"],
        "success"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_routes() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let info = get(addr, "/object_info").await.json();
    assert!(info["PreviewAny"]["output_node"].as_bool().unwrap());
    assert!(info.get("DevSleep").is_some());
    let one = get(addr, "/api/object_info/PrimitiveString").await.json();
    assert_eq!(one.as_object().unwrap().len(), 1);
    assert_eq!(get(addr, "/object_info/Nope").await.json(), json!({}));
    let s = get(addr, "/system_stats").await.json();
    assert!(s["system"]["ram_total"].as_u64().is_some());
    assert_eq!(s["devices"].as_array().unwrap().len(), 1);
    let models = get(addr, "/models").await.json();
    assert!(models.as_array().unwrap().contains(&json!("checkpoints")));
    let ck = t.dir.path().join("models/checkpoints/sub");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("m.safetensors"), b"x").unwrap();
    std::fs::write(ck.join("notes.txt"), b"x").unwrap();
    assert_eq!(
        get(addr, "/models/checkpoints").await.json(),
        json!(["sub/m.safetensors"])
    );
    assert_eq!(get(addr, "/api/models/nope").await.status, 404);
    let emb = t.dir.path().join("models/embeddings");
    std::fs::create_dir_all(&emb).unwrap();
    std::fs::write(emb.join("EasyNegative.safetensors"), b"x").unwrap();
    assert_eq!(
        get(addr, "/embeddings").await.json(),
        json!(["EasyNegative"])
    );
    assert_eq!(get(addr, "/extensions").await.json(), json!([]));
    let f = get(addr, "/api/features").await.json();
    assert_eq!(f["supports_preview_metadata"], true);
    let r = get(addr, "/api/nothing/here").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().is_some());
    let r = post_json(
        addr,
        "/free",
        &json!({"unload_models": true, "free_memory": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    t.server.shutdown().await;
}

/// Every frame until `executing {node: null}` of `prompt_id`: (JSON messages, binary frames,
/// the order of both as message types with `"binary"` for a binary frame).
async fn ws_frames_until_done(
    ws: &mut Ws,
    prompt_id: &str,
) -> (Vec<Value>, Vec<Vec<u8>>, Vec<String>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut texts, mut binaries, mut order) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .expect("websocket message within 60 s")
            .expect("open socket")
            .expect("frame");
        match msg {
            Message::Binary(b) => {
                binaries.push(b.to_vec());
                order.push("binary".to_string());
            }
            Message::Text(t) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                let done = m["type"] == "executing"
                    && m["data"]["node"].is_null()
                    && m["data"]["prompt_id"] == prompt_id;
                order.push(m["type"].as_str().unwrap_or("").to_string());
                texts.push(m);
                if done {
                    return (texts, binaries, order);
                }
            }
            _ => {}
        }
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latent_previews_reach_the_submitting_client_in_its_format() {
    use comfyrs::sampling::preview::{PreviewMethod, PreviewSettings};
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    let t = start_with(
        tempfile::tempdir().unwrap(),
        Some(&models),
        ServerConfig::default(),
        |env| {
            env.previews = PreviewSettings {
                method: PreviewMethod::Latent2Rgb,
                max_size: 64,
            }
        },
    )
    .await;
    let addr = t.addr;
    let mut with_meta = ws_connect(addr, "clientId=meta").await;
    assert_eq!(ws_next(&mut with_meta).await["type"], "status");
    ws_send(
        &mut with_meta,
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}}),
    )
    .await;
    assert_eq!(ws_next(&mut with_meta).await["type"], "feature_flags");
    let mut plain = ws_connect(addr, "clientId=plain").await;
    assert_eq!(ws_next(&mut plain).await["type"], "status");

    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/tiny_txt2img.json"),
    )
    .unwrap();
    let workflow: Value = serde_json::from_str(&text).unwrap();
    let steps = workflow["5"]["inputs"]["steps"].as_u64().unwrap() as usize;
    let jpeg_size = |bytes: &[u8]| {
        let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .expect("a JPEG preview");
        (img.width(), img.height())
    };

    // The client that asked for metadata gets PREVIEW_IMAGE_WITH_METADATA, one per step.
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": workflow, "client_id": "meta"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
    let (texts, frames, order) = ws_frames_until_done(&mut with_meta, &id).await;
    assert!(texts.iter().any(|m| m["type"] == "execution_success"));
    assert_eq!(frames.len(), steps);
    // ComfyUI's order for this form: progress_state, the preview, progress.
    for (i, _) in order.iter().enumerate().filter(|(_, k)| *k == "binary") {
        assert_eq!(
            (order[i - 1].as_str(), order[i + 1].as_str()),
            ("progress_state", "progress"),
            "{order:?}"
        );
    }
    for f in &frames {
        assert_eq!(be_u32(&f[..4]), 4, "PREVIEW_IMAGE_WITH_METADATA");
        let len = be_u32(&f[4..8]) as usize;
        let meta: Value = serde_json::from_slice(&f[8..8 + len]).unwrap();
        assert_eq!(
            meta,
            json!({"node_id": "5", "prompt_id": id, "display_node_id": "5",
                   "parent_node_id": null, "real_node_id": "5", "image_type": "image/jpeg"})
        );
        // The 64x64 image's 8x8 latent, fitted into 64x64.
        assert_eq!(jpeg_size(&f[8 + len..]), (64, 64));
    }

    // The other client saw none of them; its own prompt's previews (a new seed, so the
    // sampler runs again) come as PREVIEW_IMAGE.
    let mut reseeded = workflow.clone();
    reseeded["5"]["inputs"]["seed"] = json!(7);
    let r = post_json(
        addr,
        "/prompt",
        &json!({"prompt": reseeded, "client_id": "plain"}),
    )
    .await;
    let id2 = r.json()["prompt_id"].as_str().unwrap().to_string();
    let (texts, frames, order) = ws_frames_until_done(&mut plain, &id2).await;
    assert!(texts.iter().all(|m| m["data"]["prompt_id"] != id.as_str()));
    assert_eq!(frames.len(), steps);
    // ComfyUI sends the old form right after the step's progress message.
    for (i, _) in order.iter().enumerate().filter(|(_, k)| *k == "binary") {
        assert_eq!(order[i - 1], "progress", "{order:?}");
    }
    for f in &frames {
        assert_eq!(
            (be_u32(&f[..4]), be_u32(&f[4..8])),
            (1, 1),
            "PREVIEW_IMAGE, JPEG"
        );
        assert_eq!(jpeg_size(&f[8..]), (64, 64));
    }
    t.stop().await;
}
