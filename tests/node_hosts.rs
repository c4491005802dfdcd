//! Out-of-process node hosts end to end (docs/node-protocol.md): a Python pack written with
//! the stdlib SDK (tests/node_hosts/py_pack.py) and the JavaScript example pack
//! (examples/packs/js-image) run inside workflows next to built-in nodes, through the real
//! executor. Covers tensors both ways, handles, caching, node errors, a crash, a hang, the
//! call timeout, interrupts, a clean environment and the bubblewrap sandbox.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{
    CachePolicy, Event, EventSink, Executor, ExecutorConfig, Interrupt, NoEvents, RunOutcome,
    RunStatus,
};
use comfyrs::node::Registry;
use comfyrs::prompt::prepare;
use comfyrs::remote::{HostConfig, NodeHosts, OnClash, SandboxMode, Transport};
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn py_host(name: &str) -> HostConfig {
    let mut c = HostConfig::new(
        name,
        vec![
            "python3".into(),
            root()
                .join("tests/node_hosts/py_pack.py")
                .display()
                .to_string(),
        ],
    );
    c.env.push((
        "PYTHONPATH".into(),
        root().join("sdk/python").display().to_string(),
    ));
    c.start_timeout = Duration::from_secs(30);
    c
}

fn js_host() -> HostConfig {
    HostConfig::new(
        "js_image",
        vec![
            "node".into(),
            root()
                .join("examples/packs/js-image/pack.js")
                .display()
                .to_string(),
        ],
    )
}

struct Harness {
    executor: Executor,
    registry: Arc<Registry>,
    env: Arc<Environment>,
    _hosts: NodeHosts,
    _dir: tempfile::TempDir,
}

fn harness(configs: Vec<HostConfig>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let mut registry = Registry::with_builtin_nodes();
    let hosts = NodeHosts::start(&mut registry, &env, configs, OnClash::Error).unwrap();
    let registry = Arc::new(registry);
    let env = Arc::new(env);
    let executor = Executor::new(
        registry.clone(),
        env.clone(),
        ExecutorConfig {
            cache: CachePolicy::Classic,
            workers: 1,
        },
    );
    Harness {
        executor,
        registry,
        env,
        _hosts: hosts,
        _dir: dir,
    }
}

impl Harness {
    fn run_with(&self, wf: Json, interrupt: &Interrupt, events: &dyn EventSink) -> RunOutcome {
        let w = parse_workflow(&wf.to_string()).unwrap();
        let v = prepare(w, &Overrides::new(), &self.registry, &self.env, None)
            .unwrap_or_else(|e| panic!("invalid: {}", e.to_comfy_json()));
        self.executor.run("p", &v, None, interrupt, events)
    }
    fn run(&self, wf: Json) -> RunOutcome {
        self.run_with(wf, &Interrupt::new(), &NoEvents)
    }
    /// Runs `class` with `inputs` and shows its first output through PreviewAny.
    fn one(&self, class: &str, inputs: Json) -> RunOutcome {
        self.run(json!({
            "1": {"class_type": class, "inputs": inputs},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }))
    }
}

fn text(o: &RunOutcome, node: &str) -> String {
    assert!(o.is_success(), "run failed: {:?}", o.status);
    o.outputs[node]["text"][0].as_str().unwrap().to_string()
}

fn error(o: &RunOutcome) -> Json {
    match &o.status {
        RunStatus::Error(e) => e.clone(),
        other => panic!("expected an execution error, got {other:?}"),
    }
}

fn pid(h: &Harness, salt: i64) -> i64 {
    text(&h.one("PyPid", json!({"salt": salt})), "2")
        .parse()
        .unwrap()
}

