//! The routes ComfyUI's frontend needs, over real HTTP on 127.0.0.1 (spec
//! custom-nodes-and-frontend.md B2.1): `/` and the static fallback, users and settings
//! (bodies without Content-Type, empty bodies), userdata (overwrite=undefined, 409, move,
//! v2), the model library and `/view_metadata`, `/internal/*` with the `logs` WebSocket
//! event, `/view` ranges, and the browser session cookie from `/?token=`.

mod server_common;

use comfyrs::server::frontend::FrontendConfig;
use comfyrs::server::ServerConfig;
use serde_json::{json, Value};
use server_common::*;
use std::path::Path;

/// A stand-in frontend folder: index.html, a script and an index JSON.
fn fake_frontend(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("static");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<html>editor</html>").unwrap();
    std::fs::write(root.join("assets/app.js"), "export const x = 1;").unwrap();
    std::fs::write(root.join("assets/logo.png"), png_bytes(2, 2, 1)).unwrap();
    root
}

fn config_with(root: Option<&Path>, user: &Path) -> ServerConfig {
    ServerConfig {
        frontend: FrontendConfig {
            root: root.map(Path::to_path_buf),
            user_dir: Some(user.to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
    request(addr, method, path, &[], body).await
}

#[tokio::test]
async fn index_static_fallback_and_json_404() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_frontend(tmp.path());
    let s = start(config_with(Some(&root), &tmp.path().join("user"))).await;
    let r = get(s.addr, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<html>editor</html>");
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    assert_eq!(r.header("expires"), Some("0"));
    let js = get(s.addr, "/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert!(js.header("content-type").unwrap().contains("javascript"));
    let png = get(s.addr, "/assets/logo.png").await;
    assert_eq!(
        (png.status, png.header("content-type")),
        (200, Some("image/png"))
    );
    // API routes win over files; unknown paths and /api/* are JSON 404s; no escaping.
    assert_eq!(get(s.addr, "/object_info").await.status, 200);
    for p in [
        "/nope.js",
        "/api/assets/app.js",
        "/../Cargo.toml",
        "/assets/%2e%2e/index.html",
    ] {
        let r = get(s.addr, p).await;
        assert_eq!(r.status, 404, "{p}");
        assert!(r.json()["error"].is_string(), "{p}");
    }
    s.server.shutdown().await;

    // Without a frontend, / says how to get one.
    let s = start(config_with(None, &tmp.path().join("user"))).await;
    let r = get(s.addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = String::from_utf8_lossy(&r.body);
    assert!(
        page.contains("pip install comfyui-frontend-package==1.27.10"),
        "{page}"
    );
    assert!(page.contains("--front-end-root"), "{page}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn users_and_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("user");
    let s = start(config_with(None, &user)).await;
    assert_eq!(
        get(s.addr, "/api/users").await.json(),
        json!({"storage": "server", "migrated": false})
    );
    assert_eq!(get(s.addr, "/api/settings").await.json(), json!({}));
    // The frontend posts settings without Content-Type.
    let r = raw(s.addr, "POST", "/api/settings/Comfy.LinkRenderMode", b"2").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = raw(
        s.addr,
        "POST",
        "/api/settings",
        br#"{"Comfy.A": "x", "Comfy.B": [1, 2]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    // storeSetting(key, undefined) sends an empty body.
    let r = raw(s.addr, "POST", "/api/settings/Comfy.Empty", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(s.addr, "/api/settings").await.json(),
        json!({"Comfy.LinkRenderMode": 2, "Comfy.A": "x", "Comfy.B": [1, 2], "Comfy.Empty": null})
    );
    assert_eq!(get(s.addr, "/settings/Comfy.A").await.json(), json!("x"));
    assert_eq!(
        get(s.addr, "/settings/Comfy.Missing").await.json(),
        json!(null)
    );
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(user.join("default/comfy.settings.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["Comfy.LinkRenderMode"], 2);
    assert_eq!(get(s.addr, "/api/users").await.json()["migrated"], true);
    let r = raw(s.addr, "POST", "/api/settings", b"{not json").await;
    assert_eq!(r.status, 400);
    s.server.shutdown().await;
}

#[tokio::test]
async fn userdata_files() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("user");
    let s = start(config_with(None, &user)).await;
    let list = "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true";
    assert_eq!(get(s.addr, list).await.status, 404, "missing dir is 404");
    // Saving a workflow as the frontend does: %2F in one segment, overwrite=undefined.
    let r = raw(
        s.addr,
        "POST",
        "/api/userdata/workflows%2Fmy%20flow.json?overwrite=undefined&full_info=true",
        br#"{"nodes": []}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info = r.json();
    assert_eq!(info["path"], "workflows/my flow.json");
    assert_eq!(info["size"], 13);
    assert!(info["modified"].is_f64());
    assert_eq!(
        std::fs::read(user.join("default/workflows/my flow.json")).unwrap(),
        br#"{"nodes": []}"#
    );
    let again = raw(
        s.addr,
        "POST",
        "/api/userdata/workflows%2Fmy%20flow.json?overwrite=false",
        b"{}",
    )
    .await;
    assert_eq!(again.status, 409);
    let plain = raw(s.addr, "POST", "/api/userdata/workflows%2Fb.json", b"{}").await;
    assert_eq!(plain.json(), json!("workflows/b.json"));
    let listed = get(s.addr, list).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["path"], "my flow.json");
    assert_eq!(
        get(s.addr, "/api/userdata?dir=workflows&split=true")
            .await
            .json(),
        json!([["b.json", "b.json"], ["my flow.json", "my flow.json"]])
    );
    let r = get(s.addr, "/api/userdata/workflows%2Fmy%20flow.json").await;
    assert_eq!(r.body, br#"{"nodes": []}"#);
    let r = raw(
        s.addr,
        "POST",
        "/api/userdata/workflows%2Fb.json/move/workflows%2Fsub%2Fc.json",
        b"",
    )
    .await;
    assert_eq!(r.json(), json!("workflows/sub/c.json"));
    assert_eq!(
        get(s.addr, "/api/v2/userdata?path=workflows").await.json(),
        json!([
            {"name": "sub", "path": "workflows/sub", "type": "directory"},
            {"name": "my flow.json", "path": "workflows/my flow.json", "type": "file", "size": 13,
             "modified": listed[1]["modified"]}
        ])
    );
    assert_eq!(
        raw(
            s.addr,
            "DELETE",
            "/api/userdata/workflows%2Fsub%2Fc.json",
            b""
        )
        .await
        .status,
        204
    );
    assert_eq!(
        get(s.addr, "/api/userdata/workflows%2Fsub%2Fc.json")
            .await
            .status,
        404
    );
    // Nothing leaves the user folder.
    for p in [
        "/api/userdata/..%2F..%2Fsecret.txt",
        "/api/userdata?dir=..%2F..",
    ] {
        assert_eq!(get(s.addr, p).await.status, 403, "{p}");
    }
    assert_eq!(get(s.addr, "/api/userdata?dir=").await.status, 400);
    s.server.shutdown().await;
}

#[tokio::test]
async fn model_library_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config_with(None, &tmp.path().join("user"))).await;
    let loras = s.paths().model_dirs("loras")[0].clone();
    std::fs::create_dir_all(loras.join("styles")).unwrap();
    // A safetensors file with metadata and a cover image, and a sibling preview for another.
    let cover = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        png_bytes(4, 4, 9),
    );
    let meta = json!({"ss_network_dim": "16", "ssmd_cover_images": json!([cover]).to_string()});
    let header = json!({"__metadata__": meta}).to_string();
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    std::fs::write(loras.join("styles/ink.safetensors"), &st).unwrap();
    std::fs::write(loras.join("plain.pt"), b"x").unwrap();
    std::fs::write(loras.join("plain.preview.png"), png_bytes(3, 3, 2)).unwrap();
    std::fs::write(loras.join("notes.txt"), b"x").unwrap();

    let folders = get(s.addr, "/api/experiment/models").await.json();
    let names: Vec<&str> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &names[..4],
        ["checkpoints", "loras", "vae", "text_encoders"]
    );
    assert!(!names.contains(&"configs") && !names.contains(&"custom_nodes"));
    let files = get(s.addr, "/api/experiment/models/loras").await.json();
    let listed: Vec<(&str, u64)> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["pathIndex"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, vec![("plain.pt", 0), ("styles/ink.safetensors", 0)]);
    assert_eq!(get(s.addr, "/api/experiment/models/nope").await.status, 404);

    assert_eq!(
        get(
            s.addr,
            "/api/view_metadata/loras?filename=styles/ink.safetensors"
        )
        .await
        .json()["ss_network_dim"],
        "16"
    );
    assert_eq!(
        get(s.addr, "/api/view_metadata/loras?filename=plain.pt")
            .await
            .status,
        404
    );
    for (path, size) in [
        (
            "/api/experiment/models/preview/loras/0/styles/ink.safetensors",
            4,
        ),
        ("/api/experiment/models/preview/loras/0/plain.pt", 3),
    ] {
        let r = get(s.addr, path).await;
        assert_eq!(r.header("content-type"), Some("image/webp"), "{path}");
        let img = image::load_from_memory(&r.body).unwrap();
        assert_eq!(img.width(), size, "{path}");
    }
    assert_eq!(
        get(s.addr, "/api/experiment/models/preview/loras/0/nothing.pt")
            .await
            .status,
        404
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn internal_routes_and_the_logs_event() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config_with(None, &tmp.path().join("user"))).await;
    let out = s.paths().output;
    std::fs::write(out.join("old.png"), b"1").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::write(out.join("new.png"), b"2").unwrap();
    std::fs::File::options()
        .write(true)
        .open(out.join("new.png"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        get(s.addr, "/internal/files/output").await.json(),
        json!(["new.png", "old.png"])
    );
    let bad = get(s.addr, "/internal/files/models").await;
    assert_eq!(
        (bad.status, bad.json()),
        (400, json!({"error": "Invalid directory type"}))
    );
    let fp = get(s.addr, "/internal/folder_paths").await.json();
    assert!(fp["checkpoints"][0]
        .as_str()
        .unwrap()
        .ends_with("models/checkpoints"));
    assert_eq!(
        get(s.addr, "/api/internal/logs").await.status,
        404,
        "no /api alias"
    );

    // A subscribed socket gets each new log line as a `logs` message.
    let mut ws = ws_connect(s.addr, "clientId=term").await;
    assert_eq!(ws_next(&mut ws).await["type"], "status");
    let r = request(
        s.addr,
        "PATCH",
        "/internal/logs/subscribe",
        &[],
        br#"{"clientId": "term", "enabled": true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    comfyrs::server::logs::record("a line for the terminal\n".into());
    let m = loop {
        let m = ws_next(&mut ws).await;
        if m["type"] == "logs" {
            break m;
        }
    };
    assert_eq!(m["data"]["size"], json!({"cols": 80, "rows": 24}));
    assert_eq!(m["data"]["entries"][0]["m"], "a line for the terminal\n");
    let raw_logs = get(s.addr, "/internal/logs/raw").await.json();
    assert!(raw_logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["m"] == "a line for the terminal\n"));
    let text = get(s.addr, "/internal/logs").await.json();
    assert!(text
        .as_str()
        .unwrap()
        .contains(" - a line for the terminal\n"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn view_answers_ranges() {
    let s = start(ServerConfig::default()).await;
    let bytes: Vec<u8> = (0..=255u8).collect();
    std::fs::write(s.paths().output.join("clip.bin"), &bytes).unwrap();
    let url = "/view?filename=clip.bin&type=output";
    let whole = get(s.addr, url).await;
    assert_eq!((whole.status, whole.body.len()), (200, 256));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let part = request(s.addr, "GET", url, &[("Range", "bytes=10-19")], b"").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[10..20]);
    assert_eq!(part.header("content-range"), Some("bytes 10-19/256"));
    let tail = request(s.addr, "GET", url, &[("Range", "bytes=-6")], b"").await;
    assert_eq!((tail.status, tail.body.as_slice()), (206, &bytes[250..]));
    let past = request(s.addr, "GET", url, &[("Range", "bytes=300-")], b"").await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */256"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn browsers_get_a_session_cookie_from_the_token_link() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_frontend(tmp.path());
    let mut cfg = config_with(Some(&root), &tmp.path().join("user"));
    cfg.token = Some("s3cret".into());
    let s = start(cfg).await;
    assert_eq!(get(s.addr, "/").await.status, 401);
    assert_eq!(get(s.addr, "/assets/app.js").await.status, 401);
    let r = get(s.addr, "/?token=s3cret").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("./"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie does not hold the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    for p in ["/", "/assets/app.js", "/api/object_info", "/api/settings"] {
        let r = request(s.addr, "GET", p, &[("Cookie", &pair)], b"").await;
        assert_eq!(r.status, 200, "{p} with the cookie");
    }
    let wrong = request(
        s.addr,
        "GET",
        "/api/settings",
        &[("Cookie", "comfyrs_session=00")],
        b"",
    )
    .await;
    assert_eq!(wrong.status, 401);
    // API clients keep the Bearer header.
    let bearer = request(
        s.addr,
        "GET",
        "/api/settings",
        &[("Authorization", "Bearer s3cret")],
        b"",
    )
    .await;
    assert_eq!(bearer.status, 200);
    s.server.shutdown().await;
}

/// The cookie follows issue 18's credential rules: an admin API token opens the editor as the
/// `--token` does; a tenant's API token gets no cookie, and a cookie forged from it opens nothing.
#[tokio::test]
async fn session_cookies_follow_the_admin_rule() {
    use comfyrs::server::serverless::config::ApiToken;
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_frontend(tmp.path());
    let mut cfg = config_with(Some(&root), &tmp.path().join("user"));
    cfg.serverless.tokens = vec![
        ApiToken {
            name: "ops".into(),
            token: "adm1n".into(),
        },
        ApiToken {
            name: "tenant".into(),
            token: "t3nant".into(),
        },
    ];
    cfg.serverless.admins = vec!["ops".into()];
    let s = start(cfg).await;
    let r = get(s.addr, "/?token=adm1n").await;
    assert_eq!(r.status, 303);
    let pair = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ok = request(s.addr, "GET", "/api/settings", &[("Cookie", &pair)], b"").await;
    assert_eq!(ok.status, 200);
    let tenant = get(s.addr, "/?token=t3nant").await;
    assert_eq!(tenant.status, 401);
    assert!(tenant.header("set-cookie").is_none());
    assert!(tenant.json()["error"].is_string());
    let forged = format!(
        "comfyrs_session={}",
        comfyrs::server::frontend::session_value("t3nant")
    );
    let r = request(s.addr, "GET", "/api/settings", &[("Cookie", &forged)], b"").await;
    assert_eq!(r.status, 401);
    s.server.shutdown().await;
}
