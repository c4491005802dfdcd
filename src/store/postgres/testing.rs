//! A throwaway PostgreSQL server for tests: `initdb` in a temporary folder and `postgres` on
//! a free loopback port, started by the test itself (Debian's PostgreSQL; `.ci/run` installs
//! it). Missing binaries are a test failure with the reason, never a silent skip.
//!
//! As root (PostgreSQL refuses to run as root) the server runs as the `postgres` user, or
//! `nobody` without one. The server dies with the test process (parent-death signal), and
//! folders left by killed test runs are removed the next time one starts.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; dropping it stops the server and deletes its folder.
pub struct TempPostgres {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    tls: bool,
}

/// Where PostgreSQL's server programs are: `COMFYRS_PG_BIN`, then `pg_ctl`'s folder on PATH,
/// then the newest /usr/lib/postgresql/<version>/bin.
pub fn find_bin_dir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("COMFYRS_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut candidates: Vec<PathBuf> = vec![];
    if let Ok(path) = std::env::var("PATH") {
        for d in path.split(':') {
            if Path::new(d).join("initdb").is_file() && Path::new(d).join("postgres").is_file() {
                candidates.push(PathBuf::from(d));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .ok_or_else(|| {
            "PostgreSQL server binaries (initdb, postgres) not found: install Debian's \
             `postgresql` package (apt-get install postgresql; .ci/run does) or set \
             COMFYRS_PG_BIN to their folder"
                .to_string()
        })
}

/// The (uid, gid) to run the server as when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let out = Command::new("id").args(["-u", user]).output().ok()?;
        let gid = Command::new("id").args(["-g", user]).output().ok()?;
        if out.status.success() && gid.status.success() {
            let u = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
            let g = String::from_utf8_lossy(&gid.stdout).trim().parse().ok()?;
            return Some((u, g));
        }
    }
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Removes folders of earlier test servers whose process is gone.
fn remove_stale(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("comfyrs-pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn command(bin: &Path, prog: &str, owner: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin.join(prog));
    if let Some((u, g)) = owner {
        c.uid(u).gid(g);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

impl TempPostgres {
    /// initdb + start; panics with the reason when it cannot.
    pub fn start() -> TempPostgres {
        Self::start_with(false)
    }

    /// A server that also accepts TLS (`ssl=on`), with a certificate for `localhost` signed
    /// by a throwaway CA ([`TempPostgres::ca_cert`]); made with the `openssl` command.
    /// Plain connections are still accepted, so TLS is what the client asks for.
    pub fn start_tls() -> TempPostgres {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> TempPostgres {
        let bin = find_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let base = std::env::temp_dir();
        remove_stale(&base);
        let dir = base.join(format!(
            "comfyrs-pg-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let owner = run_as();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&dir, Some(u), Some(g)).expect("chown the server folder");
        }
        let data = dir.join("data");
        let out = command(&bin, "initdb", owner)
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
            ])
            .args(["-E", "UTF8", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            make_certs(&dir, owner);
        }
        let mut server = TempPostgres {
            port: free_port(),
            dir,
            child: None,
            bin,
            owner,
            tls,
        };
        server.start_server();
        server
    }

    /// Starts the server process (again, after [`TempPostgres::stop_server`]) on the same
    /// port and data, and waits until it accepts connections.
    pub fn start_server(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("log file");
        if let Some((u, g)) = self.owner {
            let _ = std::os::unix::fs::chown(self.dir.join("server.log"), Some(u), Some(g));
        }
        let data = self.dir.join("data");
        let mut cmd = command(&self.bin, "postgres", self.owner);
        cmd.args(["-D", data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.display()),
            ])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.tls {
            let tls = self.dir.join("tls");
            cmd.args(["-c", "ssl=on"])
                .args([
                    "-c",
                    &format!("ssl_cert_file={}", tls.join("server.crt").display()),
                ])
                .args([
                    "-c",
                    &format!("ssl_key_file={}", tls.join("server.key").display()),
                ]);
        }
        // SAFETY: prctl in the child before exec; it only sets the parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start postgres"));
        self.wait_ready();
    }

    /// Stops the server (fast shutdown: every session is cut) and waits for it to exit.
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: fast shutdown.
            // SAFETY: kill on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The CA that signed a [`TempPostgres::start_tls`] server's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// A CA that signed nothing this server has (PEM), for the failing case.
    pub fn other_ca_cert(&self) -> PathBuf {
        self.dir.join("tls/other-ca.crt")
    }

    /// Polls until the server accepts connections (its log is in the panic otherwise).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.try_sql("postgres", "SELECT 1").is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("postgres did not start within 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A new empty database on this server; returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL (simple protocol) and returns the first column of its rows, one a line.
    /// Callable outside async code only.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("SQL {sql:?} on {db}: {e}"))
    }

    fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let msgs = client.simple_query(sql).await.map_err(|e| e.to_string())?;
            let mut lines = vec![];
            for m in msgs {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    lines.push(r.get(0).unwrap_or("").to_string());
                }
            }
            Ok(lines.join("\n"))
        })
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl (the TLS tests make their certificates with it): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `localhost` it signs, and an unrelated CA, in `dir/tls`.
fn make_certs(dir: &Path, owner: Option<(u32, u32)>) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("tls folder");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=comfyrs test {ca}"),
        );
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", key.as_str(), "-out", crt.as_str(), "-days", "2"]);
        a.extend(["-subj", subj.as_str()]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&tls, &a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&tls, &a);
    std::fs::write(
        tls.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
         keyUsage=critical,digitalSignature\n",
    )
    .expect("extensions file");
    openssl(
        &tls,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    // PostgreSQL wants its key private to the server's user.
    let key = tls.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the key");
    if let Some((u, g)) = owner {
        for f in ["server.key", "server.crt"] {
            std::os::unix::fs::chown(tls.join(f), Some(u), Some(g)).expect("chown");
        }
        std::os::unix::fs::chown(&tls, Some(u), Some(g)).expect("chown");
    }
}

/// One server for the whole test process (unit tests share it, each with its own
/// database). It is started on a thread that lives as long as the process, so the
/// parent-death signal fires only when the process ends.
pub fn shared() -> &'static TempPostgres {
    static SERVER: std::sync::OnceLock<&'static TempPostgres> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server: &'static TempPostgres = Box::leak(Box::new(TempPostgres::start()));
            tx.send(server).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the postgres test server started")
    })
}
