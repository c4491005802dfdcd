//! Out-of-process node packs (docs/node-protocol.md): comfyrs starts each configured host
//! program, asks it for its nodes (ComfyUI `/object_info` entries), and registers each as a
//! [`RemoteNode`] that the executor validates, schedules and caches like a built-in. Hosts can
//! be written in any language; `sdk/python/comfyrs_node.py` is the reference SDK and
//! `sdk/python/comfyui_host.py` runs a ComfyUI `custom_nodes` folder as a host.
//!
//! - [`wire`]: framing (length-prefixed JSON).
//! - [`object_info`]: a declaration in ComfyUI's format read into a [`NodeSchema`].
//! - [`tensors`]: IMAGE/MASK/LATENT as safetensors files in the exchange folder.
//! - [`sandbox`]: the command line, clean environment and optional bubblewrap.
//! - [`host`]: one supervised process (start, calls, timeouts, crash recovery).
//! - [`node`]: the [`Node`](crate::node::Node) adapter and opaque handles.
//! - [`comfyui`]: the host configuration for a ComfyUI `custom_nodes` folder, and its packs'
//!   web assets.

pub mod args;
pub mod comfyui;
pub mod host;
pub mod node;
pub mod object_info;
pub mod sandbox;
pub mod tensors;
pub mod wire;

pub use host::{Host, HostConfig, HostFailure, Transport};
pub use node::{RemoteHandle, RemoteNode};
pub use sandbox::SandboxMode;

use crate::env::Environment;
use crate::node::{NodeSchema, Registry};
use serde_json::{json, Value as Json};
use std::sync::Arc;

/// What to do when a host declares a class name that is already registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClash {
    /// Refuse to start, naming both owners (explicitly configured hosts).
    Error,
    /// Keep the existing class and list the host's as unavailable (ComfyUI's rule for
    /// custom_nodes folders: a pack cannot override a core node).
    Skip,
}

/// What one host declared, for logs and `GET /comfyrs/node_hosts`.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub name: String,
    /// The host's `hello` (name, version, language).
    pub hello: Json,
    pub nodes: Vec<String>,
    /// Classes the host has but cannot run through the protocol, with the reason.
    pub unavailable: Vec<(String, String)>,
    /// Web folders of the host's packs (`{name: path}`, ComfyUI's `EXTENSION_WEB_DIRS`).
    pub web_dirs: Json,
}

/// The started hosts. Dropping the last reference (and every [`RemoteNode`]) stops them.
#[derive(Default, Clone)]
pub struct NodeHosts {
    pub hosts: Vec<Arc<Host>>,
    pub reports: Vec<HostReport>,
}

impl NodeHosts {
    /// Starts every host, reads its declarations and registers its classes. A host that cannot
    /// start, or declares something unreadable, is an error naming it.
    pub fn start(
        registry: &mut Registry,
        env: &Environment,
        configs: Vec<HostConfig>,
        on_clash: OnClash,
    ) -> Result<NodeHosts, String> {
        let mut out = NodeHosts::default();
        for config in configs {
            let name = config.name.clone();
            let host = Arc::new(
                Host::new(config, env)
                    .map_err(|e| format!("node host '{name}': cannot make its folder: {e}"))?,
            );
            let (hello, reply) = host
                .start_and_list()
                .map_err(|f| format!("node host '{name}' did not start: {f}"))?;
            let report = register_nodes(registry, &host, hello, &reply, on_clash)?;
            eprintln!(
                "node host '{name}': {} node(s){}",
                report.nodes.len(),
                if report.unavailable.is_empty() {
                    String::new()
                } else {
                    format!(", {} not runnable", report.unavailable.len())
                }
            );
            for (class, why) in &report.unavailable {
                tracing::info!("node host '{name}': '{class}' is not runnable: {why}");
            }
            if !report.unavailable.is_empty() {
                eprintln!("  (the reasons: GET /comfyrs/node_hosts, or RUST_LOG=info)");
            }
            out.hosts.push(host);
            out.reports.push(report);
        }
        Ok(out)
    }

