//! The adapter that makes a host's class a [`Node`]: comfyrs validates, schedules and caches it
//! like any other; `execute` encodes the inputs (primitives inline, IMAGE/MASK/LATENT as
//! files, opaque values as handles), makes one call, and decodes the outputs against the
//! declared output types.

use super::host::{short, Host, HostFailure, Reply};
use super::tensors::{self, TensorKind};
use crate::env::Environment;
use crate::node::types::{Image, Latent, Mask};
use crate::node::{
    Fingerprint, Hidden, Inputs, LiteralInputs, Node, NodeContext, NodeError, NodeOutput,
    NodeSchema, Payload, Value,
};
use serde_json::{json, Map, Value as Json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// An opaque value a host keeps (a pack-private object): comfyrs holds only its id. Passing it
/// back to the same host (same process start) gives the host its object; dropping it (cache
/// eviction) tells the host to release it.
pub struct RemoteHandle {
    host: Weak<Host>,
    host_name: String,
    generation: u64,
    pub id: Json,
    pub type_name: String,
}

impl std::fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} handle {} of node host '{}'",
            self.type_name, self.id, self.host_name
        )
    }
}

impl Payload for RemoteHandle {}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        if let Some(host) = self.host.upgrade() {
            host.queue_release(self.generation, self.id.clone());
        }
    }
}

/// One class of one host.
pub struct RemoteNode {
    pub host: Arc<Host>,
    pub schema: NodeSchema,
    /// The class has ComfyUI's IS_CHANGED: ask the host before reusing cached outputs.
    pub fingerprint: bool,
    /// The class has ComfyUI's `check_lazy_status`: ask the host which lazy inputs it needs.
    pub lazy_status: bool,
    /// The class has ComfyUI's VALIDATE_INPUTS (V3: `validate_inputs`): these declared
    /// inputs are checked by it instead of by min/max/choices (its parameters, or every
    /// input when it takes `**kwargs`). `None`: no such function.
    pub validated: Option<&'static [&'static str]>,
}

/// How long validation waits for a host that is running a node before it gives up on
/// VALIDATE_INPUTS (the node's own run then meets the values).
pub const VALIDATE_WAIT: Duration = Duration::from_secs(5);

impl RemoteNode {
    fn fail(&self, ctx: &NodeContext, what: impl std::fmt::Display) -> NodeError {
        NodeError::Failed {
            message: format!(
                "node {} ({}) on node host '{}': {what}",
                ctx.node_id,
                self.schema.name,
                self.host.name()
            ),
            exception_type: "NodeHostError".into(),
        }
    }
}

