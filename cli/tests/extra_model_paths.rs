//! extra_model_paths.yaml through the real binary: `run` and `serve` read it (the flag and the
//! file next to the base/data dir), combo choices list files from the extra folders, a
//! workflow loads the tiny checkpoint through an extra folder, and a malformed file is a clear
//! error.

use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn comfyrs(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs the binary")
}

fn fixture_models() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("fixtures/models")
}

/// A yaml whose section puts the fixture checkpoints folder under `base_path`, and `vae` (an
/// absolute folder and one that does not exist) as a multi-line value.
fn yaml_for_fixtures(vae: &Path) -> String {
    format!(
        "fixtures:\n    base_path: {}\n    checkpoints: checkpoints/\n    vae: |\n        {}\n        does/not/exist\n",
        fixture_models().display(),
        vae.display()
    )
}

fn ckpt_choices(object_info: &Json) -> Vec<String> {
    object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        .as_array()
        .expect("combo choices")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn object_info_lists_files_from_extra_folders_given_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("my_vaes");
    std::fs::create_dir_all(vae.join("sub")).unwrap();
    std::fs::write(vae.join("sub/kl.safetensors"), b"x").unwrap();
    std::fs::write(vae.join("notes.txt"), b"x").unwrap();
    let cfg = dir.path().join("paths.yaml");
    std::fs::write(&cfg, yaml_for_fixtures(&vae)).unwrap();

    // Without the config: no checkpoints in the empty base dir.
    let out = comfyrs(&["nodes", "--json"], dir.path());
    assert!(out.status.success());
    let info: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ckpt_choices(&info), Vec::<String>::new());

    let out = comfyrs(
        &[
            "nodes",
            "--json",
            "--extra-model-paths-config",
            cfg.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ckpt_choices(&info),
        vec![
            "tiny_flux_dev_fp8.safetensors",
            "tiny_sd15.safetensors",
            "tiny_sd35_medium.safetensors",
            "tiny_sdxl.safetensors",
            "tiny_sdxl_refiner.safetensors"
        ]
    );
    assert_eq!(
        info["VAELoader"]["input"]["required"]["vae_name"][0],
        serde_json::json!(["sub/kl.safetensors", "pixel_space"])
    );
}

#[test]
fn run_loads_the_checkpoint_through_the_auto_loaded_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("extra_model_paths.yaml"),
        yaml_for_fixtures(&dir.path().join("none")),
    )
    .unwrap();
    let wf = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("workflows/tiny_txt2img.json");
    let out = comfyrs(
        &[
            "run",
            wf.to_str().unwrap(),
            "--base-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = dir.path().join("output/tiny_txt2img_00001_.png");
    let img = image::open(&png).expect("saved image").to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));

    // The same workflow without the yaml: the checkpoint is not an allowed choice.
    std::fs::remove_file(dir.path().join("extra_model_paths.yaml")).unwrap();
    let out = comfyrs(
        &[
            "validate",
            wf.to_str().unwrap(),
            "--base-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("value_not_in_list"), "{err}");
    assert!(err.contains("tiny_sd15.safetensors"), "{err}");
}

#[test]
fn malformed_yaml_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let wf = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("workflows/tiny_txt2img.json");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "comfyui:\n  base_path: [unclosed\n").unwrap();
    let out = comfyrs(
        &[
            "run",
            wf.to_str().unwrap(),
            "--extra-model-paths-config",
            bad.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "extra model paths config {}: invalid YAML: ",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("line 2"), "{err}");

    std::fs::write(&bad, "comfyui:\n  checkpoints:\n    - a\n    - b\n").unwrap();
    let out = comfyrs(
        &[
            "validate",
            wf.to_str().unwrap(),
            "--extra-model-paths-config",
            bad.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "extra model paths config {}: 'comfyui.checkpoints' must be a path or \
             newline-separated paths (a string), found a list",
            bad.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let out = comfyrs(
        &[
            "nodes",
            "--extra-model-paths-config",
            missing.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "extra model paths config {}: cannot read: ",
            missing.display()
        )),
        "{err}"
    );
}

/// `GET path` over plain HTTP/1.1; returns the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn serve_reads_the_flag_and_lists_the_extra_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("paths.yaml");
    std::fs::write(&cfg, yaml_for_fixtures(&dir.path().join("none"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .arg("--extra-model-paths-config")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start comfyrs serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30));
    let body = addr
        .as_ref()
        .map(|a| http_get(a, "/object_info/CheckpointLoaderSimple"));
    let models = addr.as_ref().map(|a| http_get(a, "/models/checkpoints"));
    let _ = child.kill();
    let _ = child.wait();
    let info: Json = serde_json::from_str(&body.expect("server prints its address")).unwrap();
    assert_eq!(
        ckpt_choices(&info),
        vec![
            "tiny_flux_dev_fp8.safetensors",
            "tiny_sd15.safetensors",
            "tiny_sd35_medium.safetensors",
            "tiny_sdxl.safetensors",
            "tiny_sdxl_refiner.safetensors"
        ]
    );
    let models: Json = serde_json::from_str(&models.unwrap()).unwrap();
    assert_eq!(
        models,
        serde_json::json!([
            "tiny_flux_dev_fp8.safetensors",
            "tiny_sd15.safetensors",
            "tiny_sd35_medium.safetensors",
            "tiny_sdxl.safetensors",
            "tiny_sdxl_refiner.safetensors"
        ])
    );
}
