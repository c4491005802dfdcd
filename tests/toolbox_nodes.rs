//! The utility image and latent nodes of `nodes/image_edit.rs` and `nodes/latent_ops.rs`
//! against ComfyUI's own node functions.
//!
//! `tests/data/toolbox_nodes_ref.json` is written by `scripts/goldens/gen_toolbox_nodes_ref.py`
//! (ComfyUI a125cd84's nodes on fixed inputs, the format of `image_nodes_ref.json`);
//! `tests/data/object_info_toolbox_nodes.json` is ComfyUI's `/object_info` for the same classes
//! (`scripts/goldens/gen_object_info.py`). Each case runs as a real workflow: test-only source
//! nodes feed the reference inputs, capture nodes return each output. Everything is compared
//! bit for bit (LatentInterpolate's float32 `vector_norm` over 4 channels included).

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::node::types::{Image, Latent, Mask};
use comfyrs::node::{
    InputSpec, Inputs, Node, NodeContext, NodeError, NodeOutput, NodeSchema, Registry, Value,
};
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Map, Value as Json};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn reference() -> &'static Json {
    static REF: OnceLock<Json> = OnceLock::new();
    REF.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/toolbox_nodes_ref.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    })
}

fn from_hex(s: &str) -> Vec<f32> {
    (0..s.len() / 8)
        .map(|i| f32::from_bits(u32::from_str_radix(&s[i * 8..i * 8 + 8], 16).unwrap()))
        .collect()
}

fn to_hex(v: &[f32]) -> String {
    v.iter().map(|x| format!("{:08x}", x.to_bits())).collect()
}

fn shape(j: &Json) -> Vec<usize> {
    j["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn tensor(j: &Json) -> Tensor {
    Tensor::from_vec(from_hex(j["hex"].as_str().unwrap()), shape(j), &Device::Cpu).unwrap()
}

fn tensor_json(t: &Tensor) -> Json {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    json!({"shape": t.dims(), "hex": to_hex(&v)})
}

fn input(key: &str) -> &'static Json {
    &reference()["inputs"][key]
}

struct Source(&'static str);
impl Node for Source {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new(&format!("TbSource{}", self.0))
            .input(InputSpec::string("key"))
            .output(comfyrs::node::OutputSpec::new(self.0))
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let j = input(i.string("key")?);
        let v = match self.0 {
            "IMAGE" => Value::object(Image(tensor(j))),
            "MASK" => Value::object(Mask(tensor(j))),
            _ => Value::object(Latent {
                samples: tensor(&j["samples"]),
                noise_mask: j.get("noise_mask").map(tensor),
                batch_index: j.get("batch_index").map(|b| {
                    b.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect()
                }),
            }),
        };
        Ok(NodeOutput::one(v))
    }
}

