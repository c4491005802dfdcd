//! Uploads, /view, path-traversal refusals, the origin check, token auth and the body limit.

mod server_common;

use comfyrs::server::ServerConfig;
use serde_json::json;
use server_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_view_and_duplicates() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let png = png_bytes(4, 3, 7);
    let r = upload(addr, "/upload/image", &[("image", Some("cat.png"), &png)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"name": "cat.png", "subfolder": "", "type": "input"})
    );
    assert_eq!(std::fs::read(t.paths().input.join("cat.png")).unwrap(), png);
    let v = get(addr, "/view?filename=cat.png&type=input").await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body, png);
    // The annotated form forces the folder.
    let v = get(addr, "/view?filename=cat.png%20%5Binput%5D&type=output").await;
    assert_eq!(v.body, png);
    // Same content again: reused. Different content: renamed. overwrite: replaced.
    let r = upload(
        addr,
        "/api/upload/image",
        &[("image", Some("cat.png"), &png)],
    )
    .await;
    assert_eq!(r.json()["name"], "cat.png");
    let png2 = png_bytes(4, 3, 9);
    let r = upload(addr, "/upload/image", &[("image", Some("cat.png"), &png2)]).await;
    assert_eq!(r.json()["name"], "cat (1).png");
    let r = upload(
        addr,
        "/upload/image",
        &[
            ("image", Some("cat.png"), &png2),
            ("overwrite", None, b"true"),
        ],
    )
    .await;
    assert_eq!(r.json()["name"], "cat.png");
    assert_eq!(
        std::fs::read(t.paths().input.join("cat.png")).unwrap(),
        png2
    );
    // Subfolder and type.
    let r = upload(
        addr,
        "/upload/image",
        &[
            ("image", Some("d.png"), &png),
            ("subfolder", None, b"a/b"),
            ("type", None, b"temp"),
        ],
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"name": "d.png", "subfolder": "a/b", "type": "temp"})
    );
    let v = get(addr, "/view?filename=d.png&type=temp&subfolder=a/b").await;
    assert_eq!(v.body, png);
    // Errors.
    assert_eq!(
        upload(addr, "/upload/image", &[("type", None, b"input")])
            .await
            .status,
        400
    );
    assert_eq!(
        upload(
            addr,
            "/upload/image",
            &[("image", Some("x.png"), &png), ("type", None, b"nope")]
        )
        .await
        .status,
        400
    );
    assert_eq!(get(addr, "/view?filename=missing.png").await.status, 404);
    assert_eq!(get(addr, "/view").await.status, 404);
    assert_eq!(
        get(addr, "/view?filename=cat.png&type=bogus").await.status,
        400
    );
    // Mask: the alpha of the mask replaces the original's.
    let mask = {
        let img = image::RgbaImage::from_pixel(4, 3, image::Rgba([0, 0, 0, 17]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let orig = json!({"filename": "cat.png", "subfolder": "", "type": "input"}).to_string();
    let r = upload(
        addr,
        "/upload/mask",
        &[
            ("image", Some("clipspace-mask.png"), &mask),
            ("original_ref", None, orig.as_bytes()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = image::open(t.paths().input.join("clipspace-mask.png"))
        .unwrap()
        .to_rgba8();
    let src = image::load_from_memory(&png2).unwrap().to_rgba8();
    assert_eq!(out.get_pixel(1, 1)[3], 17);
    assert_eq!(out.get_pixel(1, 1)[0], src.get_pixel(1, 1)[0]);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_load_image_when_registered() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let png = png_bytes(8, 8, 3);
    let r = upload(addr, "/upload/image", &[("image", Some("in.png"), &png)]).await;
    assert_eq!(r.status, 200);
    if comfyrs::node::Registry::with_builtin_nodes()
        .get("LoadImage")
        .is_none()
    {
        eprintln!("LoadImage is not registered in this build: checked upload + /view only");
        assert_eq!(
            get(addr, "/view?filename=in.png&type=input").await.body,
            png
        );
        t.server.shutdown().await;
        return;
    }
    let wf = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    let r = post_json(addr, "/prompt", &json!({"prompt": wf})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let pid = r.json()["prompt_id"].as_str().unwrap().to_string();
    let h = wait_history(addr, &pid, 30).await;
    assert_eq!(h["status"]["status_str"], "success", "{h}");
    // A file that is not there fails validation.
    let wf = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "absent.png"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    assert_eq!(
        post_json(addr, "/prompt", &json!({"prompt": wf}))
            .await
            .status,
        400
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_refused() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let secret = t.dir.path().join("secret.txt");
    std::fs::write(&secret, b"top secret").unwrap();
    std::fs::write(t.paths().output.join("ok.txt"), b"fine").unwrap();
    assert_eq!(get(addr, "/view?filename=ok.txt").await.body, b"fine");
    for q in [
        "filename=../secret.txt",
        "filename=..%2Fsecret.txt",
        "filename=/etc/passwd",
        "filename=%2Fetc%2Fpasswd",
    ] {
        let r = get(addr, &format!("/view?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json()["error"].is_string());
    }
    for q in [
        "filename=secret.txt&subfolder=..",
        "filename=secret.txt&subfolder=/tmp/..",
        "filename=passwd&subfolder=/etc",
    ] {
        let r = get(addr, &format!("/view?{q}")).await;
        assert_eq!(r.status, 403, "{q}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(t.dir.path(), t.paths().output.join("escape")).unwrap();
        std::os::unix::fs::symlink(&secret, t.paths().output.join("s.txt")).unwrap();
        assert_eq!(
            get(addr, "/view?filename=secret.txt&subfolder=escape")
                .await
                .status,
            403
        );
        assert_eq!(get(addr, "/view?filename=s.txt").await.status, 403);
        let r = upload(
            addr,
            "/upload/image",
            &[
                ("image", Some("x.png"), b"x"),
                ("subfolder", None, b"escape"),
                ("type", None, b"output"),
            ],
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(!t.dir.path().join("x.png").exists());
    }
    let png = png_bytes(2, 2, 1);
    for sub in ["../up", "/abs"] {
        let r = upload(
            addr,
            "/upload/image",
            &[
                ("image", Some("y.png"), &png),
                ("subfolder", None, sub.as_bytes()),
            ],
        )
        .await;
        assert_eq!(r.status, 400, "{sub}");
    }
    // A file name with a path keeps only its basename.
    let r = upload(
        addr,
        "/upload/image",
        &[("image", Some("../../evil.png"), &png)],
    )
    .await;
    assert_eq!(r.json()["name"], "evil.png");
    assert!(t.paths().input.join("evil.png").exists());
    assert!(!t.dir.path().join("evil.png").exists());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_check_blocks_cross_site() {
    let t = start(ServerConfig::default()).await;
    let addr = t.addr;
    let r = request(
        addr,
        "GET",
        "/queue",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "cross-site request to a loopback server refused"})
    );
    let body = json!({"prompt": text_workflow("x")}).to_string();
    let r = request(
        addr,
        "POST",
        "/prompt",
        &[
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(get(addr, "/queue").await.json()["queue_pending"], json!([]));
    let same = format!("http://{addr}");
    let r = request(addr, "GET", "/queue", &[("Origin", &same)], b"").await;
    assert_eq!(r.status, 200);
    let r = request(
        addr,
        "GET",
        "/queue",
        &[("Origin", "http://127.0.0.1:1")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    t.server.shutdown().await;
    // With --enable-cors-header the headers are sent instead.
    let t = start(ServerConfig {
        cors_origin: Some("*".into()),
        ..Default::default()
    })
    .await;
    let r = request(
        t.addr,
        "GET",
        "/queue",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = request(
        t.addr,
        "OPTIONS",
        "/prompt",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    let t = start(ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let addr = t.addr;
    let r = get(addr, "/queue").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    assert_eq!(
        request(
            addr,
            "GET",
            "/queue",
            &[("Authorization", "Bearer nope")],
            b""
        )
        .await
        .status,
        401
    );
    assert_eq!(
        request(
            addr,
            "GET",
            "/queue",
            &[("Authorization", "Bearer s3cret")],
            b""
        )
        .await
        .status,
        200
    );
    assert_eq!(get(addr, "/api/queue?token=s3cret").await.status, 200);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?clientId=a"))
            .await
            .is_err()
    );
    let mut ws = ws_connect(addr, "clientId=a&token=s3cret").await;
    assert_eq!(ws_next(&mut ws).await["type"], "status");
    t.server.shutdown().await;
    // Non-loopback without a token is refused unless --no-auth.
    let cfg = ServerConfig {
        listen: "0.0.0.0".parse().unwrap(),
        ..Default::default()
    };
    assert!(cfg.check_security().is_err());
    let cfg = ServerConfig {
        allow_no_auth: true,
        ..cfg
    };
    assert!(cfg.check_security().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit() {
    let t = start(ServerConfig {
        max_upload_bytes: 1024,
        ..Default::default()
    })
    .await;
    let addr = t.addr;
    let big = vec![b'x'; 4096];
    let r = upload(addr, "/upload/image", &[("image", Some("big.png"), &big)]).await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    let small = png_bytes(2, 2, 0);
    assert_eq!(
        upload(addr, "/upload/image", &[("image", Some("s.png"), &small)])
            .await
            .status,
        200
    );
    assert_eq!(
        get(addr, "/features").await.json()["max_upload_size"],
        1024.0
    );
    t.server.shutdown().await;
}
