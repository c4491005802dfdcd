//! The `serve` flags that configure node hosts, kept here so the CLI needs one `flatten`
//! line and one call.

use super::comfyui::{self, PackAssets};
use super::{HostConfig, NodeHosts, OnClash, SandboxMode, Transport};
use crate::env::Environment;
use crate::node::Registry;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct NodeHostArgs {
    /// Run an out-of-process node pack: NAME=COMMAND (split on spaces; repeatable). Its nodes
    /// appear as custom_nodes.NAME (docs/node-protocol.md). The host gets a clean
    /// environment; PYTHONPATH holds the Python SDK (comfyrs_node).
    #[arg(long = "node-host", value_name = "NAME=COMMAND")]
    pub node_host: Vec<String>,
    /// Run node hosts inside bubblewrap (no network, read-only filesystem, one writable
    /// exchange folder): off, auto (when bwrap works) or on.
    #[arg(long = "node-host-sandbox", value_name = "MODE", default_value = "off")]
    pub sandbox: String,
    /// What the protocol runs on: stdio (the host's stdin/stdout) or unix (a socket in the
    /// host's exchange folder, path in COMFYRS_NODE_SOCKET; the host's stdout is then free).
    #[arg(
        long = "node-host-transport",
        value_name = "MODE",
        default_value = "stdio"
    )]
    pub transport: String,
    /// Longest one node of a host may run before the host is stopped and the node fails.
    #[arg(long = "node-timeout", value_name = "SECONDS", default_value_t = 600.0)]
    pub node_timeout: f64,
    /// A ComfyUI custom_nodes folder whose packs run in a Python host (with --comfyui-python).
    #[arg(long = "comfyui-packs", value_name = "DIR")]
    pub comfyui_packs: Option<PathBuf>,
    /// The Python of the ComfyUI environment the packs need.
    #[arg(long = "comfyui-python", value_name = "PY", default_value = "python3")]
    pub comfyui_python: PathBuf,
    /// The ComfyUI checkout whose modules packs import (default: the parent of
    /// --comfyui-packs).
    #[arg(long = "comfyui-root", value_name = "DIR")]
    pub comfyui_root: Option<PathBuf>,
}

impl Default for NodeHostArgs {
    /// The same as no flags on the command line.
    fn default() -> Self {
        NodeHostArgs {
            node_host: Vec::new(),
            sandbox: "off".into(),
            transport: "stdio".into(),
            node_timeout: 600.0,
            comfyui_packs: None,
            comfyui_python: PathBuf::from("python3"),
            comfyui_root: None,
        }
    }
}

/// Started hosts plus the ComfyUI packs' web assets, if any.
pub struct Started {
    pub hosts: NodeHosts,
    pub assets: Option<PackAssets>,
}

impl NodeHostArgs {
    /// Starts every configured host and registers its nodes.
    pub fn start(&self, registry: &mut Registry, env: &Environment) -> Result<Started, String> {
        let sandbox: SandboxMode = self.sandbox.parse()?;
        let transport: Transport = self.transport.parse()?;
        if !(self.node_timeout > 0.0 && self.node_timeout.is_finite()) {
            return Err(format!(
                "--node-timeout {}: expected a positive number of seconds",
                self.node_timeout
            ));
        }
        let timeout = Duration::from_secs_f64(self.node_timeout);
        let mut configs = Vec::new();
        // Python packs import the SDK that ships inside comfyrs.
        let sdk = || {
            comfyui::write_sdk()
                .map(|d| d.display().to_string())
                .map_err(|e| format!("cannot write the Python SDK: {e}"))
        };
        for spec in &self.node_host {
            let (name, command) = spec
                .split_once('=')
                .ok_or_else(|| format!("--node-host {spec:?}: expected NAME=COMMAND"))?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !valid {
                return Err(format!(
                    "--node-host {spec:?}: the name must be letters, digits, '_', '-' or '.'"
                ));
            }
            let argv: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            if argv.is_empty() {
                return Err(format!("--node-host {spec:?}: the command is empty"));
            }
            let mut c = HostConfig::new(name, argv);
            c.sandbox = sandbox;
            c.transport = transport;
            c.call_timeout = timeout;
            let sdk = sdk()?;
            c.ro_binds.push(PathBuf::from(&sdk));
            c.env.push(("PYTHONPATH".into(), sdk));
            configs.push(c);
        }
        let mut hosts = NodeHosts::start(registry, env, configs, OnClash::Error)?;
        let mut assets = None;
        if let Some(packs) = &self.comfyui_packs {
            let root = comfyui::comfyui_root(packs, self.comfyui_root.as_deref())?;
            let mut c = comfyui::host_config(packs, &self.comfyui_python, &root, sandbox)?;
            c.call_timeout = timeout;
            c.transport = transport;
            // In the sandbox, ComfyUI nodes see comfyrs' folders as they see ComfyUI's: input
            // and models to read, output and temp to write (even where they sit under /tmp).
            let existing = |p: &PathBuf| p.is_dir().then(|| p.clone());
            c.ro_binds.extend(existing(&env.paths.input));
            c.ro_binds
                .extend(env.paths.model_roots.iter().filter_map(existing));
            c.rw_binds.extend(existing(&env.paths.output));
            c.rw_binds.extend(existing(&env.paths.temp));
            // ComfyUI's rule: a pack cannot take a name that is already registered.
            let more = NodeHosts::start(registry, env, vec![c], OnClash::Skip)?;
            let web = more.reports[0].web_dirs.clone();
            assets = Some(PackAssets::new(packs, &web));
            hosts.hosts.extend(more.hosts);
            hosts.reports.extend(more.reports);
        }
        Ok(Started { hosts, assets })
    }
}