#[test]
fn declarations_become_registry_classes() {
    let h = harness(vec![py_host("pytest_pack"), js_host()]);
    let info = h.registry.object_info(&h.env);
    let js = &info["JsInvertImage"];
    assert_eq!(js["python_module"], "custom_nodes.js_image");
    assert_eq!(js["display_name"], "Invert Image (JS)");
    assert_eq!(
        js["input"]["required"]["strength"],
        // JavaScript writes 1.0 as 1: declarations pass through as the host sent them.
        json!(["FLOAT", {"default": 1, "min": 0, "max": 1, "step": 0.01}])
    );
    let py = &info["PyImageToMask"];
    assert_eq!(py["python_module"], "custom_nodes.pytest_pack");
    assert_eq!(
        py["input"]["required"]["channel"],
        json!([["red", "green", "blue"]])
    );
    assert_eq!(info["PyCount"]["output_name"], json!(["length", "half"]));
    // Validation applies to remote classes like any other: a bad combo value.
    let w = parse_workflow(
        &json!({"1": {"class_type": "PyImageToMask", "inputs": {"image": ["2", 0], "channel": "alpha"}},
                "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "3": {"class_type": "PyStats", "inputs": {"image": ["2", 0], "mask": ["1", 0]}}})
        .to_string(),
    )
    .unwrap();
    let e = match prepare(w, &Overrides::new(), &h.registry, &h.env, None) {
        Ok(_) => panic!("expected a validation error"),
        Err(e) => e.to_comfy_json(),
    };
    let errs = &e["node_errors"]["1"]["errors"][0];
    assert_eq!(errs["type"], "value_not_in_list", "{e}");
    assert_eq!(errs["extra_info"]["input_name"], "channel");
}

#[test]
fn duplicate_class_names_are_a_startup_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let mut registry = Registry::with_builtin_nodes();
    let e = NodeHosts::start(
        &mut registry,
        &env,
        vec![py_host("first"), py_host("second")],
        OnClash::Error,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("node host 'second'") && e.contains("custom_nodes.first"),
        "{e}"
    );
}

#[test]
fn lazy_inputs_run_only_what_the_host_class_asks_for() {
    let h = harness(vec![py_host("pytest_pack")]);
    let wf = |select: i64| {
        json!({
            "a": {"class_type": "PrimitiveString", "inputs": {"value": "A"}},
            "a2": {"class_type": "StringConcatenate",
                   "inputs": {"string_a": ["a", 0], "string_b": "!", "delimiter": ""}},
            "b": {"class_type": "PrimitiveString", "inputs": {"value": "B"}},
            "sw": {"class_type": "PyLazySwitch",
                   "inputs": {"select": select, "a": ["a2", 0], "b": ["b", 0]}},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["sw", 0]}},
        })
    };
    let o = h.run(wf(1));
    assert_eq!(text(&o, "out"), "A! (other: None)");
    let mut ran = o.executed.clone();
    ran.sort();
    assert_eq!(
        ran,
        ["a", "a2", "out", "sw"],
        "the unchosen branch does not run"
    );
    // The other choice: 'b' runs now; 'a2' is in the cache from the first run, so it is
    // passed although not asked for (ComfyUI reads lazy inputs from its output cache too).
    let o = h.run(wf(2));
    assert_eq!(text(&o, "out"), "B (other: 'A!')");
    assert_eq!(o.executed, ["b", "sw", "out"]);
}

