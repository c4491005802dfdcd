//! End-to-end tests of the engine: parse -> overrides -> validate -> plan -> execute, with
//! test-only nodes registered through the public API (as a custom node pack would).

use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{
    CachePolicy, Event, EventLog, Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus,
};
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, OutputSpec, Registry,
    Value,
};
use comfyrs::prompt::{prepare, PromptError};
use comfyrs::workflow::{overrides_from_json, parse_set_arg, parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts executions per node id.
#[derive(Default, Clone)]
struct Counts(Arc<Mutex<HashMap<String, usize>>>);
impl Counts {
    fn get(&self, id: &str) -> usize {
        *self.0.lock().unwrap().get(id).unwrap_or(&0)
    }
    fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

/// `Add`: INT a + INT b, counting its executions.
struct Add(Counts);
impl Node for Add {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestAdd")
            .category("test")
            .input(InputSpec::int("a").default(0).min(-100).max(100))
            .input(InputSpec::int("b").default(0))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        *self
            .0
             .0
            .lock()
            .unwrap()
            .entry(ctx.node_id.to_string())
            .or_default() += 1;
        Ok(NodeOutput::one(Value::Int(i.int("a")? + i.int("b")?)))
    }
}

/// `TestPanic`: panics when `boom` is true.
struct Panicky;
impl Node for Panicky {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestPanic")
            .input(InputSpec::boolean("boom"))
            .input(InputSpec::string("text"))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        if i.boolean("boom")? {
            panic!("kaboom from a test node");
        }
        Ok(NodeOutput::one(Value::String(i.string("text")?.into())))
    }
}

/// `TestSlow`: runs `steps` steps of 10 ms, reporting progress and honouring interrupts.
struct Slow;
impl Node for Slow {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestSlow")
            .input(InputSpec::int("steps").default(10).min(1).max(100000))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, ctx: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let steps = i.int("steps")? as u64;
        for s in 0..steps {
            std::thread::sleep(Duration::from_millis(10));
            ctx.progress(s + 1, steps)?;
        }
        Ok(NodeOutput::one(Value::Int(steps as i128)))
    }
}

/// `TestFail`: returns a node error.
struct Fails;
impl Node for Fails {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestFail")
            .input(InputSpec::string("why"))
            .output(OutputSpec::new("STRING"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Err(NodeError::msg(format!(
            "failed on purpose: {}",
            i.string("why")?
        )))
    }
}

/// `TestEven`: custom validation (VALIDATE_INPUTS) that accepts only even numbers.
struct Even;
impl Node for Even {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestEven")
            .input(InputSpec::int("n"))
            .output(OutputSpec::new("INT"))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        Ok(NodeOutput::one(Value::Int(i.int("n")?)))
    }
    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        &["n"]
    }
    fn validate_inputs(&self, _: &Environment, i: &Inputs) -> Result<(), String> {
        match i.get("n") {
            Some(Value::Int(n)) if n % 2 != 0 => Err(format!("{n} is odd")),
            _ => Ok(()),
        }
    }
}

/// `TestSplit`: one STRING -> a list output of its characters (OUTPUT_IS_LIST).
struct Split;
impl Node for Split {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("TestSplit")
            .input(InputSpec::string("text"))
            .output(OutputSpec::new("STRING").list())
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let parts = i
            .string("text")?
            .chars()
            .map(|c| Value::String(c.to_string()))
            .collect();
        Ok(NodeOutput::one(Value::List(parts)))
    }
}

struct Harness {
    registry: Arc<Registry>,
    env: Arc<Environment>,
    counts: Counts,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let counts = Counts::default();
    let mut r = Registry::with_builtin_nodes();
    r.register(Add(counts.clone())).unwrap();
    r.register(Panicky).unwrap();
    r.register(Slow).unwrap();
    r.register(Fails).unwrap();
    r.register(Even).unwrap();
    r.register(Split).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Harness {
        registry: Arc::new(r),
        env: Arc::new(Environment::new(Paths::under(dir.path()))),
        counts,
        _dir: dir,
    }
}

