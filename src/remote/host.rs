//! One node host process and its supervision: start, handshake, one call at a time, and
//! recovery. A host that exits, writes garbage, or does not answer in time fails the node it
//! was running with an error naming the node and the host; it is killed (with everything it
//! started) and started again on the next call, so the server and the queue go on.

use super::sandbox::{self, SandboxMode};
use super::wire::{read_frame, write_frame, PROTOCOL_VERSION};
use crate::env::Environment;
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the protocol's frames travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The host's stdin and stdout (its stdout is then reserved for frames).
    #[default]
    Stdio,
    /// A Unix socket comfyrs listens on in the host's exchange folder; the host connects to
    /// the path in `COMFYRS_NODE_SOCKET`. Its stdin is empty and its stdout goes to the log
    /// like stderr, so stray prints cannot break the protocol.
    Unix,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdio" => Ok(Transport::Stdio),
            "unix" => Ok(Transport::Unix),
            other => Err(format!(
                "--node-host-transport {other:?}: use stdio or unix"
            )),
        }
    }
}

/// How to run one host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The pack name: nodes appear as `python_module: "custom_nodes.<name>"`.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Working directory (default: comfyrs' own).
    pub workdir: Option<PathBuf>,
    /// Extra environment variables (the rest of comfyrs' environment is not passed).
    pub env: Vec<(String, String)>,
    /// Folders the sandbox must show even where it hides the host's view (under /tmp).
    pub ro_binds: Vec<PathBuf>,
    /// Folders the sandboxed host may write besides its exchange folder.
    pub rw_binds: Vec<PathBuf>,
    pub sandbox: SandboxMode,
    /// Longest a node may run before its host is killed and the node fails.
    pub call_timeout: Duration,
    /// Longest the start-up handshake and node listing may take.
    pub start_timeout: Duration,
    /// How long an interrupted call may take to stop before its host is killed.
    pub interrupt_grace: Duration,
    /// Stdio (default) or a Unix socket.
    pub transport: Transport,
}

impl HostConfig {
    pub fn new(name: &str, command: Vec<String>) -> Self {
        HostConfig {
            name: name.to_string(),
            command,
            workdir: None,
            env: Vec::new(),
            ro_binds: Vec::new(),
            rw_binds: Vec::new(),
            sandbox: SandboxMode::Off,
            call_timeout: Duration::from_secs(600),
            start_timeout: Duration::from_secs(60),
            interrupt_grace: Duration::from_secs(5),
            transport: Transport::Stdio,
        }
    }
}

/// A failure of the host itself (not of the node's own logic).
#[derive(Debug, Clone, PartialEq)]
pub enum HostFailure {
    /// The process could not start or failed its handshake.
    Start(String),
    /// It exited or broke the protocol mid-call.
    Crashed(String),
    /// No answer within the call timeout.
    Timeout(Duration),
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostFailure::Start(s) | HostFailure::Crashed(s) => f.write_str(s),
            HostFailure::Timeout(d) => write!(f, "no answer within {}s", d.as_secs_f64()),
        }
    }
}

/// A message from the host during a call, or how the call ended.
pub enum Reply {
    Done(Json),
    Failure(HostFailure),
    /// Interrupted and the host confirmed (or was killed after the grace period).
    Interrupted,
}

struct Running {
    child: Child,
    /// Frames to the host: its stdin, or the socket.
    out: Box<dyn Write + Send>,
    rx: Receiver<Result<Json, String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Closed when the host's stderr reaches its end (every line is in the tail).
    stderr_done: Receiver<()>,
    /// The same for its stdout, when that is a log (the Unix socket transport).
    stdout_done: Option<Receiver<()>>,
}

/// A supervised host. Calls are serialised: a host sees one request at a time.
pub struct Host {
    pub config: HostConfig,
    exchange: PathBuf,
    env_paths: Json,
    running: Mutex<Option<Running>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    /// Handles dropped by comfyrs, sent as `release` with the next request.
    pending_release: Mutex<Vec<Json>>,
}

fn exchange_dir(name: &str) -> std::io::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    remove_stale(&base);
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("comfyrs-{}-{safe}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir)?;
    Ok(dir)
}

