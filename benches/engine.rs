//! Engine benchmark: parse + override + validate + plan, and full execution, for generated
//! model-free workflows (deep chains and wide fan-outs). Run with
//! `cargo bench --bench engine`; figures go to BENCHMARKS.md. Optional arguments pick rows and
//! phases, for profiling one size: `cargo bench --bench engine -- chain 10000 --front-only`.

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{CachePolicy, Executor, ExecutorConfig, Interrupt, NoEvents};
use comfyrs::graph::{plan, validate};
use comfyrs::node::Registry;
use comfyrs::prompt::{apply_registry_overrides, prepare};
use comfyrs::workflow::{parse_set_arg, parse_workflow, Overrides};
use serde_json::{json, Map, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// PrimitiveString -> N x StringConcatenate -> PreviewAny.
fn chain(n: usize) -> Json {
    let mut wf = Map::new();
    wf.insert(
        "0".into(),
        json!({"class_type": "PrimitiveString", "inputs": {"value": "x"}}),
    );
    for i in 1..=n {
        wf.insert(
            i.to_string(),
            json!({"class_type": "StringConcatenate",
            "inputs": {"string_a": [(i - 1).to_string(), 0], "string_b": "", "delimiter": ""}}),
        );
    }
    wf.insert(
        "out".into(),
        json!({"class_type": "PreviewAny", "inputs": {"source": [n.to_string(), 0]}}),
    );
    Json::Object(wf)
}

/// N/3 branches of PrimitiveString -> CaseConverter -> PreviewAny (N nodes in all).
fn wide(n: usize) -> Json {
    let mut wf = Map::new();
    for b in 0..n / 3 {
        wf.insert(
            format!("s{b}"),
            json!({"class_type": "PrimitiveString", "inputs": {"value": format!("v{b}")}}),
        );
        wf.insert(format!("c{b}"), json!({"class_type": "CaseConverter", "inputs": {"string": [format!("s{b}"), 0], "mode": "UPPERCASE"}}));
        wf.insert(
            format!("p{b}"),
            json!({"class_type": "PreviewAny", "inputs": {"source": [format!("c{b}"), 0]}}),
        );
    }
    Json::Object(wf)
}

/// Median of `reps` timings of `f`.
fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[reps / 2]
}

/// Median timings of the front half, phase by phase, over `reps` runs.
struct FrontTimes {
    parse: Duration,
    overrides: Duration,
    validate: Duration,
    plan: Duration,
    validate_plan: Duration,
    /// Building the recorded prompt's JSON, which history and SaveImage do on first use.
    record: Duration,
}

fn front_half(
    text: &str,
    set: &str,
    nodes: usize,
    reps: usize,
    registry: &Registry,
    env: &Environment,
) -> FrontTimes {
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut parse, mut over, mut val, mut pl, mut vp, mut rec) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t0 = Instant::now();
        let mut w = parse_workflow(text).unwrap();
        let t1 = Instant::now();
        let mut o = Overrides::new();
        parse_set_arg(set, &mut o).unwrap();
        apply_registry_overrides(&mut w, &o, registry).unwrap();
        let t2 = Instant::now();
        let v = validate(w, registry, env, None).unwrap();
        let t3 = Instant::now();
        let p = plan(&v.graph, env, |_| false);
        let t4 = Instant::now();
        assert_eq!(p.signatures.len(), nodes);
        let t5 = Instant::now();
        assert!(v.prompt.json().is_object());
        rec.push(t5.elapsed());
        drop((p, v));
        parse.push(t1 - t0);
        over.push(t2 - t1);
        val.push(t3 - t2);
        pl.push(t4 - t3);
        vp.push(t4 - t2);
    }
    FrontTimes {
        parse: median(parse),
        overrides: median(over),
        validate: median(val),
        plan: median(pl),
        validate_plan: median(vp),
        record: median(rec),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let front_only = args.iter().any(|a| a == "--front-only");
    let shape_filter = args.iter().find(|a| *a == "chain" || *a == "wide").cloned();
    let size_filter: Option<usize> = args.iter().find_map(|a| a.parse().ok());
    let registry = Arc::new(Registry::with_builtin_nodes());
    let dir = std::env::temp_dir().join("comfyrs-bench");
    let env = Arc::new(Environment::new(Paths::under(&dir)));
    println!(
        "| shape | nodes | parse | override | validate | plan | **validate+plan** | prompt record JSON | execute (cold cache) | execute per node |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (shape, n) in [
        ("chain", 100),
        ("chain", 500),
        ("chain", 1_000),
        ("chain", 10_000),
        ("wide", 102),
        ("wide", 1_002),
        ("wide", 1_500),
        ("wide", 10_002),
        ("wide", 15_000),
    ] {
        if shape_filter.as_deref().is_some_and(|s| s != shape)
            || size_filter.is_some_and(|s| s != n)
        {
            continue;
        }
        let wf = if shape == "chain" { chain(n) } else { wide(n) };
        let text = wf.to_string();
        let nodes = wf.as_object().unwrap().len();
        let set = if shape == "chain" {
            "0.value=z"
        } else {
            "s0.value=z"
        };
        let reps = if nodes > 5_000 { 11 } else { 21 };
        let front = front_half(&text, set, nodes, reps, &registry, &env);
        if front_only {
            println!(
                "| {shape} | {nodes} | {} | {} | {} | {} | **{}** | {} | | |",
                ms(front.parse),
                ms(front.overrides),
                ms(front.validate),
                ms(front.plan),
                ms(front.validate_plan),
                ms(front.record)
            );
            continue;
        }
        let w = parse_workflow(&text).unwrap();
        let v = prepare(w, &Overrides::new(), &registry, &env, None).unwrap();
        let exec = time(reps, || {
            let ex = Executor::new(
                registry.clone(),
                env.clone(),
                ExecutorConfig {
                    cache: CachePolicy::Classic,
                    workers: 1,
                },
            );
            let out = ex.run("bench", &v, None, &Interrupt::new(), &NoEvents);
            assert!(out.is_success());
            assert_eq!(out.executed.len(), nodes);
        });
        println!(
            "| {shape} | {nodes} | {} | {} | {} | {} | **{}** | {} | {} | {:.2} µs |",
            ms(front.parse),
            ms(front.overrides),
            ms(front.validate),
            ms(front.plan),
            ms(front.validate_plan),
            ms(front.record),
            ms(exec),
            exec.as_secs_f64() * 1e6 / nodes as f64
        );
    }
}