/// Input files written for one call, removed when the call ends.
struct CallFiles(Vec<PathBuf>);
impl Drop for CallFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl RemoteNode {
    /// Sends one `kind` request (execute, check_lazy_status) with the node's inputs and
    /// hidden values and returns the host's answer; host failures and `error` answers become
    /// node errors.
    fn request(
        &self,
        ctx: &mut NodeContext,
        kind: &str,
        inputs: &Inputs,
    ) -> Result<Json, NodeError> {
        let call = self.host.next_id();
        let mut files = CallFiles(Vec::new());
        let mut encoded = Map::new();
        for (name, value) in inputs.iter() {
            let v = encode(&self.host, value, call, name, &mut files.0)
                .map_err(|e| NodeError::input(name, e))?;
            encoded.insert(name.clone(), v);
        }
        // A linked lazy input that has not run reaches the host as null, as ComfyUI passes
        // it (None); an unconnected one stays absent.
        for spec in self.schema.inputs.iter().filter(|s| s.is_lazy()) {
            let linked = &ctx.prompt.json()[ctx.node_id]["inputs"][&spec.name];
            if linked.is_array() && !encoded.contains_key(&spec.name) {
                encoded.insert(spec.name.clone(), Json::Null);
            }
        }
        let mut hidden = Map::new();
        for h in &self.schema.hidden {
            let v = match h {
                Hidden::UniqueId => json!(ctx.node_id),
                Hidden::Prompt | Hidden::DynPrompt => ctx.prompt.json().clone(),
                Hidden::ExtraPngInfo => ctx.extra_pnginfo.cloned().unwrap_or(Json::Null),
            };
            hidden.insert(h.key().into(), v);
        }
        let request = json!({
            "type": kind,
            "class": self.schema.name,
            "node_id": ctx.node_id,
            "prompt_id": ctx.prompt_id,
            "inputs": encoded,
            "hidden": hidden,
        });
        let reply = {
            let ctx_ref = &*ctx;
            let mut on_message = |m: &Json| {
                if m["type"] == "send_sync" {
                    if let Some(event) = m["event"].as_str() {
                        let broadcast = m["broadcast"].as_bool().unwrap_or(true);
                        ctx_ref.send_message(event, m["data"].clone(), broadcast);
                    }
                    return;
                }
                let value = m["value"].as_f64().unwrap_or(0.0).max(0.0) as u64;
                let max = m["max"].as_f64().unwrap_or(0.0).max(0.0) as u64;
                // Interrupts are handled by the call loop; this only reports.
                let _ = ctx_ref.progress(value, max);
            };
            let interrupted = || ctx_ref.check_interrupt().is_err();
            self.host.call(request, &mut on_message, &interrupted)
        };
        drop(files);
        let msg = match reply {
            Reply::Interrupted => return Err(NodeError::Interrupted),
            Reply::Failure(HostFailure::Timeout(d)) => {
                return Err(NodeError::Failed {
                    message: format!(
                        "node {} ({}) on node host '{}': no answer within {}s; the host was \
                         stopped and starts again on its next call",
                        ctx.node_id,
                        self.schema.name,
                        self.host.name(),
                        d.as_secs_f64()
                    ),
                    exception_type: "TimeoutError".into(),
                })
            }
            Reply::Failure(HostFailure::Crashed(how)) => {
                return Err(self.fail(
                    ctx,
                    format!(
                        "the host crashed while running it: {how}; it starts again on its \
                         next call"
                    ),
                ))
            }
            Reply::Failure(HostFailure::Start(why)) => {
                return Err(self.fail(ctx, format!("the host could not start: {why}")))
            }
            Reply::Done(msg) => msg,
        };
        match msg["type"].as_str() {
            Some("error") => {
                let message = msg["message"]
                    .as_str()
                    .unwrap_or("(no message)")
                    .to_string();
                let exception_type = msg["exception_type"]
                    .as_str()
                    .unwrap_or("RuntimeError")
                    .to_string();
                if let Some(tb) = msg["traceback"].as_str() {
                    tracing::info!(
                        "node {} ({}) on node host '{}' failed:\n{tb}",
                        ctx.node_id,
                        self.schema.name,
                        self.host.name()
                    );
                }
                Err(NodeError::Failed {
                    message,
                    exception_type,
                })
            }
            _ => Ok(msg),
        }
    }
}

impl Node for RemoteNode {
    fn schema(&self) -> NodeSchema {
        self.schema.clone()
    }