impl Harness {
    fn executor(&self, cache: CachePolicy) -> Executor {
        Executor::new(
            self.registry.clone(),
            self.env.clone(),
            ExecutorConfig { cache, workers: 1 },
        )
    }
    fn prepare(
        &self,
        wf: Json,
        overrides: &Overrides,
    ) -> Result<comfyrs::graph::ValidPrompt, PromptError> {
        let w = parse_workflow(&wf.to_string())?;
        prepare(w, overrides, &self.registry, &self.env, None)
    }
    fn error(&self, wf: Json) -> Json {
        match self.prepare(wf, &Overrides::new()) {
            Ok(_) => panic!("expected a validation error"),
            Err(e) => e.to_comfy_json(),
        }
    }
}

/// A chain 1 -> 2 -> 3 -> preview, plus an unrelated branch 10 -> 11 -> preview 12.
fn two_branches() -> Json {
    json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": 1, "b": 2}},
        "2": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": 10}},
        "3": {"class_type": "TestAdd", "inputs": {"a": ["2", 0], "b": 100}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "10": {"class_type": "TestAdd", "inputs": {"a": 5, "b": 5}},
        "11": {"class_type": "TestAdd", "inputs": {"a": ["10", 0], "b": 1}},
        "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}}
    })
}

fn preview_text(outcome: &comfyrs::exec::RunOutcome, node: &str) -> String {
    outcome.outputs[node]["text"][0]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Parsing errors

#[test]
fn invalid_json_reports_line_and_column() {
    let err = parse_workflow("{\n  \"1\": {\"class_type\": \"PreviewAny\",\n  }\n}").unwrap_err();
    let j = PromptError::from(err).to_comfy_json();
    assert_eq!(j["error"]["type"], "invalid_json");
    assert_eq!(j["error"]["extra_info"]["line"], 3);
    assert_eq!(j["error"]["extra_info"]["column"], 3);
    assert!(j["error"]["details"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON at line 3, column 3"));
    assert_eq!(j["node_errors"], json!({}));
}

#[test]
fn missing_class_type_is_comfyui_invalid_prompt() {
    let err = parse_workflow(r#"{"7": {"inputs": {}}}"#).unwrap_err();
    assert_eq!(
        PromptError::from(err).to_comfy_json(),
        json!({"error": {"type": "invalid_prompt",
                         "message": "Cannot execute because a node is missing the class_type property.",
                         "details": "Node ID '#7'", "extra_info": {}},
               "node_errors": {}})
    );
}

#[test]
fn inputs_must_be_an_object_and_links_well_formed() {
    let e = parse_workflow(r#"{"3": {"class_type": "PreviewAny", "inputs": [1, 2]}}"#).unwrap_err();
    let j = PromptError::from(e).to_comfy_json();
    assert_eq!(j["error"]["type"], "invalid_prompt");
    assert_eq!(j["error"]["extra_info"]["node_id"], "3");
    assert_eq!(
        j["error"]["details"],
        "node '3': \"inputs\" must be an object mapping input names to values, found a list"
    );

    let e = parse_workflow(r#"{"3": {"class_type": "PreviewAny", "inputs": {"source": [4, 0]}}}"#)
        .unwrap_err();
    let j = PromptError::from(e).to_comfy_json();
    assert_eq!(
        j["error"]["extra_info"],
        json!({"node_id": "3", "input_name": "source"})
    );
    assert!(j["error"]["details"]
        .as_str()
        .unwrap()
        .contains("malformed link [4,0]"));
}

#[test]
fn prompt_wrapper_is_accepted_and_key_order_kept() {
    let w = parse_workflow(r#"{"prompt": {"b": {"class_type": "PreviewAny", "inputs": {"source": "x"}},
                                           "a": {"class_type": "PreviewAny", "inputs": {"source": "y"}}},
                               "client_id": "c"}"#)
    .unwrap();
    assert_eq!(w.nodes.keys().collect::<Vec<_>>(), ["b", "a"]);
}

// ---------------------------------------------------------------------------------------
// Validation errors, field by field

#[test]
fn unknown_class_and_no_outputs() {
    let h = harness();
    assert_eq!(
        h.error(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}})),
        json!({"error": {"type": "invalid_prompt",
                         "message": "Cannot execute because node NoSuchNode does not exist.",
                         "details": "Node ID '#1'", "extra_info": {}},
               "node_errors": {}})
    );
    assert_eq!(
        h.error(json!({"1": {"class_type": "TestAdd", "inputs": {"a": 1, "b": 2}}})),
        json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                         "details": "", "extra_info": {}},
               "node_errors": {}})
    );
}

