//! The `comfyrs` command line: run, validate and list nodes.

use clap::{Args, Parser, Subcommand};
use comfyrs::compute::{Compute, DeviceSpec, DtypeSpec};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{CachePolicy, Event, Executor, ExecutorConfig, Interrupt, RunStatus};
use comfyrs::node::Registry;
use comfyrs::prompt::{prepare, PromptError};
use comfyrs::workflow::{overrides_from_json, parse_set_arg, parse_workflow, Overrides};
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
    /// Run a workflow (API format) and write its outputs.
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
    },
    /// Check a workflow without running it; prints ComfyUI's error JSON if it is invalid.
    Validate {
        workflow: PathBuf,
        #[command(flatten)]
        prompt: PromptArgs,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Serve ComfyUI's HTTP + WebSocket API (POST /prompt, /ws, /history, /view, ...).
    Serve(ServeArgs),
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
    /// Address to bind. Anything but loopback needs --token (or --no-auth).
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    #[arg(long, default_value_t = 8188)]
    port: u16,
    /// Holds the job store (comfyrs.db) and input/, output/, temp/ (and models/).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
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
    /// Register test-only nodes (DevSleep).
    #[arg(long, hide = true)]
    dev_nodes: bool,
    #[command(flatten)]
    compute: ComputeArgs,
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
}

impl DirArgs {
    fn environment(&self) -> Environment {
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
        Environment::new(paths)
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
) -> Result<(comfyrs::workflow::Workflow, comfyrs::graph::ValidPrompt), Fatal> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| fatal(2, format!("cannot read {}: {e}", path.display())))?;
    let invalid = |e: PromptError| {
        fatal(
            2,
            serde_json::to_string_pretty(&e.to_comfy_json()).unwrap_or_default(),
        )
    };
    let workflow = parse_workflow(&text).map_err(|e| invalid(e.into()))?;
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run_serve(args: ServeArgs) -> Result<(), Fatal> {
    use comfyrs::queue::ShutdownMode;
    use comfyrs::server::{App, DataDir, ServerConfig};
    let mut registry = Registry::with_builtin_nodes();
    if args.dev_nodes {
        comfyrs::server::dev_nodes::register(&mut registry).map_err(|e| fatal(2, e.to_string()))?;
    }
    let policy = CachePolicy::parse(&args.cache).map_err(|e| fatal(2, e))?;
    let compute = args.compute.open()?;
    let data = DataDir::new(&args.data_dir, args.models_dir.as_deref());
    let (env, store) = data.open().map_err(|e| {
        fatal(
            2,
            format!(
                "cannot open the job store {}: {e}",
                data.db_path().display()
            ),
        )
    })?;
    let config = ServerConfig {
        listen: args.listen,
        port: args.port,
        token: args
            .token
            .or_else(|| std::env::var("COMFYRS_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        allow_no_auth: args.no_auth,
        max_upload_bytes: (args.max_upload_size * 1024.0 * 1024.0).round() as usize,
        cors_origin: args.enable_cors_header,
        shutdown_mode: match args.on_shutdown {
            OnShutdown::Interrupt => ShutdownMode::Interrupt,
            OnShutdown::Finish => ShutdownMode::Finish,
        },
    };
    config.check_security().map_err(|e| fatal(2, e))?;
    let app = App::new(
        Arc::new(registry),
        Arc::new(env.with_compute(compute)),
        Arc::new(store),
        ExecutorConfig {
            cache: policy,
            workers: args.workers,
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fatal(1, format!("cannot start the runtime: {e}")))?;
    rt.block_on(comfyrs::server::serve_until_signal(app, config))
        .map_err(|e| fatal(1, format!("server: {e}")))
}

fn run_cli(cli: Cli) -> Result<(), Fatal> {
    if let Command::Serve(args) = cli.command {
        return run_serve(args);
    }
    let registry = Arc::new(Registry::with_builtin_nodes());
    match cli.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Nodes { json, dirs } => {
            let env = dirs.environment();
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
        Command::Validate {
            workflow,
            prompt,
            dirs,
        } => {
            let env = dirs.environment();
            let (_, valid) = load_prompt(&workflow, &prompt, &registry, &env)?;
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
        } => {
            let env = Arc::new(dirs.environment().with_compute(compute.open()?));
            let policy = CachePolicy::parse(&cache).map_err(|e| fatal(2, e))?;
            let (_, valid) = load_prompt(&workflow, &prompt, &registry, &env)?;
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
                let sink = |e: Event| bars.handle(&e);
                let o = executor.run(&prompt_id, &valid, None, &interrupt, &sink);
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
                        data["exception_message"].as_str().unwrap_or(""),
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