    fn custom_validated_inputs(&self) -> &'static [&'static str] {
        self.validated.unwrap_or(&[])
    }

    /// ComfyUI's VALIDATE_INPUTS, asked of the host with the literal inputs (`validate_inputs`
    /// request). A host busy running a node for longer than [`VALIDATE_WAIT`] is not waited
    /// for: the check is skipped, with a warning.
    fn validate_inputs(&self, _env: &Environment, inputs: &Inputs) -> Result<(), String> {
        if self.validated.is_none() {
            return Ok(());
        }
        let literals: Map<String, Json> = inputs
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.to_json()?)))
            .collect();
        let request =
            json!({"type": "validate_inputs", "class": self.schema.name, "inputs": literals});
        let Some(reply) = self.host.call_when_free(request, VALIDATE_WAIT) else {
            tracing::warn!(
                "node host '{}' is busy: VALIDATE_INPUTS of {} not run for this prompt",
                self.host.name(),
                self.schema.name
            );
            return Ok(());
        };
        match reply {
            Reply::Done(m) if m["type"] == "validation" => {
                if m["ok"].as_bool() == Some(true) {
                    Ok(())
                } else {
                    Err(m["reason"].as_str().unwrap_or("").to_string())
                }
            }
            Reply::Done(m) => Err(format!(
                "{}: {}",
                m["exception_type"].as_str().unwrap_or("Exception"),
                m["message"].as_str().unwrap_or("(no message)")
            )),
            Reply::Failure(f) => Err(format!("node host '{}': {f}", self.host.name())),
            Reply::Interrupted => Err("interrupted".into()),
        }
    }

    /// ComfyUI's IS_CHANGED, asked of the host with the literal inputs (linked ones are
    /// absent, as ComfyUI passes them as None). A failure means "changed", as in ComfyUI.
    fn fingerprint(&self, _env: &Environment, inputs: &LiteralInputs) -> Fingerprint {
        if !self.fingerprint {
            return Fingerprint::Stable;
        }
        let literals: Map<String, Json> = inputs
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.to_json()?)))
            .collect();
        let request = json!({"type": "fingerprint", "class": self.schema.name, "inputs": literals});
        match self.host.call(request, &mut |_| {}, &|| false) {
            Reply::Done(m) if m["type"] == "fingerprint" => {
                if m["always"].as_bool() == Some(true) {
                    Fingerprint::Always
                } else {
                    Fingerprint::Token(m["value"].to_string())
                }
            }
            Reply::Done(m) => {
                tracing::warn!(
                    "node host '{}': IS_CHANGED of {} failed: {}",
                    self.host.name(),
                    self.schema.name,
                    m["message"].as_str().unwrap_or("(no message)")
                );
                Fingerprint::Always
            }
            Reply::Failure(f) => {
                tracing::warn!(
                    "node host '{}': IS_CHANGED of {}: {f}",
                    self.host.name(),
                    self.schema.name
                );
                Fingerprint::Always
            }
            Reply::Interrupted => Fingerprint::Always,
        }
    }

    /// Asks the host which lazy inputs the node needs (`check_lazy_status` request), with the
    /// inputs available so far.
    fn check_lazy_status(
        &self,
        ctx: &mut NodeContext,
        inputs: &Inputs,
    ) -> Result<Vec<String>, NodeError> {
        if !self.lazy_status {
            return Ok(Vec::new());
        }
        let msg = self.request(ctx, "check_lazy_status", inputs)?;
        match (msg["type"].as_str(), msg["needed"].as_array()) {
            (Some("lazy_status"), Some(names)) => Ok(names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()),
            _ => Err(self.fail(
                ctx,
                format!(
                    "answered check_lazy_status with {}; expected lazy_status with a \
                     'needed' list, or error",
                    short(&msg)
                ),
            )),
        }
    }

    fn execute(&self, ctx: &mut NodeContext, inputs: &Inputs) -> Result<NodeOutput, NodeError> {
        let msg = self.request(ctx, "execute", inputs)?;
        if msg["type"].as_str() != Some("result") {
            return Err(self.fail(
                ctx,
                format!(
                    "answered execute with {}; expected result, error or interrupted",
                    short(&msg)
                ),
            ));
        }
        let outputs = msg["outputs"].as_array().cloned().unwrap_or_default();
        if outputs.len() != self.schema.outputs.len() {
            return Err(self.fail(
                ctx,
                format!(
                    "returned {} output(s); the class declares {}",
                    outputs.len(),
                    self.schema.outputs.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(outputs.len());
        for (i, (v, spec)) in outputs.into_iter().zip(&self.schema.outputs).enumerate() {
            let value = if spec.is_list {
                let items = match v {
                    Json::Object(ref o) if o.contains_key("$list") => {
                        o["$list"].as_array().cloned().unwrap_or_default()
                    }
                    Json::Array(a) => a,
                    other => vec![other],
                };
                items
                    .into_iter()
                    .map(|item| decode(&self.host, item, &spec.ty))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List)
            } else {
                decode(&self.host, v, &spec.ty)
            };
            values.push(value.map_err(|e| {
                self.fail(ctx, format!("output {i} ({} {}): {e}", spec.ty, spec.name))
            })?);
        }
        let ui = match msg.get("ui") {
            Some(Json::Object(m)) => Some(m.clone()),
            _ => None,
        };
        Ok(NodeOutput { values, ui })
    }
}

/// One input value as the host receives it.
fn encode(
    host: &Arc<Host>,
    value: &Value,
    call: u64,
    name: &str,
    files: &mut Vec<PathBuf>,
) -> Result<Json, String> {
    Ok(match value {
        Value::Int(_) | Value::Float(_) | Value::String(_) | Value::Bool(_) | Value::Json(_) => {
            value.to_json().expect("primitive")
        }
        Value::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(encode(host, item, call, &format!("{name}.{i}"), files)?);
            }
            json!({ "$list": out })
        }
        Value::Object(_) => {
            let safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let path = host
                .exchange_dir()
                .join(format!("in-{call}-{safe}.safetensors"));
            let kind = if let Some(img) = value.downcast::<Image>() {
                files.push(path.clone());
                tensors::write_image(&path, &img)?;
                TensorKind::Image
            } else if let Some(mask) = value.downcast::<Mask>() {
                files.push(path.clone());
                tensors::write_mask(&path, &mask)?;
                TensorKind::Mask
            } else if let Some(lat) = value.downcast::<Latent>() {
                files.push(path.clone());
                tensors::write_latent(&path, &lat)?;
                TensorKind::Latent
            } else if let Some(h) = value.downcast::<RemoteHandle>() {
                let same_host = h.host.upgrade().is_some_and(|o| Arc::ptr_eq(&o, host));
                if !same_host {
                    return Err(format!(
                        "{h:?} cannot be passed to node host '{}': opaque values stay in the \
                         host that made them",
                        host.name()
                    ));
                }
                if h.generation != host.generation() {
                    return Err(format!(
                        "{h:?} belongs to an earlier run of the host (it was restarted since); \
                         run the node that made it again"
                    ));
                }
                return Ok(json!({"$ref": "handle", "id": h.id, "type": h.type_name}));
            } else {
                let Value::Object(p) = value else {
                    unreachable!()
                };
                return Err(format!(
                    "{} cannot cross to the out-of-process node host '{}' (only primitives, \
                     IMAGE, MASK, LATENT and the host's own handles can)",
                    p.describe(),
                    host.name()
                ));
            };
            json!({"$ref": kind.tag(), "path": path.display().to_string()})
        }
    })
}

