//! Lazy inputs (ComfyUI's `{"lazy": True}` + `check_lazy_status`) through the Impact Pack's
//! `ImpactSwitch`, against ComfyUI's own executor: tests/data/packs/lazy_reference.json is
//! written by scripts/packs/gen_lazy_refs.py, which runs the same prompts in ComfyUI 0.3.64
//! with the original pack. Compared: which nodes ran, what each PreviewAny showed, the error
//! of a switch that asks for an input it does not have. (Its `/object_info` entry is checked
//! with the other pack classes in packs_reference.rs.)

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{
    CachePolicy, Event, EventSink, Executor, ExecutorConfig, Interrupt, RunOutcome, RunStatus,
};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

fn reference() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/packs/lazy_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Records the node ids of `executing` events (the nodes a run touched).
#[derive(Default)]
struct Ran(Mutex<BTreeSet<String>>);
impl EventSink for Ran {
    fn emit(&self, event: Event) {
        if let Event::Executing {
            node: Some(node), ..
        } = event
        {
            self.0.lock().unwrap().insert(node);
        }
    }
    fn wants_progress_state(&self) -> bool {
        false
    }
}

struct Runner {
    executor: Executor,
    registry: Arc<Registry>,
    env: Arc<Environment>,
    _dir: tempfile::TempDir,
}

impl Runner {
    fn new(workers: usize) -> Runner {
        let dir = tempfile::tempdir().unwrap();
        let env = Arc::new(Environment::new(Paths::under(dir.path())));
        let mut registry = Registry::with_builtin_nodes();
        for pack in comfyrs_cli::PACKS {
            pack(&mut registry).unwrap();
        }
        let registry = Arc::new(registry);
        let executor = Executor::new(
            registry.clone(),
            env.clone(),
            ExecutorConfig {
                cache: CachePolicy::Classic,
                workers,
            },
        );
        Runner {
            executor,
            registry,
            env,
            _dir: dir,
        }
    }

    fn run(&self, prompt: &Json, extra_pnginfo: Option<&Json>) -> (RunOutcome, BTreeSet<String>) {
        let w = parse_workflow(&prompt.to_string()).unwrap();
        let v = prepare(w, &Overrides::new(), &self.registry, &self.env, None)
            .unwrap_or_else(|e| panic!("invalid: {}", e.to_comfy_json()));
        let ran = Ran::default();
        let o = self
            .executor
            .run("p", &v, extra_pnginfo, &Interrupt::new(), &ran);
        (o, ran.0.into_inner().unwrap())
    }
}

fn check_case(name: &str, case: &Json, workers: usize) {
    let r = Runner::new(workers);
    let expected = &case["result"];
    let (o, ran) = r.run(&case["prompt"], case.get("extra_pnginfo"));
    let want_ran: BTreeSet<String> = expected["ran"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ran, want_ran, "{name}: the nodes that ran");
    assert_eq!(
        o.is_success(),
        expected["success"].as_bool().unwrap(),
        "{name}: {:?}",
        o.status
    );
    if let RunStatus::Error(e) = &o.status {
        let want = &expected["errors"][0];
        for key in ["node_id", "node_type", "exception_type"] {
            assert_eq!(e[key], want[key], "{name}: error field {key}");
        }
        assert_eq!(
            e["exception_message"], want["exception_message"],
            "{name}: exception_message"
        );
    }
    let ui: serde_json::Map<String, Json> = o.outputs.into_iter().collect();
    assert_eq!(
        Json::Object(ui),
        expected["ui"],
        "{name}: what the outputs show"
    );
}

#[test]
fn switches_run_only_the_chosen_branch_as_comfyui_does() {
    let reference = reference();
    let cases = reference["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 5);
    for (name, case) in cases {
        check_case(name, case, 1);
    }
}

#[test]
fn lazy_inputs_hold_with_parallel_workers() {
    let reference = reference();
    for (name, case) in reference["cases"].as_object().unwrap() {
        check_case(name, case, 3);
    }
}

#[test]
fn a_new_selection_runs_only_the_newly_chosen_branch() {
    let r = Runner::new(1);
    let prompt = |select: i64| {
        json!({
            "a": {"class_type": "PrimitiveString", "inputs": {"value": "A"}},
            "b": {"class_type": "PrimitiveString", "inputs": {"value": "B"}},
            "sw": {"class_type": "ImpactSwitch",
                   "inputs": {"select": select, "sel_mode": false,
                              "input1": ["a", 0], "input2": ["b", 0]}},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["sw", 0]}},
        })
    };
    let (o, ran) = r.run(&prompt(1), None);
    assert_eq!(o.outputs["out"]["text"][0], "A");
    assert_eq!(ran, ["a", "out", "sw"].map(String::from).into());
    // Same prompt again: everything comes from the cache.
    let (o, ran) = r.run(&prompt(1), None);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(o.cached.len(), 3, "{:?}", o.cached);
    // Another choice: the switch (its select changed) and the new branch run, 'a' does not.
    let (o, ran) = r.run(&prompt(2), None);
    assert_eq!(o.outputs["out"]["text"][0], "B");
    assert_eq!(ran, ["b", "out", "sw"].map(String::from).into());
}

/// Scheduling with explicit producer blocks: a cached output node that feeds another node is
/// replayed, and its consumer runs on the cached value instead of waiting for it.
#[test]
fn a_consumer_of_a_replayed_output_node_runs() {
    let r = Runner::new(1);
    let prompt = |suffix: &str| {
        json!({
            "1": {"class_type": "PrimitiveString", "inputs": {"value": "hi"}},
            "2": {"class_type": "ShowText|pysssss", "inputs": {"text": ["1", 0]}},
            "3": {"class_type": "StringConcatenate",
                  "inputs": {"string_a": ["2", 0], "string_b": suffix, "delimiter": ""}},
            "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        })
    };
    let (o, _) = r.run(&prompt("!"), None);
    assert_eq!(o.outputs["4"]["text"][0], "hi!");
    let (o, ran) = r.run(&prompt("?"), None);
    assert!(o.is_success(), "{:?}", o.status);
    assert_eq!(ran, ["3", "4"].map(String::from).into());
    assert_eq!(o.outputs["4"]["text"][0], "hi?");
    assert_eq!(
        o.outputs["2"]["text"][0], "hi",
        "the output node's UI is replayed"
    );
}
