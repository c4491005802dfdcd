//! The output parts of result bodies (and of webhook bodies, which repeat them): history
//! `outputs` with a hosted `url` on every file item, and the ai-toolkit shape. A leaf: the
//! request lifecycle ([`super::requests`]), the families and the file route all use it.

use serde_json::{json, Value};

/// The URL of one output file.
pub fn file_url(base: &str, request_id: &str, filename: &str) -> String {
    format!("{base}/v1/files/{request_id}/{}", encode_segment(filename))
}

/// A copy of history `outputs` with a `url` on every item that names a file.
pub fn outputs_with_urls(base: &str, request_id: &str, outputs: &Value) -> Value {
    let mut out = outputs.clone();
    if let Some(nodes) = out.as_object_mut() {
        for ui in nodes.values_mut() {
            let Some(ui) = ui.as_object_mut() else {
                continue;
            };
            for items in ui.values_mut() {
                for it in items.as_array_mut().into_iter().flatten() {
                    let Some(name) = it.get("filename").and_then(Value::as_str) else {
                        continue;
                    };
                    let url = file_url(base, request_id, name);
                    if let Some(o) = it.as_object_mut() {
                        // `url` first, like the hosted services' examples.
                        let mut with = serde_json::Map::new();
                        with.insert("url".into(), Value::String(url));
                        with.extend(std::mem::take(o));
                        *o = with;
                    }
                }
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The ai-toolkit result's `outputs` and `metadata` from the job's history outputs.
pub fn aitk_result_parts(
    base: &str,
    job: &crate::store::JobRecord,
    extra: &Value,
) -> (Value, Value) {
    let mut images = Vec::new();
    for p in extra["prompts"].as_array().into_iter().flatten() {
        let node = p["node_id"].as_str().unwrap_or("");
        for img in job.outputs[node]["images"].as_array().into_iter().flatten() {
            let name = img["filename"].as_str().unwrap_or("");
            images.push(json!({
                "format": name.rsplit('.').next().unwrap_or("png"),
                "width": p["width"], "height": p["height"],
                "file_path": file_url(base, &job.id, name),
                "seed": p["seed"],
            }));
        }
    }
    let ms = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => json!(b - a),
        _ => Value::Null,
    };
    let metadata = json!({
        "model": extra["model"],
        "timings": {
            "queue_ms": ms(Some(job.created_at), job.started_at),
            "inference_ms": ms(job.started_at, job.finished_at),
            "total_ms": ms(Some(job.created_at), job.finished_at),
        }
    });
    (json!({"images": images, "videos": []}), metadata)
}