/// A file the host names must be inside its exchange folder (a host cannot make comfyrs
/// read, or delete, anything else).
fn exchange_file(host: &Host, path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let canon = p
        .canonicalize()
        .map_err(|e| format!("cannot open the tensor file {path}: {e}"))?;
    let dir = host
        .exchange_dir()
        .canonicalize()
        .map_err(|e| e.to_string())?;
    if !canon.starts_with(&dir) || canon == dir {
        return Err(format!(
            "the tensor file {path} is outside the host's exchange folder {}",
            dir.display()
        ));
    }
    Ok(canon)
}

/// One output value, checked against its declared type.
fn decode(host: &Arc<Host>, v: Json, ty: &str) -> Result<Value, String> {
    if let Some(r) = v.get("$ref").and_then(Json::as_str) {
        if r == "handle" {
            return Ok(Value::object(RemoteHandle {
                host: Arc::downgrade(host),
                host_name: host.name().to_string(),
                generation: host.generation(),
                id: v["id"].clone(),
                type_name: v["type"].as_str().unwrap_or(ty).to_string(),
            }));
        }
        let kind = TensorKind::from_tag(r).ok_or_else(|| format!("unknown $ref kind '{r}'"))?;
        if let Some(want) = TensorKind::from_type(ty) {
            if want != kind {
                return Err(format!("got a {} reference", kind.tag()));
            }
        }
        let path = v["path"]
            .as_str()
            .ok_or("a tensor reference needs a path")?;
        let path = exchange_file(host, path)?;
        let value = match kind {
            TensorKind::Image => tensors::read_image(&path).map(Value::object),
            TensorKind::Mask => tensors::read_mask(&path).map(Value::object),
            TensorKind::Latent => tensors::read_latent(&path).map(Value::object),
        };
        let _ = std::fs::remove_file(&path);
        return value;
    }
    if let Some(kind) = TensorKind::from_type(ty) {
        return Err(format!(
            "expected a {{\"$ref\": \"{}\", \"path\": ...}} reference, got {}",
            kind.tag(),
            short(&v)
        ));
    }
    let wrong = |v: &Json| Err(format!("expected {ty}, got {}", short(v)));
    match ty {
        "INT" => match &v {
            Json::Number(n) if n.is_i64() || n.is_u64() => {
                Ok(Value::Int(n.as_i64().map(i128::from).unwrap_or_else(
                    || n.as_u64().map(i128::from).expect("checked"),
                )))
            }
            // JavaScript has one number type: accept integral floats.
            Json::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15) =>
            {
                Ok(Value::Int(n.as_f64().expect("checked") as i128))
            }
            _ => wrong(&v),
        },
        "FLOAT" => v.as_f64().map(Value::Float).map_or_else(|| wrong(&v), Ok),
        "BOOLEAN" => v.as_bool().map(Value::Bool).map_or_else(|| wrong(&v), Ok),
        "STRING" | "COMBO" => match v {
            Json::String(s) => Ok(Value::String(s)),
            other => wrong(&other),
        },
        // Any other type (`*`, pack types carried as JSON): primitives keep their kind.
        _ => Ok(match v {
            Json::String(s) => Value::String(s),
            Json::Bool(b) => Value::Bool(b),
            Json::Number(n) if n.is_i64() => Value::Int(n.as_i64().expect("checked") as i128),
            Json::Number(n) if n.is_u64() => Value::Int(n.as_u64().expect("checked") as i128),
            Json::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            other => Value::Json(other),
        }),
    }
}