    /// The hosts, their nodes and the classes they cannot run, as JSON.
    pub fn to_json(&self) -> Json {
        Json::Array(
            self.reports
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "host": r.hello["host"],
                        "nodes": r.nodes,
                        "not_runnable": r.unavailable.iter()
                            .map(|(c, why)| json!({"class": c, "reason": why}))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}

/// Registers the classes of one host's `nodes` reply.
fn register_nodes(
    registry: &mut Registry,
    host: &Arc<Host>,
    hello: Json,
    reply: &Json,
    on_clash: OnClash,
) -> Result<HostReport, String> {
    let name = host.name().to_string();
    let module = format!("custom_nodes.{name}");
    let mut report = HostReport {
        name: name.clone(),
        hello,
        nodes: Vec::new(),
        unavailable: Vec::new(),
        web_dirs: reply.get("web_dirs").cloned().unwrap_or(json!({})),
    };
    if let Some(un) = reply["unavailable"].as_object() {
        for (class, why) in un {
            let why = why.as_str().map(str::to_string).unwrap_or(why.to_string());
            report.unavailable.push((class.clone(), why));
        }
    }
    let nodes = reply["nodes"]
        .as_object()
        .expect("checked by start_and_list");
    for (class, info) in nodes {
        // One unreadable declaration must not keep the host's other nodes away.
        let mut schema: NodeSchema =
            match object_info::schema_from_object_info(class, info, &module) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("node host '{name}': '{class}' is not usable: {e}");
                    report.unavailable.push((
                        class.clone(),
                        format!("its declaration cannot be read: {e}"),
                    ));
                    continue;
                }
            };
        let extra = &reply["extra"][class.as_str()];
        schema.input_is_list = extra["input_is_list"].as_bool().unwrap_or(false);
        schema.not_idempotent = extra["not_idempotent"].as_bool().unwrap_or(false);
        if let Some(existing) = registry.schema(class) {
            let owner = existing.python_module.clone();
            match on_clash {
                OnClash::Error => {
                    return Err(format!(
                        "node class '{class}' of node host '{name}' ({}) is already registered \
                         by {owner}",
                        schema.python_module
                    ))
                }
                OnClash::Skip => {
                    report.unavailable.push((
                        class.clone(),
                        format!("the name is taken by {owner}, which keeps it"),
                    ));
                    continue;
                }
            }
        }
        // Inputs the class accepts beyond its declaration (`**kwargs`, a pack's flexible
        // optional dict): any name, linked like ComfyUI passes them.
        if let Some(ty) = extra["dynamic_inputs"]["type"].as_str() {
            if schema.dynamic_inputs.is_none() {
                schema = schema.dynamic_inputs("", ty);
            }
        }
        let validated = extra["validate_inputs"].as_object().map(|v| {
            let args: Vec<&str> = v
                .get("args")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let kwargs = v.get("kwargs").and_then(Json::as_bool).unwrap_or(false);
            let names: Vec<&'static str> = schema
                .inputs
                .iter()
                .filter(|i| kwargs || args.contains(&i.name.as_str()))
                // Registered once per class for the life of the process.
                .map(|i| &*Box::leak(i.name.clone().into_boxed_str()))
                .collect();
            &*Box::leak(names.into_boxed_slice())
        });
        let node = RemoteNode {
            host: Arc::clone(host),
            schema,
            fingerprint: extra["fingerprint"].as_bool().unwrap_or(false),
            lazy_status: extra["check_lazy_status"].as_bool().unwrap_or(false),
            validated,
        };
        registry
            .register_arc(Arc::new(node))
            .map_err(|e| format!("node host '{name}': {e}"))?;
        report.nodes.push(class.clone());
    }
    Ok(report)
}