#[test]
fn required_input_missing_on_output_node_fills_details() {
    let h = harness();
    let j = h.error(json!({"9": {"class_type": "PreviewAny", "inputs": {}}}));
    assert_eq!(
        j,
        json!({"error": {"type": "prompt_outputs_failed_validation",
                         "message": "Prompt outputs failed validation",
                         "details": "Required input is missing: source", "extra_info": {}},
               "node_errors": {"9": {"errors": [{"type": "required_input_missing",
                                                 "message": "Required input is missing",
                                                 "details": "source",
                                                 "extra_info": {"input_name": "source"}}],
                                     "dependent_outputs": ["9"], "class_type": "PreviewAny"}}})
    );
}

#[test]
fn upstream_errors_all_reported_in_one_pass() {
    let h = harness();
    let j = h.error(json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": 500, "b": "x"}},
        "2": {"class_type": "CaseConverter", "inputs": {"string": "s", "mode": "Shout"}},
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["2", 0], "string_b": ["1", 0], "delimiter": ""}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}
    }));
    assert_eq!(j["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(
        j["error"]["details"], "",
        "the errors sit upstream of the output"
    );
    let n1 = &j["node_errors"]["1"];
    assert_eq!(n1["class_type"], "TestAdd");
    assert_eq!(n1["dependent_outputs"], json!(["4"]));
    assert_eq!(
        n1["errors"],
        json!([
            {"type": "value_bigger_than_max", "message": "Value 500 bigger than max of 100",
             "details": "a", "extra_info": {"input_name": "a",
                "input_config": ["INT", {"default": 0, "min": -100, "max": 100}], "received_value": 500}},
            {"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
             "details": "b, x, invalid literal for int() with base 10: 'x'",
             "extra_info": {"input_name": "b", "input_config": ["INT", {"default": 0}],
                            "received_value": "x",
                            "exception_message": "invalid literal for int() with base 10: 'x'"}}
        ])
    );
    assert_eq!(
        j["node_errors"]["2"]["errors"][0],
        json!({"type": "value_not_in_list", "message": "Value not in list",
               "details": "mode: 'Shout' not in ['UPPERCASE', 'lowercase', 'Capitalize', 'Title Case']",
               "extra_info": {"input_name": "mode",
                  "input_config": ["COMBO", {"multiselect": false,
                                   "options": ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]}],
                  "received_value": "Shout"}})
    );
    let n3 = &j["node_errors"]["3"]["errors"][0];
    assert_eq!(n3["type"], "return_type_mismatch");
    assert_eq!(
        n3["details"],
        "string_b, received_type(INT) mismatch input_type(STRING)"
    );
    assert_eq!(n3["extra_info"]["received_type"], "INT");
    assert_eq!(n3["extra_info"]["linked_node"], json!(["1", 0]));
    assert!(
        j["node_errors"].get("4").is_none(),
        "invalid only through ancestors: no entry"
    );
}

#[test]
fn value_smaller_than_min_and_seed_sized_ints() {
    let h = harness();
    let j = h.error(json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": -101, "b": 0}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    }));
    let e = &j["node_errors"]["1"]["errors"][0];
    assert_eq!(e["type"], "value_smaller_than_min");
    assert_eq!(e["message"], "Value -101 smaller than min of -100");
    assert_eq!(e["extra_info"]["received_value"], -101);
    // INT literals up to 2^64-1 (ComfyUI's seed max) convert exactly.
    let v = h.prepare(
        json!({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 18446744073709551615u64}},
                   "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
        &Overrides::new(),
    );
    let j = v.err().unwrap().to_comfy_json();
    assert_eq!(
        j["node_errors"]["1"]["errors"][0]["message"],
        "Value 18446744073709551615 bigger than max of 9223372036854775807"
    );
}

#[test]
fn bad_links_dangling_links_and_out_of_range_outputs() {
    let h = harness();
    let j = h.error(json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": ["1", 0, 5], "b": ["99", 0]}},
        "2": {"class_type": "TestAdd", "inputs": {"a": ["1", 3], "b": 1}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}
    }));
    let e1 = &j["node_errors"]["1"]["errors"];
    assert_eq!(e1[0]["type"], "bad_linked_input");
    assert_eq!(
        e1[0]["message"],
        "Bad linked input, must be a length-2 list of [node_id, slot_index]"
    );
    assert_eq!(e1[0]["extra_info"]["received_value"], json!(["1", 0, 5]));
    assert_eq!(e1[1]["type"], "exception_during_inner_validation");
    assert_eq!(
        e1[1]["details"],
        "input 'b' links to node '99', which is not in the prompt"
    );
    assert_eq!(e1[1]["extra_info"]["exception_type"], "KeyError");
    assert_eq!(e1[1]["extra_info"]["linked_node"], json!(["99", 0]));
    let e2 = &j["node_errors"]["2"]["errors"][0];
    assert_eq!(e2["type"], "exception_during_inner_validation");
    assert_eq!(
        e2["details"],
        "input 'a' links to output 3 of node '1' (TestAdd), which has 1 output(s)"
    );
    assert_eq!(e2["extra_info"]["exception_type"], "IndexError");
}

