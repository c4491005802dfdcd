//! What an out-of-process node costs (BENCHMARKS.md, "Node hosts"): the per-call overhead of a
//! trivial node on a node host against the same work done by a built-in node, and the cost of
//! passing a 1024x1024 IMAGE to a host and back. Runs through the executor with the cache off,
//! so every run executes every node.
//!
//!     cargo run --example node_host_bench [RUNS]   (default 200; add --release for release numbers)
//!
//! Hosts: the stdlib Python SDK test pack (tests/node_hosts/py_pack.py, python3) and the
//! JavaScript example pack (examples/packs/js-image, node).

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{CachePolicy, Executor, ExecutorConfig, Interrupt, NoEvents};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::remote::{HostConfig, NodeHosts, OnClash};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("node-host-bench-{}", std::process::id()));
    let env = Environment::new(Paths::under(&dir));
    let mut py = HostConfig::new(
        "bench_py",
        vec![
            "python3".into(),
            root.join("tests/node_hosts/py_pack.py")
                .display()
                .to_string(),
        ],
    );
    py.env.push((
        "PYTHONPATH".into(),
        root.join("sdk/python").display().to_string(),
    ));
    let js = HostConfig::new(
        "bench_js",
        vec![
            "node".into(),
            root.join("examples/packs/js-image/pack.js")
                .display()
                .to_string(),
        ],
    );
    let mut registry = Registry::with_builtin_nodes();
    let _hosts = NodeHosts::start(&mut registry, &env, vec![py, js], OnClash::Error)
        .unwrap_or_else(|e| panic!("{e}"));
    // With a ComfyUI environment: the ComfyUI host (torch + safetensors) on the test pack.
    let comfy = match (
        std::env::var_os("COMFYRS_COMFYUI_ROOT"),
        std::env::var_os("COMFYRS_COMFYUI_PYTHON"),
    ) {
        (Some(r), Some(p)) => {
            let cfg = comfyrs::remote::comfyui::host_config(
                &root.join("tests/node_hosts/custom_nodes"),
                std::path::Path::new(&p),
                std::path::Path::new(&r),
                comfyrs::remote::SandboxMode::Off,
            )
            .unwrap();
            Some(
                NodeHosts::start(&mut registry, &env, vec![cfg], OnClash::Skip)
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        }
        _ => {
            println!(
                "(set COMFYRS_COMFYUI_ROOT and COMFYRS_COMFYUI_PYTHON to include the ComfyUI host)"
            );
            None
        }
    };
    let registry = Arc::new(registry);
    let env = Arc::new(env);
    let ex = Executor::new(
        registry.clone(),
        env.clone(),
        ExecutorConfig {
            cache: CachePolicy::None,
            workers: 1,
        },
    );
    let time = |name: &str, wf: Json, runs: usize| -> f64 {
        let w = parse_workflow(&wf.to_string()).unwrap();
        let v = prepare(w, &Overrides::new(), &registry, &env, None)
            .unwrap_or_else(|e| panic!("{name}: {}", e.to_comfy_json()));
        let once = ex.run("warm", &v, None, &Interrupt::new(), &NoEvents);
        assert!(once.is_success(), "{name}: {:?}", once.status);
        // Best of 5 batches: the machine is shared, and interference only adds time.
        let mut best = f64::INFINITY;
        for batch in 0..5 {
            let start = Instant::now();
            for i in 0..runs {
                let o = ex.run(
                    &format!("p{batch}-{i}"),
                    &v,
                    None,
                    &Interrupt::new(),
                    &NoEvents,
                );
                assert!(o.is_success());
            }
            best = best.min(start.elapsed().as_secs_f64() * 1000.0 / runs as f64);
        }
        println!("{name:<58} {best:>9.3} ms/run");
        best
    };
    let text = |class: &str, inputs: Json| {
        json!({
            "1": {"class_type": class, "inputs": inputs},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        })
    };
    println!(
        "best of 5 batches of {runs} runs (IMAGE: {} runs), cache off",
        (runs / 4).max(5)
    );
    let native = time(
        "built-in StringConcatenate + PreviewAny",
        text(
            "StringConcatenate",
            json!({"string_a": "a", "string_b": "b", "delimiter": ""}),
        ),
        runs,
    );
    let py_call = time(
        "Python SDK PyConcat + PreviewAny",
        text("PyConcat", json!({"a": "a", "b": "b"})),
        runs,
    );
    let js_call = time(
        "JavaScript JsTextStats + PreviewAny",
        text("JsTextStats", json!({"text": "ab"})),
        runs,
    );
    println!(
        "per-call overhead: Python {:.3} ms, JavaScript {:.3} ms",
        py_call - native,
        js_call - native
    );
    let image = |middle: Option<(&str, Json)>| {
        let mut wf = json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1, "color": 0x336699}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        });
        if let Some((class, mut inputs)) = middle {
            inputs["image"] = json!(["1", 0]);
            wf["2"] = json!({"class_type": class, "inputs": inputs});
            wf["3"]["inputs"]["image"] = json!(["2", 0]);
        }
        wf
    };
    let image_runs = (runs / 4).max(5);
    let base = time(
        "1024² IMAGE: EmptyImage -> ImageInvert (built-in only)",
        image(None),
        image_runs,
    );
    let py_img = time(
        "1024² IMAGE through Python SDK PyIdentityImage",
        image(Some(("PyIdentityImage", json!({})))),
        image_runs,
    );
    let js_img = time(
        "1024² IMAGE through JavaScript JsInvertImage (strength 0)",
        image(Some(("JsInvertImage", json!({"strength": 0.0})))),
        image_runs,
    );
    println!(
        "1024² IMAGE to a host and back: Python {:.2} ms, JavaScript {:.2} ms (includes the JS loop over 3M values)",
        py_img - base,
        js_img - base
    );
    if comfy.is_some() {
        let c = time(
            "1024² IMAGE through ComfyUI host DemoBrighten (amount 0)",
            image(Some(("DemoBrighten", json!({"amount": 0.0})))),
            image_runs,
        );
        println!(
            "1024² IMAGE to the ComfyUI host and back (torch, plus the node's add/clamp/luma): {:.2} ms",
            c - base
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
