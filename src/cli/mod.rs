//! The `comfyrs` command line: run, validate, convert and check workflows, list nodes, serve.
//!
//! It lives in the library so that a distribution is one line:
//! `fn main() -> ExitCode { crate::cli::main_with(&[my_pack::register]) }`. The shipped
//! binary (`cli/` in the workspace) is exactly that, with every pack under `nodes/`.

use crate::compute::{Compute, DeviceSpec, DtypeSpec};
use crate::env::{Environment, Paths};
use crate::exec::{CachePolicy, Event, Executor, ExecutorConfig, Interrupt, RunStatus};
use crate::node::{RegisterFn, Registry};
use crate::prompt::{prepare, PromptError};
use crate::sampling::preview::{PreviewMethod, PreviewSettings};
use crate::workflow::{overrides_from_json, parse_set_arg, source, workflow_from_json, Overrides};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "comfyrs",
    version,
    about = "Run ComfyUI workflow_api.json files natively"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow (API or UI format, or a PNG/WebP/JPEG carrying one) and write its outputs.
    Run {
        workflow: PathBuf,
        #[command(flatten)]
        prompt: PromptArgs,
        #[command(flatten)]
        dirs: DirArgs,
        /// Output cache policy: classic, lru[:ENTRIES[:BYTES]] or none.
        #[arg(long, default_value = "classic")]
        cache: String,
        /// Nodes that may run at once on independent branches.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Print the run's events as JSON lines (ComfyUI's WebSocket messages) instead of
        /// progress bars.
        #[arg(long)]
        json_events: bool,
        #[command(flatten)]
        compute: ComputeArgs,
        #[command(flatten)]
        node_hosts: Box<crate::remote::args::NodeHostArgs>,
    },
    /// Check a workflow (any format `run` takes) without running it; prints ComfyUI's error JSON if it is invalid.
    Validate {
        workflow: PathBuf,
        #[command(flatten)]
        prompt: PromptArgs,
        #[command(flatten)]
        dirs: DirArgs,
        #[command(flatten)]
        node_hosts: Box<crate::remote::args::NodeHostArgs>,
    },
    /// Serve ComfyUI's HTTP + WebSocket API (POST /prompt, /ws, /history, /view, ...).
    Serve(Box<ServeArgs>),
    /// Full-size parity with ComfyUI: run the SD1.5 / SDXL parity workflows on full-size
    /// checkpoints and compare each saved PNG with ComfyUI's reference (mean/max |Δ|, PSNR,
    /// pass/fail).
    Parity(ParityArgs),
    /// Convert a workflow (UI-format JSON, or an image carrying one) to API format, as the
    /// ComfyUI editor's "Export (API)" does. Prints the API node ids --set/--overrides use.
    Convert {
        workflow: PathBuf,
        /// Write the API JSON here instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Coverage report: for each workflow (files, or folders searched for .json/.png/.webp),
    /// whether it converts and validates with stand-in model files, and which node classes
    /// and model families comfyrs lacks.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the report as Markdown to this file.
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// A title line for the Markdown report (e.g. the package and version checked).
        #[arg(long)]
        title: Option<String>,
    },
    /// List the registered nodes (with --json: ComfyUI's /object_info document).
    Nodes {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to bind. Anything but loopback needs --token or an admin API token (or
    /// --no-auth): API tokens alone do not open the ComfyUI routes.
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    #[arg(long, default_value_t = 8188)]
    port: u16,
    /// Holds the job store (comfyrs.db) and input/, output/, temp/ (and models/, user/).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// The ComfyUI frontend's static/ folder to serve at / (also COMFYRS_FRONTEND_ROOT).
    /// Default: DATA_DIR/frontend/<version>/, else the comfyui-frontend-package in python3.
    #[arg(long, value_name = "DIR")]
    front_end_root: Option<PathBuf>,
    /// Models root (default: DATA_DIR/models).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`) on every request
    /// (default: the COMFYRS_TOKEN environment variable).
    #[arg(long)]
    token: Option<String>,
    /// Serve a non-loopback address without a token.
    #[arg(long)]
    no_auth: bool,
    /// Largest request body in MB (413 above it).
    #[arg(long, default_value_t = 100.0)]
    max_upload_size: f64,
    /// Memory ceiling (e.g. 8G, 512M): requests and jobs that would take the process's
    /// resident size over it are refused with a clear error (503) instead of the kernel
    /// killing the server; caches are dropped first. Off by default.
    #[arg(long, value_name = "SIZE", value_parser = crate::queue::memory::parse_size)]
    max_memory: Option<u64>,
    /// Send CORS headers for ORIGIN (bare flag: *) instead of refusing cross-site requests.
    #[arg(long, value_name = "ORIGIN", num_args = 0..=1, default_missing_value = "*")]
    enable_cors_header: Option<String>,
    /// What happens to the running job on SIGINT/SIGTERM: interrupt it, or let it finish.
    #[arg(long, value_enum, default_value = "interrupt")]
    on_shutdown: OnShutdown,
    /// Output cache policy: classic, lru[:ENTRIES[:BYTES]] or none.
    #[arg(long, default_value = "classic")]
    cache: String,
    /// Nodes that may run at once on independent branches.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Latent previews sent to WebSocket clients while samplers run: none, auto or latent2rgb
    /// (auto = latent2rgb; ComfyUI's TAESD previews are not available).
    #[arg(long, default_value = "none")]
    preview_method: PreviewMethod,
    /// Largest preview side in pixels (previews are fitted into a square of this size).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=8192))]
    preview_size: u32,
    #[command(flatten)]
    extra: ExtraPathsArgs,
    /// Register test-only nodes (DevSleep).
    #[arg(long, hide = true)]
    dev_nodes: bool,
    #[command(flatten)]
    node_hosts: Box<crate::remote::args::NodeHostArgs>,
    #[command(flatten)]
    serverless: ServerlessArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Many processes over one PostgreSQL store (docs/scale-out.md).
#[derive(Args)]
struct ClusterArgs {
    /// The job store: a SQLite file (default DATA_DIR/comfyrs.db) or a PostgreSQL URL
    /// (postgres://user:pass@host/db) shared by every node of a cluster (also COMFYRS_STORE).
    #[arg(long, value_name = "PATH|postgres://...")]
    store: Option<String>,
    /// What this process does with a PostgreSQL store: api (take requests, run nothing),
    /// worker (run jobs) or all.
    #[arg(long, default_value = "all", value_parser = crate::cluster::Role::parse)]
    role: crate::cluster::Role,
    /// This node's id in the cluster view (default: host-pid-random).
    #[arg(long)]
    node_id: Option<String>,
    /// Seconds a worker's claim on a job holds without renewal (renewed every third): a
    /// worker silent for longer loses the job.
    #[arg(long, default_value_t = 30.0)]
    lease_secs: f64,
    /// Re-queue (once) serverless jobs whose worker was lost, instead of failing them.
    /// ComfyUI-route jobs always fail with the reason.
    #[arg(long)]
    requeue_lost: bool,
    /// Keep output files (and copies of uploads) on S3-compatible storage: s3://bucket/prefix.
    /// Credentials, region and endpoint come from the AWS environment (AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL; AWS_ALLOW_HTTP=true for http).
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    outputs: Option<String>,
    /// /view and hosted file URLs redirect to presigned URLs valid this many seconds,
    /// instead of passing the bytes through (needs --outputs).
    #[arg(long, value_name = "SECS", requires = "outputs")]
    outputs_presign_secs: Option<u64>,
}

/// The serverless APIs (docs/serverless.md).
#[derive(Args)]
struct ServerlessArgs {
    /// An API token for the serverless routes, NAME:TOKEN (repeatable; also
    /// COMFYRS_API_TOKENS=name:token,...). A request is visible only to its token.
    #[arg(long = "api-token", value_name = "NAME:TOKEN")]
    api_tokens: Vec<String>,
    /// The NAME of an API token with admin rights: it sees every deployment and may use the
    /// ComfyUI routes (repeatable; the --token is always admin).
    #[arg(long = "admin", value_name = "NAME")]
    admins: Vec<String>,
    /// An X-API-Key for the admin routes (repeatable; also COMFYRS_ADMIN_KEY).
    #[arg(long = "admin-key", value_name = "KEY")]
    admin_keys: Vec<String>,
    /// A JSON file with serverless settings (tokens, admin_keys, deployments_dir, public_url,
    /// webhook_secret, webhook_base_delay_ms, webhook_allow_networks, max_body_mb,
    /// max_queue_depth; docs/serverless.md lists them all).
    #[arg(long, value_name = "FILE")]
    serverless_config: Option<PathBuf>,
    /// Folder of deployment files (default: DATA_DIR/deployments).
    #[arg(long)]
    deployments_dir: Option<PathBuf>,
    /// Base URL put in status/result/output URLs (default: http://{Host header}).
    #[arg(long)]
    public_url: Option<String>,
    /// Standard Webhooks signing secret, whsec_<base64> (also COMFYRS_WEBHOOK_SECRET).
    #[arg(long)]
    webhook_secret: Option<String>,
    /// Pending jobs above which serverless submits get 429 with Retry-After.
    #[arg(long, default_value_t = 1000)]
    max_queue_depth: usize,
}

impl ServerlessArgs {
    fn config(
        self,
        data_dir: &std::path::Path,
    ) -> Result<crate::server::serverless::ServerlessConfig, Fatal> {
        use crate::server::serverless::{config::ServerlessFile, ServerlessConfig};
        let mut c = ServerlessConfig {
            deployments_dir: data_dir.join("deployments"),
            catalogs_dir: data_dir.join("catalogs"),
            max_queue_depth: self.max_queue_depth,
            ..Default::default()
        };
        if let Some(f) = &self.serverless_config {
            let text = std::fs::read_to_string(f)
                .map_err(|e| fatal(2, format!("{}: {e}", f.display())))?;
            let file: ServerlessFile = serde_json::from_str(&text)
                .map_err(|e| fatal(2, format!("{}: {e}", f.display())))?;
            c.apply_file(file);
        }
        if let Ok(env) = std::env::var("COMFYRS_API_TOKENS") {
            c.tokens.extend(ServerlessConfig::parse_tokens(&env));
        }
        for t in &self.api_tokens {
            c.tokens.extend(ServerlessConfig::parse_tokens(t));
        }
        c.admin_keys.extend(self.admin_keys);
        c.admins.extend(self.admins);
        if let Ok(k) = std::env::var("COMFYRS_ADMIN_KEY") {
            if !k.is_empty() {
                c.admin_keys.push(k);
            }
        }
        if let Some(d) = self.deployments_dir {
            c.deployments_dir = d;
        }
        if self.public_url.is_some() {
            c.public_url = self.public_url;
        }
        if let Some(s) = self
            .webhook_secret
            .or_else(|| std::env::var("COMFYRS_WEBHOOK_SECRET").ok())
            .filter(|s| !s.is_empty())
        {
            c.webhooks.secret = Some(s);
        }
        Ok(c)
    }
}

#[derive(Args)]
struct ParityArgs {
    /// Point every workflow's CheckpointLoaderSimple at this file (one-checkpoint suites such
    /// as sd15, or --workflow files; ../shared/parity/gen_sd15.py writes the SD1.5 one).
    #[arg(long, value_name = "FILE", required_unless_present = "models_dir")]
    checkpoint: Option<PathBuf>,
    /// Folder holding the checkpoints the workflows name (in it or in its `checkpoints/`):
    /// sd15_random.safetensors, and scripts/parity/gen_sdxl.py's sdxl_random.safetensors and
    /// sdxl_refiner_random.safetensors; for the flux suite, gen_flux.py's folders
    /// (diffusion_models/, text_encoders/, vae/, loras/, checkpoints/).
    #[arg(long, value_name = "DIR", conflicts_with = "checkpoint")]
    models_dir: Option<PathBuf>,
    /// Built-in suite to run: sd15, sdxl, controlnet, flux, toolbox or all (repeatable; default sd15).
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
    /// Run only the built-in cases of this name (repeatable).
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Folder of ComfyUI's reference PNGs, one `<case>.png` per workflow.
    #[arg(long, value_name = "DIR", default_value = "../shared/parity/reference")]
    reference_dir: PathBuf,
    /// Run this API-format workflow instead of the built-in cases (repeatable; the case name,
    /// and so the reference file name, is the file's stem).
    #[arg(long = "workflow", value_name = "FILE")]
    workflows: Vec<PathBuf>,
    /// Where the images comfyrs produces are written (the img2img input goes to its `input/`).
    #[arg(long, value_name = "DIR", default_value = "parity_out")]
    output_dir: PathBuf,
}

/// Where the models run and in which precision (docs/gpu.md).
#[derive(Args)]
struct ComputeArgs {
    /// Device the models run on: cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    device: DeviceSpec,
    /// UNet and text-encoder dtype: fp32, fp16 or bf16 (default: fp32 on cpu, fp16 on cuda).
    #[arg(long, value_name = "fp32|fp16|bf16")]
    dtype: Option<DtypeSpec>,
    /// VAE dtype: fp32, fp16 or bf16 (default: fp32 on cpu, bf16 on cuda).
    #[arg(long, value_name = "fp32|fp16|bf16")]
    vae_dtype: Option<DtypeSpec>,
}

impl ComputeArgs {
    fn open(&self) -> Result<Compute, Fatal> {
        Compute::open(
            self.device,
            self.dtype.map(|d| d.0),
            self.vae_dtype.map(|d| d.0),
        )
        .map_err(|e| fatal(2, e))
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnShutdown {
    Interrupt,
    Finish,
}

#[derive(Args)]
struct PromptArgs {
    /// Override an input: NODE_ID.INPUT=VALUE (VALUE is JSON if it parses, else a string).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<String>,
    /// A JSON file of overrides: {"<node_id>": {"inputs": {...}}}.
    #[arg(long, value_name = "FILE")]
    overrides: Option<PathBuf>,
    /// Run only these output nodes (and what they need).
    #[arg(long = "output", value_name = "NODE_ID")]
    outputs: Vec<String>,
}

#[derive(Args)]
struct DirArgs {
    /// Base directory holding models/, input/, output/ and temp/ (like a ComfyUI install).
    #[arg(long, default_value = ".")]
    base_dir: PathBuf,
    /// Models root (default: BASE/models).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Where SaveImage writes (default: BASE/output).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Where LoadImage reads (default: BASE/input).
    #[arg(long)]
    input_dir: Option<PathBuf>,
    #[command(flatten)]
    extra: ExtraPathsArgs,
}

#[derive(Args)]
struct ExtraPathsArgs {
    /// Load one or more extra_model_paths.yaml files (ComfyUI's format; repeatable).
    /// BASE/extra_model_paths.yaml is loaded first when it exists.
    #[arg(long = "extra-model-paths-config", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    files: Vec<PathBuf>,
}

impl ExtraPathsArgs {
    fn apply(&self, paths: &mut Paths, base_dir: &std::path::Path) -> Result<(), Fatal> {
        crate::extra_model_paths::configure(paths, base_dir, &self.files)
            .map_err(|e| fatal(2, e.to_string()))
    }
}

impl DirArgs {
    fn environment(&self) -> Result<Environment, Fatal> {
        let mut paths = Paths::under(&self.base_dir);
        if let Some(m) = &self.models_dir {
            paths.model_roots = vec![m.clone()];
        }
        if let Some(o) = &self.output_dir {
            paths.output = o.clone();
        }
        if let Some(i) = &self.input_dir {
            paths.input = i.clone();
        }
        self.extra.apply(&mut paths, &self.base_dir)?;
        Ok(Environment::new(paths))
    }
}

/// A failure before anything ran: printed, with the exit code it maps to.
struct Fatal {
    code: u8,
    message: String,
}

fn fatal(code: u8, message: impl Into<String>) -> Fatal {
    Fatal {
        code,
        message: message.into(),
    }
}

fn load_prompt(
    path: &PathBuf,
    args: &PromptArgs,
    registry: &Registry,
    env: &Environment,
) -> Result<crate::graph::ValidPrompt, Fatal> {
    let invalid = |e: PromptError| {
        fatal(
            2,
            serde_json::to_string_pretty(&e.to_comfy_json()).unwrap_or_default(),
        )
    };
    let api = load_api_json(path, registry, env)?;
    let workflow = workflow_from_json(api).map_err(|e| invalid(e.into()))?;
    let mut overrides = Overrides::new();
    if let Some(f) = &args.overrides {
        let text = std::fs::read_to_string(f)
            .map_err(|e| fatal(2, format!("cannot read {}: {e}", f.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            fatal(
                2,
                format!(
                    "{}: invalid JSON at line {}, column {}: {e}",
                    f.display(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        overrides = overrides_from_json(&json).map_err(|e| invalid(e.into()))?;
    }
    for s in &args.set {
        parse_set_arg(s, &mut overrides).map_err(|e| invalid(e.into()))?;
    }
    let targets = (!args.outputs.is_empty()).then_some(args.outputs.as_slice());
    prepare(workflow, &overrides, registry, env, targets).map_err(invalid)
}

/// Reads a workflow file of any kind comfyrs accepts (API or UI JSON, or a PNG/WebP/JPEG
/// that carries one) and returns API-format JSON; conversion warnings go to stderr.
fn load_api_json(
    path: &PathBuf,
    registry: &Registry,
    env: &Environment,
) -> Result<serde_json::Value, Fatal> {
    let bytes = std::fs::read(path)
        .map_err(|e| fatal(2, format!("cannot read {}: {e}", path.display())))?;
    let found = source::detect(&bytes).map_err(|e| match e {
        // Bad JSON gets ComfyUI's error JSON, like any invalid workflow.
        source::SourceError::InvalidJson {
            line,
            column,
            message,
        } => {
            let e = PromptError::from(crate::workflow::WorkflowError::InvalidJson {
                line,
                column,
                message,
            });
            fatal(
                2,
                serde_json::to_string_pretty(&e.to_comfy_json()).unwrap_or_default(),
            )
        }
        other => fatal(2, format!("{}: {other}", path.display())),
    })?;
    let info = |class: &str| registry.schema(class).map(|s| s.object_info(env));
    let conversion = source::to_api(found, &info).map_err(|e| {
        fatal(
            2,
            serde_json::to_string_pretty(&e.to_comfy_json()).unwrap_or_default(),
        )
    })?;
    for w in &conversion.warnings {
        eprintln!("warning: {w}");
    }
    Ok(conversion.prompt)
}

/// Runs the command line with the built-in nodes plus `packs` (each a pack's register
/// function, loaded in this order; a class-name clash is a start-up error naming both sides).
pub fn main_with(packs: &[RegisterFn]) -> ExitCode {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            );
        // The editor's terminal panel shows comfyrs's own info lines and above.
        let capture = crate::server::logs::CaptureLayer.with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("comfyrs", tracing::Level::INFO)
                .with_default(tracing::Level::WARN),
        );
        tracing_subscriber::registry()
            .with(stderr)
            .with(capture)
            .init();
    }
    let cli = Cli::parse();
    match run_cli(cli, packs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The built-in nodes, then the packs.
fn load_registry(packs: &[RegisterFn]) -> Result<Registry, Fatal> {
    Registry::load(crate::nodes::register_builtin, packs)
        .map_err(|e| fatal(2, format!("node packs: {e}")))
}

fn run_serve(args: ServeArgs, packs: &[RegisterFn]) -> Result<(), Fatal> {
    use crate::queue::ShutdownMode;
    use crate::server::{App, DataDir, ServerConfig};
    let mut registry = load_registry(packs)?;
    if args.dev_nodes {
        crate::server::dev_nodes::register(&mut registry).map_err(|e| fatal(2, e.to_string()))?;
    }
    let policy = CachePolicy::parse(&args.cache).map_err(|e| fatal(2, e))?;
    let compute = args.compute.open()?;
    let mut data = DataDir::new(&args.data_dir, args.models_dir.as_deref());
    args.extra.apply(&mut data.paths, &args.data_dir)?;
    let store_spec = args.cluster.store.clone().or_else(|| {
        std::env::var("COMFYRS_STORE")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let shared = store_spec
        .as_deref()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
    if !shared && args.cluster.role != crate::cluster::Role::All {
        return Err(fatal(
            2,
            "--role api|worker needs a shared store: --store postgres://...".to_string(),
        ));
    }
    let env = data.open_env();
    let spec = store_spec.unwrap_or_else(|| data.db_path().display().to_string());
    let pg_options = crate::store::postgres::PgOptions {
        node_id: args.cluster.node_id.clone(),
        lease: std::time::Duration::from_secs_f64(args.cluster.lease_secs.max(0.5)),
        requeue_sources: if args.cluster.requeue_lost {
            ["deployments", "models", "inference"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            vec![]
        },
        ..Default::default()
    };
    let store = crate::store::JobStore::connect(&spec, pg_options).map_err(|e| {
        fatal(
            2,
            format!("cannot open the job store {}: {e}", redact_url(&spec)),
        )
    })?;
    let cluster = crate::cluster::ClusterConfig {
        role: args.cluster.role,
        url: shared.then(|| spec.clone()),
        device: args.compute.device.to_string(),
    };
    let frontend = frontend_config(&args)?;
    let serverless = args.serverless.config(&args.data_dir)?;
    let models_at: Vec<String> = env
        .paths
        .model_roots
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or(p.clone())
                .display()
                .to_string()
        })
        .collect();
    eprintln!("models folder: {}", models_at.join(", "));
    let mut config = ServerConfig {
        frontend,
        serverless,
        listen: args.listen,
        port: args.port,
        token: args
            .token
            .or_else(|| std::env::var("COMFYRS_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        allow_no_auth: args.no_auth,
        max_memory: args.max_memory,
        custom_nodes: Default::default(),
        max_upload_bytes: (args.max_upload_size * 1024.0 * 1024.0).round() as usize,
        cors_origin: args.enable_cors_header,
        shutdown_mode: match args.on_shutdown {
            OnShutdown::Interrupt => ShutdownMode::Interrupt,
            OnShutdown::Finish => ShutdownMode::Finish,
        },
        cluster,
    };
    config.check_security().map_err(|e| fatal(2, e))?;
    let mut env = env.with_compute(compute);
    env.previews = PreviewSettings {
        method: args.preview_method,
        max_size: args.preview_size,
    };
    let started = args
        .node_hosts
        .start(&mut registry, &env)
        .map_err(|e| fatal(2, e))?;
    config.custom_nodes.hosts = started.hosts.to_json();
    config.custom_nodes.assets = started.assets.map(Arc::new);
    let app = App::new(
        Arc::new(registry),
        Arc::new(env),
        store,
        ExecutorConfig {
            cache: policy,
            workers: args.workers,
        },
    );
    if let Some(url) = &args.cluster.outputs {
        let objects = crate::objects::ObjectFiles::from_url(
            url,
            args.cluster
                .outputs_presign_secs
                .map(std::time::Duration::from_secs),
        )
        .map_err(|e| fatal(2, e))?;
        eprintln!("outputs: {}", objects.describe());
        app.queue.set_objects(Arc::new(objects));
    }
    crate::queue::memory::limit_allocator_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fatal(1, format!("cannot start the runtime: {e}")))?;
    rt.block_on(crate::server::serve_until_signal(app, config))
        .map_err(|e| fatal(1, format!("server: {e}")))
}

/// A store URL without its password, for messages.
fn redact_url(spec: &str) -> String {
    match url::Url::parse(spec) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => spec.to_string(),
    }
}

/// Where the editor's files are (printed at startup), and the user-data folder.
fn frontend_config(args: &ServeArgs) -> Result<crate::server::frontend::FrontendConfig, Fatal> {
    use crate::server::frontend;
    let explicit = args
        .front_end_root
        .clone()
        .or_else(|| std::env::var_os("COMFYRS_FRONTEND_ROOT").map(PathBuf::from));
    let located = frontend::locate(explicit.as_deref(), &args.data_dir).map_err(|e| fatal(2, e))?;
    let mut cfg = frontend::FrontendConfig {
        user_dir: Some(args.data_dir.join("user")),
        ..Default::default()
    };
    match located {
        Some(l) => {
            let version = l
                .version
                .clone()
                .unwrap_or_else(|| "unknown version".into());
            eprintln!(
                "editor: ComfyUI frontend {version} from {} ({})",
                l.root.display(),
                l.how
            );
            if l.version.as_deref() != Some(frontend::TESTED_VERSION) {
                eprintln!(
                    "warning: comfyrs is tested with frontend {}",
                    frontend::TESTED_VERSION
                );
            }
            let (templates, docs) = frontend::locate_companions();
            cfg.root = Some(l.root);
            cfg.templates = templates;
            cfg.docs = docs;
        }
        None => eprintln!(
            "editor: no ComfyUI frontend found (GET / explains how to get it); to fetch it: {}",
            frontend::fetch_command(&args.data_dir)
        ),
    }
    Ok(cfg)
}

fn run_cli(cli: Cli, packs: &[RegisterFn]) -> Result<(), Fatal> {
    let cli = match cli.command {
        Command::Serve(args) => return run_serve(*args, packs),
        Command::Parity(args) => return run_parity(args),
        command => Cli { command },
    };
    let mut registry = load_registry(packs)?;
    match cli.command {
        Command::Serve(_) | Command::Parity(_) => unreachable!("handled above"),
        Command::Nodes { json, dirs } => {
            let env = dirs.environment()?;
            if json {
                let info = registry.object_info(&env);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                for name in registry.names() {
                    let s = registry.schema(name).expect("listed");
                    println!(
                        "{:<28} {:<20} {}",
                        name,
                        s.category,
                        s.display_name.as_deref().unwrap_or(name)
                    );
                }
            }
            Ok(())
        }
        Command::Convert {
            workflow,
            output,
            dirs,
        } => {
            let env = dirs.environment()?;
            let api = load_api_json(&workflow, &registry, &env)?;
            let text = serde_json::to_string_pretty(&api).unwrap_or_default();
            if let Some(obj) = api.as_object() {
                for (id, node) in obj {
                    eprintln!(
                        "{id:>8}  {:<28} {}",
                        node["class_type"].as_str().unwrap_or("?"),
                        node.pointer("/_meta/title")
                            .and_then(|t| t.as_str())
                            .unwrap_or("")
                    );
                }
            }
            match output {
                Some(path) => std::fs::write(&path, text + "\n")
                    .map_err(|e| fatal(1, format!("cannot write {}: {e}", path.display()))),
                None => {
                    println!("{text}");
                    Ok(())
                }
            }
        }
        Command::Check {
            paths,
            markdown,
            title,
        } => {
            let report =
                crate::coverage::check_paths(&paths, &registry).map_err(|e| fatal(2, e))?;
            print!("{}", report.to_text());
            if let Some(md) = markdown {
                std::fs::write(&md, report.to_markdown(title.as_deref()))
                    .map_err(|e| fatal(1, format!("cannot write {}: {e}", md.display())))?;
            }
            Ok(())
        }
        Command::Validate {
            workflow,
            prompt,
            dirs,
            node_hosts,
        } => {
            let env = dirs.environment()?;
            // Hosts are started so that their classes validate (and stopped on return).
            let _hosts = node_hosts
                .start(&mut registry, &env)
                .map_err(|e| fatal(2, e))?;
            let valid = load_prompt(&workflow, &prompt, &registry, &env)?;
            println!(
                "valid: {} node(s) to run for output(s) {}",
                valid.graph.graph.node_count(),
                valid.outputs.join(", ")
            );
            Ok(())
        }
        Command::Run {
            workflow,
            prompt,
            dirs,
            cache,
            workers,
            json_events,
            compute,
            node_hosts,
        } => {
            let env = Arc::new(dirs.environment()?.with_compute(compute.open()?));
            // Out-of-process packs, as `serve` starts them; stopped when the run ends.
            let _hosts = node_hosts
                .start(&mut registry, &env)
                .map_err(|e| fatal(2, e))?;
            let registry = Arc::new(registry);
            let policy = CachePolicy::parse(&cache).map_err(|e| fatal(2, e))?;
            let valid = load_prompt(&workflow, &prompt, &registry, &env)?;
            let executor = Executor::new(
                registry.clone(),
                env.clone(),
                ExecutorConfig {
                    cache: policy,
                    workers,
                },
            );
            let interrupt = Interrupt::new();
            {
                let i = interrupt.clone();
                let _ = ctrlc_hook(move || i.trigger());
            }
            let prompt_id = uuid::Uuid::new_v4().to_string();
            let total = valid.graph.graph.node_count() as u64;
            let outcome = if json_events {
                let sink = |e: Event| println!("{}", e.to_message());
                executor.run(&prompt_id, &valid, None, &interrupt, &sink)
            } else {
                let bars = ProgressBars::new(total);
                let o = executor.run(&prompt_id, &valid, None, &interrupt, &bars);
                bars.finish();
                o
            };
            for (node, ui) in &outcome.outputs {
                print_output(node, ui, &env);
            }
            match outcome.status {
                RunStatus::Success => Ok(()),
                RunStatus::Error(data) => Err(fatal(
                    1,
                    format!(
                        "execution error in node {} ({}): {}\n{}",
                        data["node_id"].as_str().unwrap_or("?"),
                        data["node_type"].as_str().unwrap_or("?"),
                        data["exception_message"].as_str().unwrap_or("").trim_end(),
                        serde_json::to_string_pretty(&data).unwrap_or_default()
                    ),
                )),
                RunStatus::Interrupted(data) => Err(fatal(
                    1,
                    format!(
                        "interrupted in node {}",
                        data["node_id"].as_str().unwrap_or("?")
                    ),
                )),
            }
        }
    }
}

/// `comfyrs parity`: cases on the same checkpoint share one executor (one load); exit 1 when
/// a case fails the bar or cannot run.
fn run_parity(args: ParityArgs) -> Result<(), Fatal> {
    use crate::parity::{format_result, write_test_image, ParityRunner, BUILTIN_CASES, SUITES};
    let mut suites: Vec<&str> = Vec::new();
    for s in &args.suites {
        match s.as_str() {
            "all" => suites.extend(SUITES),
            other => match SUITES.iter().find(|x| **x == other) {
                Some(s) => suites.push(s),
                None => {
                    return Err(fatal(
                        2,
                        format!(
                            "--suite {other}: unknown suite (allowed: {}, all)",
                            SUITES.join(", ")
                        ),
                    ))
                }
            },
        }
    }
    if suites.is_empty() {
        suites.push("sd15");
    }
    let mut cases: Vec<(String, String)> = Vec::new();
    if args.workflows.is_empty() {
        for name in &args.cases {
            if !BUILTIN_CASES.iter().any(|c| c.name == name) {
                let all: Vec<_> = BUILTIN_CASES.iter().map(|c| c.name).collect();
                return Err(fatal(
                    2,
                    format!("--case {name}: no such case (built-in: {})", all.join(", ")),
                ));
            }
        }
        cases.extend(
            BUILTIN_CASES
                .iter()
                .filter(|c| suites.contains(&c.suite))
                .filter(|c| args.cases.is_empty() || args.cases.iter().any(|n| n == c.name))
                .map(|c| (c.name.to_string(), c.workflow.to_string())),
        );
    }
    for w in &args.workflows {
        let text = std::fs::read_to_string(w)
            .map_err(|e| fatal(2, format!("cannot read {}: {e}", w.display())))?;
        let stem = w.file_stem().map(|s| s.to_string_lossy().into_owned());
        cases.push((stem.unwrap_or_default(), text));
    }
    if cases.is_empty() {
        return Err(fatal(2, "no case selected"));
    }
    let mut paths = Paths::under(&args.output_dir);
    paths.model_roots.clear();
    let ckpt_name = match (&args.checkpoint, &args.models_dir) {
        (Some(ckpt), _) => {
            let (Some(dir), Some(name)) =
                (ckpt.parent(), ckpt.file_name().and_then(|n| n.to_str()))
            else {
                return Err(fatal(
                    2,
                    format!("--checkpoint {}: not a file path", ckpt.display()),
                ));
            };
            if !ckpt.is_file() {
                return Err(fatal(
                    2,
                    format!("--checkpoint {}: no such file", ckpt.display()),
                ));
            }
            if args.workflows.is_empty() && suites.contains(&"sdxl") {
                return Err(fatal(
                    2,
                    "--checkpoint: the sdxl suite needs two checkpoints (base and refiner); \
                     give --models-dir instead",
                ));
            }
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            paths.add_model_folder("checkpoints", dir.to_path_buf(), true);
            Some(name.to_string())
        }
        (None, Some(dir)) => {
            if !dir.is_dir() {
                return Err(fatal(
                    2,
                    format!("--models-dir {}: no such folder", dir.display()),
                ));
            }
            paths.add_model_folder("checkpoints", dir.join("checkpoints"), false);
            paths.add_model_folder("checkpoints", dir.clone(), false);
            // The ControlNet cases' files (scripts/parity/gen_controlnet.py).
            paths.add_model_folder("controlnet", dir.join("controlnet"), false);
            // The Flux cases' split files (scripts/parity/gen_flux.py).
            for folder in ["diffusion_models", "text_encoders", "vae", "loras"] {
                paths.add_model_folder(folder, dir.join(folder), false);
            }
            None
        }
        (None, None) => return Err(fatal(2, "give --checkpoint FILE or --models-dir DIR")),
    };
    paths.output = args.output_dir.clone();
    paths.input = args.output_dir.join("input");
    write_test_image(&paths.input).map_err(|e| fatal(1, e))?;
    let env = Arc::new(Environment::new(paths));
    let mut runner = ParityRunner::new(
        Arc::new(Registry::with_builtin_nodes()),
        env,
        ckpt_name.as_deref(),
    );
    let mut failed = 0;
    for (case, json) in &cases {
        let reference = args.reference_dir.join(format!("{case}.png"));
        match runner.run_case(case, json, &reference) {
            Ok(r) => {
                println!("{}", format_result(&r));
                println!("{:<24} ours: {}", "", r.output.display());
                if !r.diff.passes() {
                    failed += 1;
                }
            }
            Err(e) => {
                println!("{case:<24} ERROR {e}");
                failed += 1;
            }
        }
    }
    println!(
        "bar: mean |Δ| <= {} and max |Δ| <= {} levels; {} of {} case(s) passed",
        crate::parity::MAX_MEAN_ABS_DIFF,
        crate::parity::MAX_ABS_DIFF,
        cases.len() - failed,
        cases.len()
    );
    if failed > 0 {
        return Err(fatal(1, format!("{failed} parity case(s) failed")));
    }
    Ok(())
}

/// Prints one output node's UI: saved files as paths, text as text.
fn print_output(node: &str, ui: &serde_json::Value, env: &Environment) {
    if let Some(images) = ui.get("images").and_then(|v| v.as_array()) {
        for img in images {
            let dir = match img["type"].as_str() {
                Some("temp") => &env.paths.temp,
                Some("input") => &env.paths.input,
                _ => &env.paths.output,
            };
            let path = dir
                .join(img["subfolder"].as_str().unwrap_or(""))
                .join(img["filename"].as_str().unwrap_or(""));
            println!("{node}: {}", path.display());
        }
    }
    if let Some(texts) = ui.get("text").and_then(|v| v.as_array()) {
        for t in texts {
            println!(
                "{node}: {}",
                t.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| t.to_string())
            );
        }
    }
}

/// Ctrl-C interrupts the running workflow cooperatively (a second Ctrl-C kills).
fn ctrlc_hook(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("interrupting (Ctrl-C again to kill)");
                    f();
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                }
            });
        })?;
    Ok(())
}

/// The CLI's rendering of the event stream: one bar for nodes, one for the running node's
/// own progress (sampler steps).
struct ProgressBars {
    _multi: MultiProgress,
    nodes: ProgressBar,
    step: ProgressBar,
}

impl crate::exec::EventSink for ProgressBars {
    fn emit(&self, event: Event) {
        self.handle(&event);
    }
    /// The bars never show it, so the run need not build it.
    fn wants_progress_state(&self) -> bool {
        false
    }
}

impl ProgressBars {
    fn new(total: u64) -> Self {
        let multi = MultiProgress::new();
        let nodes = multi.add(ProgressBar::new(total));
        nodes.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} nodes {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        nodes.set_prefix("run");
        let step = multi.add(ProgressBar::hidden());
        step.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        ProgressBars {
            _multi: multi,
            nodes,
            step,
        }
    }

    fn handle(&self, e: &Event) {
        match e {
            Event::ExecutionCached { nodes, .. } => {
                self.nodes.inc(nodes.len() as u64);
            }
            Event::Executing { node: Some(n), .. } => {
                self.nodes.inc(1);
                self.nodes.set_message(format!("node {n}"));
                self.step.set_length(0);
                self.step.set_position(0);
            }
            Event::Progress {
                node, value, max, ..
            } => {
                self.step.set_prefix(format!("node {node}"));
                self.step.set_length(*max);
                self.step.set_position(*value);
            }
            _ => {}
        }
    }

    fn finish(&self) {
        self.step.finish_and_clear();
        self.nodes.finish();
    }
}
