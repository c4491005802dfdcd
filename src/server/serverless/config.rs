//! Settings of the serverless families (tokens, deployments folder, webhooks, limits,
//! retention). `comfyrs serve` fills them from flags, the environment and an optional JSON
//! config file; tests build them directly.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// One API token. `name` identifies the owner of the requests it creates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub token: String,
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    /// Standard Webhooks secret (`whsec_<base64>` or raw text); unsigned when `None`.
    pub secret: Option<String>,
    /// First retry delay; each further retry doubles it (capped at `max_delay`).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Retries stop this long after the event was created.
    pub max_age: Duration,
    /// A delivery counts when the receiver answers 2xx within this time.
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Networks webhook receivers may be in despite the SSRF guard (`"127.0.0.1/32"`): for
    /// tests and private setups. Empty by default.
    pub allow_networks: Vec<String>,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            secret: None,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            allow_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerlessConfig {
    /// Bearer tokens. The server's `--token` (if any) is one more, named "default", with admin
    /// rights; with no token at all every request belongs to "anonymous".
    pub tokens: Vec<ApiToken>,
    /// `X-API-Key` values for the admin routes.
    pub admin_keys: Vec<String>,
    /// Names of the tokens with admin rights: they see every deployment and may use the
    /// ComfyUI routes (the server's `--token` always has them).
    pub admins: Vec<String>,
    /// Folder of deployment files (and where API-created deployments are saved).
    pub deployments_dir: PathBuf,
    /// Base of the URLs handed out (`status_url`, output `url`); default `http://{Host}`.
    pub public_url: Option<String>,
    pub webhooks: WebhookPolicy,
    /// Largest request body of a serverless route, bytes.
    pub max_body_bytes: usize,
    /// Pending jobs (all families) above which submits get 429.
    pub max_queue_depth: usize,
    /// Seconds a client is told to wait when the queue is full.
    pub retry_after_s: u64,
    /// URL fetching for media inputs (the SSRF guard).
    pub media: super::media::MediaPolicy,
    /// Finished requests' results and files are deleted this long after they finish.
    pub retention: Duration,
    /// How often expired requests are looked for.
    pub retention_sweep: Duration,
    /// Holds `loras.json` and `models.json` (the admin catalogs).
    pub catalogs_dir: PathBuf,
    /// The checkpoint (under models/checkpoints) of the `sd15/...` model pipelines.
    pub sd15_checkpoint: String,
    /// The SDXL base checkpoint of the `sdxl` model ids.
    pub sdxl_checkpoint: String,
    /// The FLUX.1-dev all-in-one checkpoint (fp8, ComfyUI's `flux1-dev-fp8` layout) of the
    /// `flux` model ids.
    pub flux_checkpoint: String,
    /// FLUX.1-dev as separate files (the quickstart's), used when `flux_checkpoint` is absent.
    pub flux_files: FluxFiles,
}

/// FLUX.1-dev as the separate files ComfyUI's flux_dev_example loads (UNETLoader,
/// DualCLIPLoader type flux, VAELoader).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FluxFiles {
    /// Under models/diffusion_models.
    pub diffusion_model: String,
    /// Under models/text_encoders.
    pub clip_l: String,
    /// Under models/text_encoders.
    pub t5xxl: String,
    /// Under models/vae.
    pub vae: String,
}

impl Default for FluxFiles {
    fn default() -> Self {
        FluxFiles {
            diffusion_model: "flux1-dev.safetensors".into(),
            clip_l: "clip_l.safetensors".into(),
            t5xxl: "t5xxl_fp16.safetensors".into(),
            vae: "ae.safetensors".into(),
        }
    }
}

impl Default for ServerlessConfig {
    fn default() -> Self {
        ServerlessConfig {
            tokens: Vec::new(),
            admin_keys: Vec::new(),
            admins: Vec::new(),
            deployments_dir: PathBuf::from("deployments"),
            public_url: None,
            webhooks: WebhookPolicy::default(),
            max_body_bytes: 50 * 1024 * 1024,
            max_queue_depth: 1000,
            retry_after_s: 10,
            media: Default::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_sweep: Duration::from_secs(600),
            catalogs_dir: PathBuf::from("catalogs"),
            sd15_checkpoint: "v1-5-pruned-emaonly.safetensors".into(),
            sdxl_checkpoint: "sd_xl_base_1.0.safetensors".into(),
            flux_checkpoint: "flux1-dev-fp8.safetensors".into(),
            flux_files: FluxFiles::default(),
        }
    }
}