#[test]
fn send_sync_messages_reach_the_event_stream() {
    let h = harness(vec![py_host("pytest_pack")]);
    let seen = std::sync::Mutex::new(Vec::new());
    let sink = |e: Event| {
        if let Event::Custom {
            event,
            data,
            broadcast,
            ..
        } = e
        {
            seen.lock().unwrap().push((event, data, broadcast));
        }
    };
    let o = h.run_with(
        json!({
            "1": {"class_type": "PyNotify", "inputs": {"n": 21}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }),
        &Interrupt::new(),
        &sink,
    );
    assert!(o.is_success(), "{:?}", o.status);
    assert_eq!(
        seen.into_inner().unwrap(),
        vec![
            (
                "pytest.note".to_string(),
                json!({"n": 21, "node": "1"}),
                false
            ),
            ("pytest.all".to_string(), json!({"n": 42}), true),
        ]
    );
}

#[test]
fn tensors_cross_both_ways_in_a_mixed_workflow() {
    let h = harness(vec![py_host("pytest_pack"), js_host()]);
    // 0x336699: r 0x33, g 0x66, b 0x99. EmptyImage (comfyrs) -> PyScaleImage (Python, x0.5)
    // -> JsInvertImage (JavaScript, 1 - x) -> ImageInvert (comfyrs, 1 - x again) -> stats,
    // with a MASK made in Python from the JavaScript output.
    let wf = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0x336699}},
        "2": {"class_type": "PyScaleImage", "inputs": {"image": ["1", 0], "factor": 0.5}},
        "3": {"class_type": "JsInvertImage", "inputs": {"image": ["2", 0], "strength": 1.0}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "PyImageToMask", "inputs": {"image": ["3", 0], "channel": "green"}},
        "6": {"class_type": "PyStats", "inputs": {"image": ["4", 0], "mask": ["5", 0]}},
        "7": {"class_type": "PyStats", "inputs": {"image": ["3", 0]}},
    });
    let o = h.run(wf.clone());
    assert!(o.is_success(), "{:?}", o.status);
    let (r, g, b) = (
        0x33 as f64 / 255.0,
        0x66 as f64 / 255.0,
        0x99 as f64 / 255.0,
    );
    let pixels = (2 * 16 * 8) as f64;
    let s6 = &o.outputs["6"];
    assert_eq!(s6["shape"], json!([2, 8, 16, 3]));
    assert_eq!(s6["node"], json!(["6"]));
    let sum6 = s6["sum"][0].as_f64().unwrap();
    assert!((sum6 - pixels * (r + g + b) / 2.0).abs() < 1e-2, "{sum6}");
    let sum7 = o.outputs["7"]["sum"][0].as_f64().unwrap();
    assert!(
        (sum7 - pixels * (3.0 - (r + g + b) / 2.0)).abs() < 1e-2,
        "{sum7}"
    );
    assert_eq!(s6["mask_shape"], json!([2, 8, 16]));
    let msum = s6["mask_sum"][0].as_f64().unwrap();
    assert!((msum - pixels * (1.0 - g / 2.0)).abs() < 1e-2, "{msum}");
    // Cached like any node: a rerun executes nothing.
    let again = h.run(wf);
    assert!(again.executed.is_empty(), "{:?}", again.executed);
    // The exchange folder is left empty (inputs removed after each call, outputs after reading).
    let ex = h._hosts.hosts[0].exchange_dir().to_path_buf();
    assert_eq!(std::fs::read_dir(&ex).unwrap().count(), 0);
}

#[test]
fn latents_keep_batch_index_and_primitives_keep_types() {
    let h = harness(vec![py_host("pytest_pack"), js_host()]);
    let o = h.run(json!({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 2}},
        "2": {"class_type": "PyLatentAdd", "inputs": {"samples": ["1", 0], "value": 0.25}},
        "3": {"class_type": "PyLatentStats", "inputs": {"samples": ["2", 0]}},
        "4": {"class_type": "JsTextStats", "inputs": {"text": "héllo"}},
        "5": {"class_type": "PyConcat", "inputs": {"a": ["4", 1], "b": "!"}},
        "6": {"class_type": "PyCount", "inputs": {"text": ["5", 0]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 1]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }));
    assert!(o.is_success(), "{:?}", o.status);
    assert_eq!(o.outputs["3"]["shape"], json!([2, 4, 4, 8]));
    assert_eq!(o.outputs["3"]["sum"], json!([64.0]));
    assert_eq!(o.outputs["3"]["batch_index"], json!([7, 7]));
    assert_eq!(text(&o, "8"), "5");
    // PyCount's FLOAT output stays a float ("3.0", not "3").
    assert_eq!(text(&o, "7"), "3.0");
}

