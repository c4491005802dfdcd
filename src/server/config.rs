//! Server settings and the data directory layout.

use crate::env::{Environment, Paths};
use crate::queue::ShutdownMode;
use crate::store::{JobStore, SqliteStore, StoreError};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// How `comfyrs serve` listens and guards itself.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Bearer token every request must carry (`Authorization: Bearer T`, or `?token=T`).
    pub token: Option<String>,
    /// Allows a non-loopback address without a token.
    pub allow_no_auth: bool,
    /// Largest request body, bytes (ComfyUI's --max-upload-size, in MB there).
    pub max_upload_bytes: usize,
    /// `--enable-cors-header [ORIGIN]`: send CORS headers instead of the origin check.
    pub cors_origin: Option<String>,
    pub shutdown_mode: ShutdownMode,
    /// The serverless route families (tokens, deployments, webhooks, limits).
    pub serverless: crate::server::serverless::ServerlessConfig,
    /// The web frontend's files and the user-data folder.
    pub frontend: crate::server::frontend::FrontendConfig,
    /// `--max-memory`: the resident size above which work is refused (bytes).
    pub max_memory: Option<u64>,
    /// `--role` and the shared store of a cluster (docs/scale-out.md).
    pub cluster: crate::cluster::ClusterConfig,
    /// Node packs' web assets and the node hosts' report.
    pub custom_nodes: crate::server::pack_web::PackWeb,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8188,
            token: None,
            allow_no_auth: false,
            max_upload_bytes: 100 * 1024 * 1024,
            cors_origin: None,
            shutdown_mode: ShutdownMode::Interrupt,
            serverless: Default::default(),
            frontend: Default::default(),
            max_memory: None,
            cluster: Default::default(),
            custom_nodes: Default::default(),
        }
    }
}

impl ServerConfig {
    /// Refuses a non-loopback bind without a credential for the ComfyUI routes (the server
    /// token or an admin API token) unless explicitly allowed: API tokens alone do not open
    /// those routes, so they would be open to everyone (or, with tokens, closed to all).
    pub fn check_security(&self) -> Result<(), String> {
        let sl = &self.serverless;
        let admin_token = sl.tokens.iter().any(|t| sl.admins.contains(&t.name));
        if !self.listen.is_loopback() && self.token.is_none() && !admin_token && !self.allow_no_auth
        {
            return Err(format!(
                "refusing to listen on {} without authentication for the ComfyUI API: pass \
                 --token TOKEN (or set COMFYRS_TOKEN), or name an admin API token, or --no-auth \
                 to serve everyone on the network",
                self.listen
            ));
        }
        Ok(())
    }
}

/// The files of one server: `D/comfyrs.db` (the job store), `D/input`, `D/output`, `D/temp`,
/// and `D/models` unless another models directory is given.
pub struct DataDir {
    pub root: PathBuf,
    pub paths: Paths,
}

impl DataDir {
    pub fn new(root: &Path, models_dir: Option<&Path>) -> DataDir {
        let mut paths = Paths::under(root);
        if let Some(m) = models_dir {
            paths.model_roots = vec![m.to_path_buf()];
        }
        DataDir {
            root: root.to_path_buf(),
            paths,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("comfyrs.db")
    }

    /// Creates the folders and opens the store (recovering jobs a crash left running).
    pub fn open(&self) -> Result<(Environment, SqliteStore), StoreError> {
        let env = self.open_env();
        let store = JobStore::open(&self.db_path())?;
        Ok((env, store))
    }

    /// Creates the folders; the environment over them (the store is opened elsewhere).
    pub fn open_env(&self) -> Environment {
        for d in [
            &self.root,
            &self.paths.input,
            &self.paths.output,
            &self.paths.temp,
        ] {
            if let Err(e) = std::fs::create_dir_all(d) {
                tracing::warn!("cannot create {}: {e}", d.display());
            }
        }
        Environment::new(self.paths.clone())
    }
}