/// The JSON config file (`--serverless-config FILE`): every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessFile {
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// Names of tokens with admin rights.
    #[serde(default)]
    pub admins: Vec<String>,
    pub deployments_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_base_delay_ms: Option<u64>,
    /// Networks webhook URLs may point into despite the SSRF guard.
    #[serde(default)]
    pub webhook_allow_networks: Vec<String>,
    pub max_body_mb: Option<f64>,
    pub max_queue_depth: Option<usize>,
    /// Networks media URLs may point into despite the SSRF guard (`"10.0.0.0/8"`).
    #[serde(default)]
    pub media_allow_networks: Vec<String>,
    pub media_allow_http: Option<bool>,
    pub retention_hours: Option<f64>,
    pub sd15_checkpoint: Option<String>,
    pub sdxl_checkpoint: Option<String>,
    pub flux_checkpoint: Option<String>,
    pub flux_files: Option<FluxFiles>,
    pub catalogs_dir: Option<PathBuf>,
}

impl ServerlessConfig {
    /// Applies a config file on top of `self`.
    pub fn apply_file(&mut self, f: ServerlessFile) {
        self.tokens.extend(f.tokens);
        self.admin_keys.extend(f.admin_keys);
        self.admins.extend(f.admins);
        if let Some(d) = f.deployments_dir {
            self.deployments_dir = d;
        }
        if f.public_url.is_some() {
            self.public_url = f.public_url;
        }
        if f.webhook_secret.is_some() {
            self.webhooks.secret = f.webhook_secret;
        }
        if let Some(ms) = f.webhook_base_delay_ms {
            self.webhooks.base_delay = Duration::from_millis(ms);
        }
        if let Some(mb) = f.max_body_mb {
            self.max_body_bytes = (mb * 1024.0 * 1024.0) as usize;
        }
        if let Some(n) = f.max_queue_depth {
            self.max_queue_depth = n;
        }
        self.media.allow_networks.extend(f.media_allow_networks);
        self.webhooks
            .allow_networks
            .extend(f.webhook_allow_networks);
        if let Some(d) = f.catalogs_dir {
            self.catalogs_dir = d;
        }
        if let Some(c) = f.sd15_checkpoint {
            self.sd15_checkpoint = c;
        }
        if let Some(c) = f.sdxl_checkpoint {
            self.sdxl_checkpoint = c;
        }
        if let Some(c) = f.flux_checkpoint {
            self.flux_checkpoint = c;
        }
        if let Some(files) = f.flux_files {
            self.flux_files = files;
        }
        if let Some(h) = f.retention_hours {
            self.retention = Duration::from_secs_f64(h * 3600.0);
        }
        if let Some(h) = f.media_allow_http {
            self.media.allow_http = h;
        }
    }

    /// Parses `name:token` pairs separated by commas (`COMFYRS_API_TOKENS`, `--api-token`).
    /// A bare token is named after its position (`token1`, ...).
    pub fn parse_tokens(s: &str) -> Vec<ApiToken> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .enumerate()
            .map(|(i, t)| match t.split_once(':') {
                Some((n, v)) if !n.is_empty() && !v.is_empty() => ApiToken {
                    name: n.to_string(),
                    token: v.to_string(),
                },
                _ => ApiToken {
                    name: format!("token{}", i + 1),
                    token: t.to_string(),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists() {
        let t = ServerlessConfig::parse_tokens("alice:s1, s2 ,,bob:s3");
        assert_eq!(
            t,
            vec![
                ApiToken {
                    name: "alice".into(),
                    token: "s1".into()
                },
                ApiToken {
                    name: "token2".into(),
                    token: "s2".into()
                },
                ApiToken {
                    name: "bob".into(),
                    token: "s3".into()
                },
            ]
        );
    }
}