#[test]
fn opaque_values_stay_in_the_host_as_handles() {
    let h = harness(vec![py_host("pytest_pack"), js_host()]);
    let o = h.run(json!({
        "1": {"class_type": "PyMakeThing", "inputs": {"label": "abc"}},
        "2": {"class_type": "PyUseThing", "inputs": {"thing": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PyCount", "inputs": {"text": ["2", 0]}},
        "5": {"class_type": "PyLiveObjects", "inputs": {"salt": ["4", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }));
    assert_eq!(text(&o, "3"), "thing:abc");
    assert_eq!(
        text(&o, "6"),
        "1",
        "the host keeps the object while comfyrs caches it"
    );
    // The next prompt drops the previous one's cache entries (the classic cache): the handle
    // is released in the host (sent with the next call).
    assert_eq!(text(&h.one("PyLiveObjects", json!({"salt": 2})), "2"), "0");
}

#[test]
fn node_errors_are_reported_as_comfyui_reports_them() {
    let h = harness(vec![py_host("pytest_pack")]);
    let o = h.one("PyFail", json!({"value": 7}));
    let e = error(&o);
    assert_eq!(e["node_id"], "1");
    assert_eq!(e["node_type"], "PyFail");
    assert_eq!(e["exception_message"], "bad value 7\n");
    assert_eq!(e["exception_type"], "ValueError");
    // The host is fine afterwards.
    assert_eq!(
        text(&h.one("PyConcat", json!({"a": "a", "b": "b"})), "2"),
        "ab"
    );
}

#[test]
fn a_crashed_host_fails_its_node_and_is_restarted() {
    let h = harness(vec![py_host("pytest_pack")]);
    let before = pid(&h, 1);
    let e = error(&h.one("PyCrash", json!({"code": 3})));
    let msg = e["exception_message"].as_str().unwrap();
    assert!(
        msg.contains("node 1 (PyCrash) on node host 'pytest_pack'")
            && msg.contains("crashed")
            && msg.contains("exit status 3")
            && msg.contains("about to crash"),
        "{msg}"
    );
    assert_eq!(e["exception_type"], "NodeHostError");
    let after = pid(&h, 2);
    assert_ne!(before, after, "a new process serves the next call");
}

#[test]
fn a_host_that_dies_while_idle_is_replaced_before_the_next_call() {
    let h = harness(vec![py_host("pytest_pack")]);
    let before = pid(&h, 1);
    // Killed from outside between prompts (OOM killer, an operator).
    let rc = unsafe { libc::kill(before as i32, libc::SIGKILL) };
    assert_eq!(rc, 0);
    // Wait until the process is gone: a zombie until comfyrs reaps it counts as gone, but
    // only once its last thread has exited too. The leader of a killed multi-threaded process
    // shows as a zombie while its other threads are still exiting, and `waitpid` cannot reap
    // it until they have (CI saw exactly that race).
    let gone = || {
        let zombie = std::fs::read_to_string(format!("/proc/{before}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        let threads = std::fs::read_dir(format!("/proc/{before}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        zombie && threads <= 1
    };
    let t = std::time::Instant::now();
    while !gone() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the host did not die"
        );
        std::thread::yield_now();
    }
    let o = h.one("PyConcat", json!({"a": "still ", "b": "here"}));
    assert_eq!(text(&o, "2"), "still here");
    assert_ne!(before, pid(&h, 2));
}

#[test]
fn a_hung_host_times_out_and_is_restarted() {
    let mut cfg = py_host("pytest_pack");
    cfg.call_timeout = Duration::from_millis(1500);
    let h = harness(vec![cfg]);
    let before = pid(&h, 1);
    let e = error(&h.one("PyHang", json!({"seconds": 3600})));
    assert_eq!(e["exception_type"], "TimeoutError");
    let msg = e["exception_message"].as_str().unwrap();
    assert!(
        msg.contains("node 1 (PyHang) on node host 'pytest_pack': no answer within 1.5s"),
        "{msg}"
    );
    assert_ne!(before, pid(&h, 2));
}

/// Triggers the interrupt when the first progress event arrives (so the node is running).
struct InterruptOnProgress(Interrupt, std::sync::Mutex<Vec<(u64, u64)>>);
impl EventSink for InterruptOnProgress {
    fn emit(&self, e: Event) {
        if let Event::Progress { value, max, .. } = e {
            self.1.lock().unwrap().push((value, max));
            self.0.trigger();
        }
    }
}

#[test]
fn interrupts_cross_the_boundary() {
    let mut cfg = py_host("pytest_pack");
    cfg.interrupt_grace = Duration::from_millis(500);
    let h = harness(vec![cfg]);
    let before = pid(&h, 1);
    // A cooperative node stops at its next progress call; the host lives on.
    let interrupt = Interrupt::new();
    let sink = InterruptOnProgress(interrupt.clone(), Default::default());
    let wf = json!({
        "1": {"class_type": "PySlow", "inputs": {"steps": 100000}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    });
    let o = h.run_with(wf, &interrupt, &sink);
    assert!(
        matches!(o.status, RunStatus::Interrupted(_)),
        "{:?}",
        o.status
    );
    assert_eq!(sink.1.lock().unwrap()[0], (1, 100000));
    assert_eq!(before, pid(&h, 2), "a cooperative host is not restarted");
    // A node that ignores the interrupt: its host is killed after the grace period.
    let interrupt = Interrupt::new();
    let sink = InterruptOnProgress(interrupt.clone(), Default::default());
    let o = h.run_with(
        json!({
            "1": {"class_type": "PyHang", "inputs": {"seconds": 3600}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }),
        &interrupt,
        &sink,
    );
    assert!(
        matches!(o.status, RunStatus::Interrupted(_)),
        "{:?}",
        o.status
    );
    assert_ne!(before, pid(&h, 3));
}

/// Probes what the host may do: connect to a port listening here, write into `target/`.
fn probe(h: &Harness) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = root().join("target").display().to_string();
    text(
        &h.one("PyProbe", json!({"target": target, "port": port})),
        "2",
    )
}

#[test]
fn hosts_get_a_clean_environment() {
    std::env::set_var("COMFYRS_TEST_SECRET", "hunter2");
    let h = harness(vec![py_host("pytest_pack")]);
    let out = probe(&h);
    assert_eq!(out, "net:ok cwd:ok exchange:ok secret:absent");
}

#[test]
fn the_sandbox_denies_network_and_writes_outside_the_exchange_folder() {
    assert!(
        comfyrs::remote::sandbox::bwrap_available().is_some(),
        "bubblewrap (bwrap) must be installed and usable for this test (.ci/run installs it)"
    );
    let mut cfg = py_host("pytest_pack");
    cfg.sandbox = SandboxMode::On;
    let h = harness(vec![cfg]);
    // The host's own network namespace: nothing listens there; the filesystem is read-only.
    assert_eq!(
        probe(&h),
        "net:ConnectionRefusedError:111 cwd:OSError exchange:ok secret:absent"
    );
    // Tensors still cross.
    let o = h.run(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0xFFFFFF}},
        "2": {"class_type": "PyStats", "inputs": {"image": ["1", 0]}},
    }));
    assert!(o.is_success(), "{:?}", o.status);
    assert_eq!(o.outputs["2"]["sum"], json!([48.0]));
}

#[test]
fn a_host_that_cannot_start_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let mut registry = Registry::with_builtin_nodes();
    let bad = HostConfig::new(
        "broken",
        vec![
            "python3".into(),
            "-c".into(),
            "import sys; print('no protocol here'); sys.exit(5)".into(),
        ],
    );
    let e = NodeHosts::start(&mut registry, &env, vec![bad], OnClash::Error)
        .err()
        .unwrap();
    assert!(e.starts_with("node host 'broken' did not start"), "{e}");
    assert!(e.contains("frame") || e.contains("exit status 5"), "{e}");
    let missing = HostConfig::new("missing", vec!["/nonexistent/host".into()]);
    let e = NodeHosts::start(&mut registry, &env, vec![missing], OnClash::Error)
        .err()
        .unwrap();
    assert_eq!(
        e,
        "node host 'missing' did not start: cannot run \"/nonexistent/host\": No such file or \
         directory (os error 2)"
    );
}

#[test]
fn serve_flags_start_hosts_with_the_shipped_sdk_in_the_sandbox() {
    use comfyrs::remote::args::NodeHostArgs;
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let mut registry = Registry::with_builtin_nodes();
    let pack = root().join("tests/node_hosts/py_pack.py");
    let args = NodeHostArgs {
        // No PYTHONPATH from the test: the SDK comes from comfyrs itself (written under /tmp,
        // which the sandbox hides unless it is bound in).
        node_host: vec![format!("pyt=python3 {}", pack.display())],
        sandbox: "on".into(),
        node_timeout: 30.0,
        ..Default::default()
    };
    let started = args.start(&mut registry, &env).unwrap();
    assert_eq!(started.hosts.reports[0].name, "pyt");
    assert_eq!(
        registry.schema("PyConcat").unwrap().python_module,
        "custom_nodes.pyt"
    );
    let bad = NodeHostArgs {
        node_host: vec!["no command".into()],
        ..Default::default()
    };
    let e = bad.start(&mut registry, &env).err().unwrap();
    assert_eq!(e, "--node-host \"no command\": expected NAME=COMMAND");
    let bad = NodeHostArgs {
        node_timeout: 0.0,
        ..Default::default()
    };
    let e = bad.start(&mut registry, &env).err().unwrap();
    assert_eq!(e, "--node-timeout 0: expected a positive number of seconds");
}

/// The Unix socket transport (`--node-host-transport unix`): the same protocol on a socket in
/// the exchange folder. The host's stdin is empty and its stdout free (PyCrash's print goes to
/// the log and into the crash report); tensors, node errors, interrupts and a crash with
/// restart behave as over stdio, also inside the sandbox. A host without socket support fails
/// to start, saying so.
#[test]
fn the_unix_socket_transport_carries_the_same_protocol() {
    let mut cfg = py_host("pytest_pack");
    cfg.transport = Transport::Unix;
    cfg.interrupt_grace = Duration::from_millis(500);
    let h = harness(vec![cfg]);
    let before = pid(&h, 1);
    // The process talks over a socket: stdin is /dev/null, and a socket is open.
    let fd0 = std::fs::read_link(format!("/proc/{before}/fd/0")).unwrap();
    assert_eq!(fd0, PathBuf::from("/dev/null"));
    let sockets = std::fs::read_dir(format!("/proc/{before}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count();
    assert!(sockets >= 1);
    // Tensors both ways and primitives.
    let o = h.run(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0x336699}},
        "2": {"class_type": "PyScaleImage", "inputs": {"image": ["1", 0], "factor": 0.5}},
        "3": {"class_type": "PyImageToMask", "inputs": {"image": ["2", 0], "channel": "green"}},
        "4": {"class_type": "PyStats", "inputs": {"image": ["2", 0], "mask": ["3", 0]}},
    }));
    assert!(o.is_success(), "{:?}", o.status);
    let g = 0x66 as f64 / 255.0;
    let msum = o.outputs["4"]["mask_sum"][0].as_f64().unwrap();
    assert!(
        (msum - (2 * 16 * 8) as f64 * g / 2.0).abs() < 1e-2,
        "{msum}"
    );
    // A node error, then an interrupt of a cooperative node: the same process serves on.
    let e = error(&h.one("PyFail", json!({"value": 7})));
    assert_eq!(e["exception_type"], "ValueError");
    let interrupt = Interrupt::new();
    let sink = InterruptOnProgress(interrupt.clone(), Default::default());
    let o = h.run_with(
        json!({
            "1": {"class_type": "PySlow", "inputs": {"steps": 100000}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }),
        &interrupt,
        &sink,
    );
    assert!(
        matches!(o.status, RunStatus::Interrupted(_)),
        "{:?}",
        o.status
    );
    assert_eq!(before, pid(&h, 2));
    // A crash fails the node with the host's last output and a new process (new socket)
    // serves the next call.
    let e = error(&h.one("PyCrash", json!({"code": 3})));
    let msg = e["exception_message"].as_str().unwrap();
    assert!(
        msg.contains("exit status 3") && msg.contains("about to crash"),
        "{msg}"
    );
    let after = pid(&h, 3);
    assert_ne!(before, after);
    assert_eq!(
        text(&h.one("PyConcat", json!({"a": "a", "b": "b"})), "2"),
        "ab"
    );

    // Inside the bubblewrap sandbox (the socket lives in the one folder it may write).
    let mut boxed = py_host("pytest_pack");
    boxed.transport = Transport::Unix;
    boxed.sandbox = SandboxMode::On;
    let hb = harness(vec![boxed]);
    assert_eq!(
        text(&hb.one("PyConcat", json!({"a": "in ", "b": "box"})), "2"),
        "in box"
    );

    // The JavaScript example speaks stdio only: a clear start-up error.
    let mut js = js_host();
    js.transport = Transport::Unix;
    js.start_timeout = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::new(Paths::under(dir.path()));
    let mut registry = Registry::with_builtin_nodes();
    let err = NodeHosts::start(&mut registry, &env, vec![js], OnClash::Error)
        .err()
        .expect("a host that never connects");
    assert!(err.contains("COMFYRS_NODE_SOCKET"), "{err}");
}