struct Capture(&'static str);
impl Node for Capture {
    fn schema(&self) -> NodeSchema {
        let spec = if self.0 == "INT" {
            InputSpec::int("value")
        } else {
            InputSpec::of("value", self.0)
        };
        NodeSchema::new(&format!("TbCapture{}", self.0))
            .input(spec)
            .output_node()
    }
    fn execute(&self, _: &mut NodeContext, i: &Inputs) -> Result<NodeOutput, NodeError> {
        let mut ui = Map::new();
        let out = match self.0 {
            "INT" => json!({"value": i.int("value")? as i64}),
            "IMAGE" => tensor_json(&i.object::<Image>("value")?.0),
            "MASK" => tensor_json(&i.object::<Mask>("value")?.0),
            _ => {
                let l = i.object::<Latent>("value")?;
                let mut o = json!({"samples": tensor_json(&l.samples)});
                if let Some(m) = &l.noise_mask {
                    o["noise_mask"] = tensor_json(m);
                }
                if let Some(b) = &l.batch_index {
                    o["batch_index"] = json!(b);
                }
                o
            }
        };
        ui.insert("out".into(), json!([out]));
        Ok(NodeOutput::ui(ui))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    env: Arc<Environment>,
    reg: Arc<Registry>,
    exec: Executor,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        for d in [&paths.input, &paths.output, &paths.temp] {
            std::fs::create_dir_all(d).unwrap();
        }
        let env = Arc::new(Environment::new(paths));
        let mut r = Registry::with_builtin_nodes();
        for kind in ["IMAGE", "MASK", "LATENT"] {
            r.register(Source(kind)).unwrap();
        }
        for kind in ["IMAGE", "MASK", "LATENT", "INT"] {
            r.register(Capture(kind)).unwrap();
        }
        let reg = Arc::new(r);
        let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
        Harness {
            _dir: dir,
            env,
            reg,
            exec,
        }
    }

    /// Runs `node` on `args` ("@key" = a reference input); the captured outputs, or the
    /// `execution_error` payload.
    fn run(&self, node: &str, args: &Map<String, Json>, kinds: &[&str]) -> Result<Vec<Json>, Json> {
        let mut wf = Map::new();
        let mut inputs = Map::new();
        for (k, (name, v)) in args.iter().enumerate() {
            match v.as_str().and_then(|s| s.strip_prefix('@')) {
                Some(key) => {
                    let id = format!("s{k}");
                    let kind = input(key)["kind"].as_str().unwrap();
                    wf.insert(
                        id.clone(),
                        json!({"class_type": format!("TbSource{kind}"), "inputs": {"key": key}}),
                    );
                    inputs.insert(name.clone(), json!([id, 0]));
                }
                None => {
                    inputs.insert(name.clone(), v.clone());
                }
            }
        }
        wf.insert("n".into(), json!({"class_type": node, "inputs": inputs}));
        for (o, kind) in kinds.iter().enumerate() {
            wf.insert(
                format!("c{o}"),
                json!({"class_type": format!("TbCapture{kind}"), "inputs": {"value": ["n", o]}}),
            );
        }
        let wf = parse_workflow(&Json::Object(wf).to_string()).unwrap();
        let valid = prepare(wf, &Overrides::default(), &self.reg, &self.env, None)
            .unwrap_or_else(|e| panic!("invalid workflow: {e}"));
        let out = self
            .exec
            .run("test", &valid, None, &Interrupt::new(), &NoEvents);
        match out.status {
            RunStatus::Success => Ok((0..kinds.len())
                .map(|o| out.outputs[&format!("c{o}")]["out"][0].clone())
                .collect()),
            RunStatus::Error(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }
}

fn compare_tensor(what: &str, got: &Json, want: &Json, rel: f32) {
    assert_eq!(shape(got), shape(want), "{what}: shape");
    let (g, w) = (
        from_hex(got["hex"].as_str().unwrap()),
        from_hex(want["hex"].as_str().unwrap()),
    );
    for (k, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if rel == 0.0 {
            a.to_bits() == b.to_bits()
        } else {
            a == b || (a - b).abs() <= rel * b.abs().max(1e-6)
        };
        assert!(ok, "{what}: element {k}: got {a:e}, ComfyUI {b:e}");
    }
}

#[test]
fn nodes_match_comfyui() {
    let h = Harness::new();
    let mut ran = 0;
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let node = case["node"].as_str().unwrap();
        let outs = case["outputs"].as_array().unwrap();
        let kinds: Vec<&str> = outs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        let got = h
            .run(node, case["args"].as_object().unwrap(), &kinds)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (k, (g, w)) in got.iter().zip(outs).enumerate() {
            let what = format!("{name} output {k}");
            match kinds[k] {
                "INT" => assert_eq!(g["value"], w["value"], "{what}"),
                "LATENT" => {
                    compare_tensor(&what, &g["samples"], &w["samples"], 0.0);
                    assert_eq!(
                        g.get("noise_mask").is_some(),
                        w.get("noise_mask").is_some(),
                        "{what}: noise_mask"
                    );
                    if let Some(m) = w.get("noise_mask") {
                        compare_tensor(&what, &g["noise_mask"], m, 0.0);
                    }
                    assert_eq!(
                        g.get("batch_index"),
                        w.get("batch_index"),
                        "{what}: batch_index"
                    );
                }
                _ => compare_tensor(&what, g, w, 0.0),
            }
        }
        ran += 1;
    }
    assert_eq!(ran, 81);
}

#[test]
fn object_info_matches_comfyui() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/object_info_toolbox_nodes.json"
    );
    let want: Json = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let h = Harness::new();
    let classes = want.as_object().unwrap();
    assert_eq!(classes.len(), 17);
    for (class, info) in classes {
        let ours = h
            .reg
            .schema(class)
            .unwrap_or_else(|| panic!("{class} is not registered"))
            .object_info(&h.env);
        assert_eq!(&ours, info, "{class}");
    }
}

#[test]
fn bad_inputs_are_clear_node_errors() {
    let h = Harness::new();
    // LatentInterpolate on a batch of 2 with 4 channels fails in ComfyUI too (broadcasting).
    let mut args = Map::new();
    args.insert("samples1".into(), json!("@lat_c"));
    args.insert("samples2".into(), json!("@lat_c"));
    args.insert("ratio".into(), json!(0.5));
    let e = h.run("LatentInterpolate", &args, &["LATENT"]).unwrap_err();
    assert_eq!(e["node_type"], "LatentInterpolate");
    let msg = e["exception_message"].as_str().unwrap();
    assert!(
        msg.starts_with("input 'samples1': ") && msg.contains("batch of 2"),
        "{msg}"
    );
    // A size of 0 has nothing to resize to.
    let mut args = Map::new();
    args.insert("image".into(), json!("@img_a"));
    args.insert("upscale_method".into(), json!("bilinear"));
    args.insert("largest_size".into(), json!(0));
    let e = h
        .run("ImageScaleToMaxDimension", &args, &["IMAGE"])
        .unwrap_err();
    let msg = e["exception_message"].as_str().unwrap();
    assert!(msg.starts_with("input 'largest_size': "), "{msg}");
}