/// Exchange folders left by comfyrs processes that no longer run (killed mid-call: the
/// folder lives in memory under /dev/shm until removed).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("comfyrs-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if !alive && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Host {
    pub fn new(config: HostConfig, env: &Environment) -> std::io::Result<Host> {
        let abs = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or(p.to_path_buf())
                .display()
                .to_string()
        };
        let env_paths = json!({
            "input": abs(&env.paths.input),
            "output": abs(&env.paths.output),
            "temp": abs(&env.paths.temp),
            "models": env.paths.model_roots.iter().map(|p| abs(p)).collect::<Vec<_>>(),
        });
        Ok(Host {
            exchange: exchange_dir(&config.name)?,
            config,
            env_paths,
            running: Mutex::new(None),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            pending_release: Mutex::new(Vec::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The folder tensors cross through (the only one a sandboxed host may write).
    pub fn exchange_dir(&self) -> &Path {
        &self.exchange
    }

    /// Which start of the process is current (handles from earlier ones are dead).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn queue_release(&self, generation: u64, handle: Json) {
        if generation == self.generation() {
            self.pending_release
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self) -> Result<Running, HostFailure> {
        let cfg = &self.config;
        if cfg.command.is_empty() {
            return Err(HostFailure::Start("the command is empty".into()));
        }
        let bwrap = match cfg.sandbox {
            SandboxMode::Off => None,
            SandboxMode::Auto => sandbox::bwrap_available(),
            SandboxMode::On => Some(sandbox::bwrap_available().ok_or_else(|| {
                HostFailure::Start(
                    "the sandbox is required but bubblewrap (bwrap) is not installed or cannot \
                     create namespaces here"
                        .into(),
                )
            })?),
        };
        let workdir = match &cfg.workdir {
            Some(w) => w.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        };
        let socket = match cfg.transport {
            Transport::Stdio => None,
            Transport::Unix => {
                let path = self.exchange.join("host.sock");
                let _ = std::fs::remove_file(&path);
                let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| {
                    HostFailure::Start(format!("cannot listen on {}: {e}", path.display()))
                })?;
                Some((listener, path))
            }
        };
        let mut env = cfg.env.clone();
        if let Some((_, path)) = &socket {
            env.push(("COMFYRS_NODE_SOCKET".into(), path.display().to_string()));
        }
        let mut cmd = sandbox::command(
            &cfg.command,
            &workdir,
            &env,
            &self.exchange,
            &cfg.ro_binds,
            &cfg.rw_binds,
            bwrap.as_deref(),
        );
        cmd.stdin(if socket.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Its own process group, so a kill reaches whatever the host started.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| {
            HostFailure::Start(format!("cannot run {:?}: {e}", cfg.command.join(" ")))
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = std::sync::mpsc::channel::<()>();
        log_lines(&cfg.name, "err", stderr, Arc::clone(&tail), Some(done_tx))?;
        let mut stdout_done = None;
        let (out, frames): (Box<dyn Write + Send>, Box<dyn Read + Send>) = match socket {
            None => (
                Box::new(child.stdin.take().expect("piped")),
                Box::new(stdout),
            ),
            Some((listener, path)) => {
                // stdout is free: its lines go to the log like stderr's.
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                log_lines(&cfg.name, "out", stdout, Arc::clone(&tail), Some(tx))?;
                stdout_done = Some(rx);
                let stream = accept_host(&listener, &mut child, cfg.start_timeout, &path);
                let _ = std::fs::remove_file(&path);
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        // SAFETY: kill on our own child's process group.
                        unsafe {
                            libc::kill(-(child.id() as i32), libc::SIGKILL);
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = stderr_done.recv_timeout(Duration::from_secs(1));
                        let run_tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                        let lines: Vec<&str> = run_tail.iter().map(String::as_str).collect();
                        let note = if lines.is_empty() {
                            String::new()
                        } else {
                            let from = lines.len().saturating_sub(5);
                            format!("; its last output lines: {}", lines[from..].join(" | "))
                        };
                        return Err(HostFailure::Start(format!("{e}{note}")));
                    }
                };
                let reader = stream
                    .try_clone()
                    .map_err(|e| HostFailure::Start(format!("socket: {e}")))?;
                (Box::new(stream), Box::new(reader))
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let name = cfg.name.clone();
        let what = match cfg.transport {
            Transport::Stdio => "stdout",
            Transport::Unix => "its socket",
        };
        std::thread::Builder::new()
            .name(format!("host-{name}-out"))
            .spawn(move || {
                let mut r = BufReader::with_capacity(1 << 16, frames);
                loop {
                    match read_frame(&mut r) {
                        Ok(Some(msg)) => {
                            if tx.send(Ok(msg)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(format!("broke the protocol on {what}: {e}")));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| HostFailure::Start(e.to_string()))?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(Running {
            child,
            out,
            rx,
            stderr_tail: tail,
            stderr_done,
            stdout_done,
        })
    }

    /// Starts the process if it is not running, and says hello. Returns the host's hello.
    fn ensure_started(&self, slot: &mut Option<Running>) -> Result<Option<Json>, HostFailure> {
        if slot.is_some() {
            return Ok(None);
        }
        if self.generation() > 0 {
            tracing::warn!("node host '{}': starting it again", self.config.name);
        }
        let mut run = self.spawn()?;
        let id = self.next_id();
        let hello = json!({
            "type": "hello", "id": id, "protocol": PROTOCOL_VERSION,
            "comfyrs": env!("CARGO_PKG_VERSION"),
            "exchange_dir": self.exchange.display().to_string(),
            "paths": self.env_paths,
        });
        let reply = send(&mut run, &hello)
            .and_then(|_| wait_for(&mut run, id, self.config.start_timeout))
            .map_err(|f| self.fail_start(&mut run, f))?;
        let protocol = reply["protocol"].as_u64();
        if reply["type"] != "hello" || protocol != Some(PROTOCOL_VERSION) {
            let f = HostFailure::Start(format!(
                "answered hello with {reply}; expected {{\"type\": \"hello\", \"protocol\": \
                 {PROTOCOL_VERSION}}}"
            ));
            return Err(self.fail_start(&mut run, f));
        }
        *slot = Some(run);
        Ok(Some(reply))
    }

    fn fail_start(&self, run: &mut Running, f: HostFailure) -> HostFailure {
        kill(run);
        let detail = f.to_string();
        HostFailure::Start(format!("{detail}{}", stderr_note(run)))
    }

    /// Starts the host (if needed) and asks for its nodes: `(hello, nodes reply)`.
    pub fn start_and_list(&self) -> Result<(Json, Json), HostFailure> {
        let mut slot = self.lock();
        let hello = match self.ensure_started(&mut slot)? {
            Some(h) => h,
            None => json!({}),
        };
        let run = slot.as_mut().expect("started");
        let id = self.next_id();
        let reply = send(run, &json!({"type": "list_nodes", "id": id}))
            .and_then(|_| wait_for(run, id, self.config.start_timeout));
        match reply {
            Ok(r) if r["type"] == "nodes" && r["nodes"].is_object() => Ok((hello, r)),
            Ok(r) => {
                let mut run = slot.take().expect("started");
                Err(self.fail_start(
                    &mut run,
                    HostFailure::Start(format!(
                        "answered list_nodes with {}; expected a \"nodes\" message with a \
                         \"nodes\" object",
                        short(&r)
                    )),
                ))
            }
            Err(f) => {
                let mut run = slot.take().expect("started");
                Err(self.fail_start(&mut run, f))
            }
        }
    }

    /// Sends one request and waits for its answer, handing its `progress` messages and any
    /// `send_sync` message to `on_message` (`log` messages go to the log). `interrupted` is polled while waiting: once it says yes, the host is sent
    /// `interrupt` and given the grace period to stop.
    pub fn call(
        &self,
        request: Json,
        on_message: &mut dyn FnMut(&Json),
        interrupted: &dyn Fn() -> bool,
    ) -> Reply {
        let slot = self.lock();
        self.call_in(slot, request, on_message, interrupted)
    }

    /// [`Host::call`] once the host is free, waiting at most `wait` for a call in progress to
    /// end; `None` when it is still busy then (validation must not wait for a long node).
    pub fn call_when_free(&self, request: Json, wait: Duration) -> Option<Reply> {
        let deadline = Instant::now() + wait;
        loop {
            match self.running.try_lock() {
                Ok(slot) => return Some(self.call_in(slot, request, &mut |_| {}, &|| false)),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    return Some(self.call_in(p.into_inner(), request, &mut |_| {}, &|| false))
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn call_in(
        &self,
        mut slot: std::sync::MutexGuard<'_, Option<Running>>,
        mut request: Json,
        on_message: &mut dyn FnMut(&Json),
        interrupted: &dyn Fn() -> bool,
    ) -> Reply {
        // A host that died while idle is replaced before the call: no node fails for it.
        if let Some(run) = slot.as_mut() {
            if let Ok(Some(status)) = run.child.try_wait() {
                tracing::warn!(
                    "node host '{}' exited while idle ({}){}",
                    self.config.name,
                    describe_status(status),
                    stderr_note(run)
                );
                let mut run = slot.take().expect("checked");
                kill(&mut run);
            }
        }
        if let Err(f) = self.ensure_started(&mut slot) {
            return Reply::Failure(f);
        }
        let run = slot.as_mut().expect("started");
        // Drop what an idle host said (logs) and pass on released handles.
        while let Ok(msg) = run.rx.try_recv() {
            if let Ok(m) = msg {
                log_message(&self.config.name, &m);
            }
        }
        let released: Vec<Json> = std::mem::take(
            &mut *self
                .pending_release
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if !released.is_empty() {
            let _ = send(run, &json!({"type": "release", "handles": released}));
        }
        let id = self.next_id();
        request["id"] = json!(id);
        if let Err(f) = send(run, &request) {
            return Reply::Failure(self.crashed(&mut slot, f));
        }
        let start = Instant::now();
        let mut interrupt_sent: Option<Instant> = None;
        loop {
            let run = slot.as_mut().expect("running");
            match run.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Ok(msg)) => {
                    let ty = msg["type"].as_str().unwrap_or("");
                    if ty == "log" {
                        log_message(&self.config.name, &msg);
                    } else if ty == "send_sync" {
                        // Node code's frontend messages, whichever request they came with.
                        on_message(&msg);
                    } else if msg["id"].as_u64() != Some(id) {
                        // An answer to an earlier, abandoned request: ignore.
                    } else if ty == "progress" {
                        on_message(&msg);
                    } else if ty == "interrupted" {
                        return Reply::Interrupted;
                    } else {
                        return Reply::Done(msg);
                    }
                }
                Ok(Err(protocol)) => {
                    return Reply::Failure(self.crashed(&mut slot, HostFailure::Crashed(protocol)))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Reply::Failure(
                        self.crashed(&mut slot, HostFailure::Crashed("exited".into())),
                    )
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(sent) = interrupt_sent {
                        if sent.elapsed() > self.config.interrupt_grace {
                            tracing::warn!(
                                "node host '{}' did not stop within {:?} of an interrupt: \
                                 killing it",
                                self.config.name,
                                self.config.interrupt_grace
                            );
                            let mut run = slot.take().expect("running");
                            kill(&mut run);
                            return Reply::Interrupted;
                        }
                    } else if interrupted() {
                        let _ = send(run, &json!({"type": "interrupt", "id": id}));
                        interrupt_sent = Some(Instant::now());
                    }
                    if start.elapsed() > self.config.call_timeout {
                        let mut run = slot.take().expect("running");
                        kill(&mut run);
                        return Reply::Failure(HostFailure::Timeout(self.config.call_timeout));
                    }
                }
            }
        }
    }

    /// Reaps a dead (or misbehaving) host and describes how it ended.
    fn crashed(&self, slot: &mut Option<Running>, f: HostFailure) -> HostFailure {
        let Some(mut run) = slot.take() else { return f };
        // Give an exiting process a moment to be reaped so its status can be reported.
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = run.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(&mut run);
        let status = status.or_else(|| run.child.try_wait().ok().flatten());
        let how = match (&f, status) {
            (HostFailure::Crashed(what), Some(s)) => format!("{what} ({})", describe_status(s)),
            (HostFailure::Crashed(what), None) => what.clone(),
            (other, _) => format!("{other:?}"),
        };
        HostFailure::Crashed(format!("{how}{}", stderr_note(&run)))
    }

    /// Stops the host (server shutdown).
    pub fn shutdown(&self) {
        let mut slot = self.lock();
        if let Some(mut run) = slot.take() {
            let _ = send(&mut run, &json!({"type": "shutdown"}));
            kill(&mut run);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.exchange);
    }
}

/// Copies a host's output lines to comfyrs' console and the crash-report tail, on a thread;
/// `done` is dropped when the stream ends.
fn log_lines(
    name: &str,
    stream: &str,
    from: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    done: Option<std::sync::mpsc::Sender<()>>,
) -> Result<(), HostFailure> {
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("host-{name}-{stream}"))
        .spawn(move || {
            let _done = done;
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { return };
                // Straight to comfyrs' console, as ComfyUI shows packs' output (import
                // errors included) whatever the log level.
                eprintln!("[{name}] {line}");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
        .map(|_| ())
        .map_err(|e| HostFailure::Start(e.to_string()))
}

/// Waits for the host to connect to its socket (while it runs, up to `limit`).
fn accept_host(
    listener: &std::os::unix::net::UnixListener,
    child: &mut Child,
    limit: Duration,
    path: &Path,
) -> Result<std::os::unix::net::UnixStream, HostFailure> {
    listener
        .set_nonblocking(true)
        .map_err(|e| HostFailure::Start(format!("socket: {e}")))?;
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| HostFailure::Start(format!("socket: {e}")))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(HostFailure::Start(format!("socket: {e}"))),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HostFailure::Start(format!(
                "exited ({}) without connecting to COMFYRS_NODE_SOCKET ({})",
                describe_status(status),
                path.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(HostFailure::Start(format!(
                "did not connect to COMFYRS_NODE_SOCKET ({}) within {}s: does it support \
                 the unix transport (docs/node-protocol.md)?",
                path.display(),
                limit.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn send(run: &mut Running, msg: &Json) -> Result<(), HostFailure> {
    write_frame(&mut run.out, msg)
        .map_err(|e| HostFailure::Crashed(format!("cannot be written to ({e})")))
}

/// Waits for the answer to request `id` (start-up: no progress expected).
fn wait_for(run: &mut Running, id: u64, limit: Duration) -> Result<Json, HostFailure> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run.rx.recv_timeout(left) {
            Ok(Ok(msg)) if msg["id"].as_u64() == Some(id) => return Ok(msg),
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return Err(HostFailure::Crashed(e)),
            Err(RecvTimeoutError::Disconnected) => {
                let status = run
                    .child
                    .wait()
                    .map(describe_status)
                    .unwrap_or_else(|e| e.to_string());
                return Err(HostFailure::Crashed(format!("exited ({status})")));
            }
            Err(RecvTimeoutError::Timeout) => return Err(HostFailure::Timeout(limit)),
        }
    }
}

fn kill(run: &mut Running) {
    #[cfg(unix)]
    {
        let pid = run.child.id() as i32;
        // The whole process group (the host and anything it started).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = run.child.kill();
    let _ = run.child.wait();
    // Let the stderr reader catch the last lines (bounded: a stray grandchild may hold it).
    let _ = run.stderr_done.recv_timeout(Duration::from_secs(1));
    if let Some(d) = &run.stdout_done {
        let _ = d.recv_timeout(Duration::from_secs(1));
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&s) {
        return format!("killed by signal {sig}");
    }
    match s.code() {
        Some(c) => format!("exit status {c}"),
        None => s.to_string(),
    }
}

fn stderr_note(run: &Running) -> String {
    let tail = run.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = tail.iter().rev().take(5).map(String::as_str).collect();
    let lines: Vec<&str> = lines.into_iter().rev().collect();
    format!("; its last stderr lines: {}", lines.join(" | "))
}

fn log_message(host: &str, msg: &Json) {
    let text = msg["message"].as_str().unwrap_or("");
    match msg["level"].as_str() {
        Some("error") => eprintln!("[{host}] error: {text}"),
        Some("warning") => eprintln!("[{host}] warning: {text}"),
        _ => eprintln!("[{host}] {text}"),
    }
}

pub(crate) fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}...", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}