#[test]
fn cycles_name_every_node_on_the_cycle() {
    let h = harness();
    let j = h.error(json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": ["3", 0], "b": 1}},
        "2": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "TestAdd", "inputs": {"a": ["2", 0], "b": 1}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}
    }));
    for id in ["1", "2", "3"] {
        let e = &j["node_errors"][id]["errors"][0];
        assert_eq!(e["type"], "dependency_cycle");
        assert_eq!(e["message"], "Dependency cycle detected");
        assert_eq!(
            e["details"],
            "1 (TestAdd) -> 2 (TestAdd) -> 3 (TestAdd) -> 1 (TestAdd)"
        );
        assert_eq!(
            e["extra_info"],
            json!({"node_id": id, "cycle_nodes": ["1", "2", "3"]})
        );
    }
}

#[test]
fn custom_validation_and_literal_for_linked_type() {
    let h = harness();
    let j = h.error(json!({
        "1": {"class_type": "TestEven", "inputs": {"n": 3}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    }));
    assert_eq!(
        j["node_errors"]["1"]["errors"],
        json!([{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                "details": "n - 3 is odd", "extra_info": {"input_name": "n"}}])
    );
    // A wildcard output may feed a typed input, and an INT may not feed STRING.
    assert!(h
        .prepare(
            json!({"1": {"class_type": "TestEven", "inputs": {"n": 4}},
                             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
            &Overrides::new()
        )
        .is_ok());
}

#[test]
fn partial_failure_keeps_valid_outputs_and_reports_the_rest() {
    let h = harness();
    let v = h
        .prepare(
            json!({"1": {"class_type": "PreviewAny", "inputs": {"source": "ok"}},
                   "2": {"class_type": "TestAdd", "inputs": {"a": 1000, "b": 0}},
                   "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    assert_eq!(v.outputs, ["1"]);
    assert_eq!(v.node_errors["2"]["dependent_outputs"], json!(["3"]));
    assert_eq!(
        v.node_errors["2"]["errors"][0]["type"],
        "value_bigger_than_max"
    );
}

#[test]
fn literals_are_converted_and_written_back() {
    let h = harness();
    let v = h
        .prepare(
            json!({"1": {"class_type": "TestAdd", "inputs": {"a": 7.9, "b": "3"}},
                   "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    assert_eq!(v.prompt.json()["1"]["inputs"], json!({"a": 7, "b": 3}));
    let out = h
        .executor(CachePolicy::Classic)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(preview_text(&out, "2"), "10");
}

// ---------------------------------------------------------------------------------------
// Overrides

#[test]
fn overrides_from_file_and_set_args() {
    let h = harness();
    let mut o = overrides_from_json(&json!({"1": {"inputs": {"a": 20}}})).unwrap();
    parse_set_arg("2.b=30", &mut o).unwrap();
    parse_set_arg("3.b=not json", &mut o).unwrap();
    assert_eq!(o["3"]["b"], json!("not json"));
    o["3"].insert("b".into(), json!(0));
    let v = h.prepare(two_branches(), &o).unwrap();
    let out = h
        .executor(CachePolicy::Classic)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(preview_text(&out, "4"), "52"); // (20 + 2) + 30 + 0
}

#[test]
fn override_errors_name_node_and_input() {
    let h = harness();
    let mut o = Overrides::new();
    parse_set_arg("77.a=1", &mut o).unwrap();
    let j = h.prepare(two_branches(), &o).err().unwrap().to_comfy_json();
    assert_eq!(j["error"]["type"], "invalid_override");
    assert_eq!(j["error"]["extra_info"], json!({"node_id": "77"}));
    assert!(j["error"]["details"]
        .as_str()
        .unwrap()
        .starts_with("override names node '77', which is not in the workflow"));

    let mut o = Overrides::new();
    parse_set_arg("1.c=1", &mut o).unwrap();
    let j = h.prepare(two_branches(), &o).err().unwrap().to_comfy_json();
    assert_eq!(
        j["error"]["extra_info"],
        json!({"node_id": "1", "input_name": "c"})
    );
    assert_eq!(
        j["error"]["details"],
        "override for node '1' (TestAdd) sets input 'c', which the node neither has nor declares (inputs: a, b)"
    );
    assert!(parse_set_arg("nodot=1", &mut Overrides::new()).is_err());
    assert!(overrides_from_json(&json!({"1": {"text": "x"}})).is_err());
}

#[test]
fn overriding_a_link_with_a_literal_and_back_is_revalidated() {
    let h = harness();
    let mut o = Overrides::new();
    parse_set_arg("3.a=1", &mut o).unwrap(); // link -> literal
    let v = h.prepare(two_branches(), &o).unwrap();
    let out = h
        .executor(CachePolicy::Classic)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(preview_text(&out, "4"), "101");
    assert_eq!(h.counts.get("1"), 0, "node 1 is no longer needed");

    let mut o = Overrides::new();
    parse_set_arg(r#"1.a=["4", 0]"#, &mut o).unwrap(); // literal -> link to a node with no outputs
    let v = h.prepare(two_branches(), &o).unwrap(); // output 12 stays valid, 4 is dropped
    assert_eq!(v.outputs, ["12"]);
    assert_eq!(
        v.node_errors["1"]["errors"][0]["extra_info"]["exception_type"],
        "IndexError"
    );
    assert_eq!(v.node_errors["1"]["dependent_outputs"], json!(["4"]));
}

// ---------------------------------------------------------------------------------------
// Planning, execution and the cache

#[test]
fn rerun_with_one_change_reexecutes_exactly_that_node_and_descendants() {
    let h = harness();
    let ex = h.executor(CachePolicy::Classic);
    let v = h.prepare(two_branches(), &Overrides::new()).unwrap();
    let first = ex.run("a", &v, None, &Interrupt::new(), &NoEvents);
    assert!(first.is_success());
    assert_eq!(h.counts.total(), 5);
    assert_eq!(first.cached, Vec::<String>::new());

    let mut o = Overrides::new();
    parse_set_arg("2.b=11", &mut o).unwrap();
    let v2 = h.prepare(two_branches(), &o).unwrap();
    let log = EventLog::default();
    let second = ex.run("b", &v2, None, &Interrupt::new(), &log);
    assert_eq!(preview_text(&second, "4"), "114");
    assert_eq!(second.executed, ["2", "3", "4"]);
    assert_eq!(second.cached, ["1", "10", "11", "12"]);
    assert_eq!(
        (h.counts.get("1"), h.counts.get("2"), h.counts.get("3")),
        (1, 2, 2)
    );
    assert_eq!((h.counts.get("10"), h.counts.get("11")), (1, 1));
    // The cached output node replays its UI.
    let events = log.take();
    assert!(events.iter().any(
        |e| matches!(e, Event::Executed { node, output: Some(o), .. }
        if node == "12" && o["text"][0] == "11")
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Executing { node: Some(n), .. } if n == "12")));

    // The same prompt again: nothing executes.
    let third = ex.run("c", &v2, None, &Interrupt::new(), &NoEvents);
    assert_eq!(third.executed, Vec::<String>::new());
    assert_eq!(h.counts.total(), 7);
}

#[test]
fn unreachable_nodes_never_run_and_partial_targets() {
    let h = harness();
    let mut wf = two_branches();
    wf["50"] = json!({"class_type": "TestAdd", "inputs": {"a": 1, "b": 1}});
    let v = h.prepare(wf.clone(), &Overrides::new()).unwrap();
    h.executor(CachePolicy::None)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(h.counts.get("50"), 0);

    let w = parse_workflow(&wf.to_string()).unwrap();
    let v = prepare(
        w,
        &Overrides::new(),
        &h.registry,
        &h.env,
        Some(&["12".to_string()]),
    )
    .unwrap();
    assert_eq!(v.outputs, ["12"]);
    let out = h
        .executor(CachePolicy::None)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.executed, ["10", "11", "12"]);
}

#[test]
fn events_follow_comfyui_order() {
    let h = harness();
    let v = h.prepare(two_branches(), &Overrides::new()).unwrap();
    let log = EventLog::default();
    h.executor(CachePolicy::Classic)
        .run("pid", &v, None, &Interrupt::new(), &log);
    let kinds: Vec<String> = log
        .take()
        .iter()
        .map(|e| {
            assert_eq!(e.prompt_id(), "pid");
            match e {
                Event::Executing { node: Some(n), .. } => format!("executing {n}"),
                Event::Executed { node, .. } => format!("executed {node}"),
                other => other.kind().to_string(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            // ComfyUI's heuristic: 10 is two links from an output, 1 is three. Each node's
            // start and finish re-send progress_state.
            "execution_start",
            "execution_cached",
            "progress_state",
            "executing 10",
            "progress_state",
            "progress_state",
            "executing 11",
            "progress_state",
            "progress_state",
            "executing 12",
            "executed 12",
            "progress_state",
            "progress_state",
            "executing 1",
            "progress_state",
            "progress_state",
            "executing 2",
            "progress_state",
            "progress_state",
            "executing 3",
            "progress_state",
            "progress_state",
            "executing 4",
            "executed 4",
            "progress_state",
            "execution_success"
        ]
    );
}

/// The `nodes` maps of a run's progress_state events, as (id, state, value, max) per node.
fn progress_states(events: &[Event]) -> Vec<Vec<(String, String, Json, Json)>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ProgressState { prompt_id, nodes } => {
                assert_eq!(e.data()["prompt_id"], prompt_id.as_str());
                Some(
                    nodes
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(id, n)| {
                            for key in ["node_id", "display_node_id", "real_node_id"] {
                                assert_eq!(n[key], id.as_str(), "{key} of {id}");
                            }
                            assert_eq!(n["prompt_id"], prompt_id.as_str());
                            assert_eq!(n["parent_node_id"], Json::Null);
                            let st = n["state"].as_str().unwrap().to_string();
                            (id.clone(), st, n["value"].clone(), n["max"].clone())
                        })
                        .collect(),
                )
            }
            _ => None,
        })
        .collect()
}

#[test]
fn progress_state_lists_every_touched_node_like_comfyui() {
    let h = harness();
    let ex = h.executor(CachePolicy::Classic);
    let wf = json!({
        "1": {"class_type": "TestSlow", "inputs": {"steps": 2}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    let v = h.prepare(wf, &Overrides::new()).unwrap();
    let log = EventLog::default();
    assert!(ex.run("p1", &v, None, &Interrupt::new(), &log).is_success());
    let events = log.take();
    let s =
        |id: &str, st: &str, value: Json, max: Json| (id.to_string(), st.to_string(), value, max);
    assert_eq!(
        progress_states(&events),
        vec![
            vec![s("1", "running", json!(0.0), json!(1.0))],
            vec![s("1", "running", json!(1), json!(2))],
            vec![s("1", "running", json!(2), json!(2))],
            vec![s("1", "finished", json!(2), json!(2))],
            vec![
                s("1", "finished", json!(2), json!(2)),
                s("2", "running", json!(0.0), json!(1.0))
            ],
            vec![
                s("1", "finished", json!(2), json!(2)),
                s("2", "finished", json!(1.0), json!(1.0))
            ],
        ]
    );
    // Each progress update: progress_state first, then `progress` (ComfyUI's hook order).
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    let first_progress = kinds.iter().position(|k| *k == "progress").unwrap();
    assert_eq!(kinds[first_progress - 1], "progress_state");
    assert!(!events
        .iter()
        .any(|e| e.goes_in_history() && e.kind() == "progress_state"));

    // Run again: the output node is served from cache, so it is only finished (1 of 1) and
    // node 1, never scheduled, is not listed.
    let log = EventLog::default();
    assert!(ex.run("p2", &v, None, &Interrupt::new(), &log).is_success());
    assert_eq!(
        progress_states(&log.take()),
        vec![vec![s("2", "finished", json!(1), json!(1))]]
    );
}

#[test]
fn list_outputs_map_over_downstream_nodes() {
    let h = harness();
    let v = h
        .prepare(
            json!({"1": {"class_type": "TestSplit", "inputs": {"text": "abc"}},
                   "2": {"class_type": "CaseConverter", "inputs": {"string": ["1", 0], "mode": "UPPERCASE"}},
                   "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    let out = h
        .executor(CachePolicy::Classic)
        .run("p", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.outputs["3"]["text"], json!(["A", "B", "C"]));
}

#[test]
fn node_error_and_panic_become_execution_errors_and_the_next_run_works() {
    let h = harness();
    let ex = h.executor(CachePolicy::Classic);
    let wf = json!({
        "1": {"class_type": "TestAdd", "inputs": {"a": 1, "b": 1}},
        "2": {"class_type": "TestPanic", "inputs": {"boom": true, "text": "hi"}},
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["2", 0], "string_b": "!", "delimiter": ""}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    });
    let v = h.prepare(wf.clone(), &Overrides::new()).unwrap();
    let out = ex.run("p1", &v, None, &Interrupt::new(), &NoEvents);
    let RunStatus::Error(data) = &out.status else {
        panic!("expected an error: {:?}", out.status)
    };
    assert_eq!(data["node_id"], "2");
    assert_eq!(data["node_type"], "TestPanic");
    assert_eq!(data["exception_type"], "Panic");
    assert_eq!(
        data["exception_message"],
        "node panicked: kaboom from a test node\n"
    );
    assert_eq!(
        data["current_inputs"],
        json!({"boom": [true], "text": ["hi"]})
    );
    assert_eq!(data["prompt_id"], "p1");
    assert_eq!(out.messages.last().unwrap().0, "execution_error");

    let mut o = Overrides::new();
    parse_set_arg("2.boom=false", &mut o).unwrap();
    let v = h.prepare(wf, &o).unwrap();
    let out = ex.run("p2", &v, None, &Interrupt::new(), &NoEvents);
    assert!(out.is_success());
    assert_eq!(preview_text(&out, "4"), "hi!");
    assert_eq!(
        h.counts.get("1"),
        1,
        "work finished before the failure stays cached"
    );

    let v = h
        .prepare(
            json!({"1": {"class_type": "TestFail", "inputs": {"why": "x"}},
                        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    let out = ex.run("p3", &v, None, &Interrupt::new(), &NoEvents);
    let RunStatus::Error(data) = &out.status else {
        panic!()
    };
    assert_eq!(data["exception_message"], "failed on purpose: x\n");
    assert_eq!(data["exception_type"], "RuntimeError");
}

#[test]
fn interrupt_stops_a_long_running_node() {
    let h = harness();
    let ex = Arc::new(h.executor(CachePolicy::Classic));
    let v = Arc::new(
        h.prepare(
            json!({"1": {"class_type": "TestSlow", "inputs": {"steps": 100000}},
                         "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
            &Overrides::new(),
        )
        .unwrap(),
    );
    let interrupt = Interrupt::new();
    let progressed = Arc::new(AtomicUsize::new(0));
    let p = progressed.clone();
    let sink = move |e: Event| {
        if let Event::Progress { .. } = e {
            p.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (ex2, v2, i2) = (ex.clone(), v.clone(), interrupt.clone());
    let started = Instant::now();
    let handle = std::thread::spawn(move || ex2.run("slow", &v2, None, &i2, &sink));
    while progressed.load(Ordering::SeqCst) < 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    interrupt.trigger();
    let out = handle.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let RunStatus::Interrupted(data) = &out.status else {
        panic!("{:?}", out.status)
    };
    assert_eq!(data["node_id"], "1");
    assert_eq!(data["node_type"], "TestSlow");
    assert_eq!(out.messages.last().unwrap().0, "execution_interrupted");
}

#[test]
fn cache_policy_none_reruns_everything_and_lru_keeps_across_prompts() {
    let h = harness();
    let v = h.prepare(two_branches(), &Overrides::new()).unwrap();
    let none = h.executor(CachePolicy::None);
    none.run("a", &v, None, &Interrupt::new(), &NoEvents);
    none.run("b", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(h.counts.total(), 10);

    // Classic forgets a workflow once another ran; LRU keeps both.
    let other = h
        .prepare(
            json!({"1": {"class_type": "TestAdd", "inputs": {"a": 9, "b": 9}},
                        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    for (policy, expect_rerun) in [
        (CachePolicy::Classic, 5),
        (
            CachePolicy::Lru {
                max_entries: 100,
                max_bytes: 1 << 20,
            },
            0,
        ),
    ] {
        let ex = h.executor(policy);
        ex.run("1", &v, None, &Interrupt::new(), &NoEvents);
        ex.run("2", &other, None, &Interrupt::new(), &NoEvents);
        let before = h.counts.total();
        ex.run("3", &v, None, &Interrupt::new(), &NoEvents);
        assert_eq!(h.counts.total() - before, expect_rerun, "{policy:?}");
    }
}

#[test]
fn identical_nodes_share_one_cache_entry_regardless_of_ids() {
    let h = harness();
    let v = h
        .prepare(
            json!({"a": {"class_type": "TestAdd", "inputs": {"a": 2, "b": 2}},
                        "b": {"class_type": "TestAdd", "inputs": {"a": 2, "b": 2}},
                        "p": {"class_type": "PreviewAny", "inputs": {"source": ["a", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    let ex = h.executor(CachePolicy::Classic);
    ex.run("1", &v, None, &Interrupt::new(), &NoEvents);
    let v2 = h
        .prepare(
            json!({"x": {"class_type": "TestAdd", "inputs": {"a": 2, "b": 2}},
                        "q": {"class_type": "PreviewAny", "inputs": {"source": ["x", 0]}}}),
            &Overrides::new(),
        )
        .unwrap();
    let out = ex.run("2", &v2, None, &Interrupt::new(), &NoEvents);
    assert_eq!(out.cached, ["x", "q"]);
    assert_eq!(out.executed, Vec::<String>::new());
}

#[test]
fn deep_chains_and_parallel_workers() {
    let h = harness();
    let depth = 20_000;
    let mut wf = serde_json::Map::new();
    wf.insert(
        "0".into(),
        json!({"class_type": "PrimitiveString", "inputs": {"value": "x"}}),
    );
    for i in 1..=depth {
        wf.insert(
            i.to_string(),
            json!({"class_type": "StringConcatenate",
            "inputs": {"string_a": [(i - 1).to_string(), 0], "string_b": "", "delimiter": ""}}),
        );
    }
    wf.insert(
        "out".into(),
        json!({"class_type": "PreviewAny", "inputs": {"source": [depth.to_string(), 0]}}),
    );
    let v = h.prepare(Json::Object(wf), &Overrides::new()).unwrap();
    let out = h
        .executor(CachePolicy::None)
        .run("deep", &v, None, &Interrupt::new(), &NoEvents);
    assert_eq!(preview_text(&out, "out"), "x");
    assert_eq!(out.executed.len(), depth + 2);

    // Wide fan-out on 4 workers gives the same outputs as one.
    let mut wf = serde_json::Map::new();
    for b in 0..200 {
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
    let v = h.prepare(Json::Object(wf), &Overrides::new()).unwrap();
    let ex = Executor::new(
        h.registry.clone(),
        h.env.clone(),
        ExecutorConfig {
            cache: CachePolicy::None,
            workers: 4,
        },
    );
    let out = ex.run("wide", &v, None, &Interrupt::new(), &NoEvents);
    assert!(out.is_success());
    assert_eq!(out.outputs.len(), 200);
    assert_eq!(out.outputs["p7"]["text"][0], "V7");
}

#[test]
fn object_info_matches_comfyui_shapes() {
    let h = harness();
    let info = h.registry.object_info(&h.env);
    assert_eq!(
        info["PreviewAny"],
        json!({"input": {"required": {"source": ["*", {}]}},
               "input_order": {"required": ["source"]},
               "output": [], "output_is_list": [], "output_name": [],
               "name": "PreviewAny", "display_name": "Preview Any", "description": "",
               "python_module": "comfy_extras.nodes_preview_any", "category": "utils",
               "output_node": true})
    );
    assert_eq!(
        info["PrimitiveInt"],
        json!({"input": {"required": {"value": ["INT", {"min": -9223372036854775807i64,
                                                         "max": 9223372036854775807i64,
                                                         "control_after_generate": true}]}},
               "input_order": {"required": ["value"]},
               "output": ["INT"], "output_is_list": [false], "output_name": ["INT"],
               "name": "PrimitiveInt", "display_name": "Int", "description": "",
               "python_module": "comfy_extras.nodes_primitive", "category": "utils/primitive",
               "output_node": false, "output_tooltips": [null], "deprecated": false,
               "experimental": false, "api_node": false})
    );
    assert_eq!(info["StringLength"]["output_name"], json!(["length"]));
    assert_eq!(
        info["RegexReplace"]["input_order"]["optional"],
        json!(["case_insensitive", "multiline", "dotall", "count"])
    );
}
