//! The loaders for model kinds comfyrs cannot run yet: their `/object_info` entries equal
//! ComfyUI 0.3.64's (tests/data/object_info_pending_loaders.json, from its /object_info with
//! empty model folders), their combos list their folders' files, and running one fails with
//! an error naming what is missing.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, RunStatus};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{workflow_from_json, Overrides};
use serde_json::{json, Value};
use std::sync::Arc;

fn reference() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_pending_loaders.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn schemas_match_comfyui() {
    let registry = Registry::with_builtin_nodes();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let want = reference();
    for (name, entry) in want.as_object().unwrap() {
        let got = registry
            .schema(name)
            .unwrap_or_else(|| panic!("{name} is not registered"))
            .object_info(&env);
        // Compared as JSON values: the V3 renderer orders keys its own way (no client reads
        // object_info key order), everything else must be equal.
        assert_eq!(&got, entry, "{name}");
    }
    assert_eq!(want.as_object().unwrap().len(), 14);
}

/// The ten loader classes the frontend 1.27.10 registers widgets for by name: all present
/// (one missing breaks every model widget in the editor), each registered once (a duplicate
/// registration fails `with_builtin_nodes`).
#[test]
fn the_frontends_loader_classes_are_all_registered() {
    let registry = Registry::with_builtin_nodes();
    for class in [
        "CheckpointLoaderSimple",
        "ImageOnlyCheckpointLoader",
        "LoraLoader",
        "VAELoader",
        "ControlNetLoader",
        "UNETLoader",
        "UpscaleModelLoader",
        "StyleModelLoader",
        "GLIGENLoader",
        "LoraLoaderModelOnly",
    ] {
        assert!(registry.schema(class).is_some(), "{class} missing");
    }
    // The SDXL-era loaders main implements are real, not pending.
    for class in [
        "UNETLoader",
        "CLIPLoader",
        "DualCLIPLoader",
        "TripleCLIPLoader",
    ] {
        assert!(
            registry.schema(class).unwrap().python_module == "nodes",
            "{class}"
        );
    }
}

#[test]
fn combos_list_the_folder_files_and_running_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (folder, file) in [
        ("controlnet", "canny.safetensors"),
        ("t2i_adapter", "t2i_depth.pth"),
        ("style_models", "style.safetensors"),
        ("configs", "v1.yaml"),
        ("clip_vision", "vit.safetensors"),
    ] {
        std::fs::create_dir_all(models.join(folder)).unwrap();
        std::fs::write(models.join(folder).join(file), b"").unwrap();
    }
    std::fs::create_dir_all(models.join("diffusers/sd15")).unwrap();
    std::fs::write(models.join("diffusers/sd15/model_index.json"), b"{}").unwrap();
    let env = Arc::new(Environment::new(Paths::under(dir.path())));
    let registry = Arc::new(Registry::with_builtin_nodes());
    let info = |c: &str| registry.schema(c).unwrap().object_info(&env);
    assert_eq!(
        info("ControlNetLoader")["input"]["required"]["control_net_name"],
        json!([["canny.safetensors", "t2i_depth.pth"]])
    );
    assert_eq!(
        info("StyleModelLoader")["input"]["required"]["style_model_name"],
        json!([["style.safetensors"]])
    );
    assert_eq!(
        info("CheckpointLoader")["input"]["required"]["config_name"],
        json!([["v1.yaml"]])
    );
    assert_eq!(
        info("DiffusersLoader")["input"]["required"]["model_path"],
        json!([["sd15"]])
    );

    let prompt = json!({
        "1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit.safetensors"}},
        "2": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "style.safetensors"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    });
    let wf = workflow_from_json(prompt).unwrap();
    let valid = prepare(wf, &Overrides::new(), &registry, &env, None).unwrap();
    let exec = Executor::new(registry.clone(), env.clone(), ExecutorConfig::default());
    let out = exec.run("p", &valid, None, &Interrupt::new(), &|_| {});
    let RunStatus::Error(e) = out.status else {
        panic!("expected an error")
    };
    assert_eq!(e["node_type"], "StyleModelLoader");
    assert_eq!(e["exception_type"], "NotImplementedError");
    assert!(e["exception_message"]
        .as_str()
        .unwrap()
        .starts_with("StyleModelLoader: comfyrs cannot run style models"));
}
