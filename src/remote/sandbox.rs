//! How a host process is started: the command, a clean environment, its working directory,
//! and optionally a bubblewrap sandbox (no network, the filesystem read-only, one writable
//! exchange folder, a private /tmp, its own process tree).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether hosts run inside bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Plain child processes.
    Off,
    /// bubblewrap when `bwrap` is installed and works, plain processes otherwise (logged).
    Auto,
    /// bubblewrap or refuse to start the host.
    On,
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SandboxMode::Off),
            "auto" => Ok(SandboxMode::Auto),
            "on" => Ok(SandboxMode::On),
            other => Err(format!("sandbox mode '{other}': expected off, auto or on")),
        }
    }
}

/// The `bwrap` binary, if installed and able to create namespaces here (containers often
/// forbid it).
pub fn bwrap_available() -> Option<PathBuf> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            let bwrap = std::env::split_paths(&path)
                .map(|d| d.join("bwrap"))
                .find(|p| p.is_file())?;
            let ok = Command::new(&bwrap)
                .args(["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/"])
                .args(["--dev", "/dev", "--proc", "/proc", "true"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(bwrap)
        })
        .clone()
}

/// Variables a host inherits from comfyrs; everything else is dropped (hosts get what they
/// are given, not comfyrs' credentials).
const PASSED_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "TERM"];

/// The command that starts a host: `argv` run in `workdir` with a clean environment plus
/// `env`, inside bubblewrap when `bwrap` is given (then `exchange` is the one writable
/// folder besides a private /tmp and `rw_binds`; `workdir` and `ro_binds` stay visible,
/// read-only, even under /tmp).
pub fn command(
    argv: &[String],
    workdir: &Path,
    env: &[(String, String)],
    exchange: &Path,
    ro_binds: &[PathBuf],
    rw_binds: &[PathBuf],
    bwrap: Option<&Path>,
) -> Command {
    let mut cmd = match bwrap {
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c.current_dir(workdir);
            c
        }
        Some(bwrap) => {
            let mut c = Command::new(bwrap);
            let ex = exchange.to_string_lossy().into_owned();
            let wd = workdir.to_string_lossy().into_owned();
            c.args(["--unshare-all", "--die-with-parent", "--new-session"])
                .args(["--ro-bind", "/", "/"])
                .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]);
            for p in ro_binds.iter().map(PathBuf::as_path).chain([workdir]) {
                let p = p.to_string_lossy();
                c.args(["--ro-bind", &p, &p]);
            }
            for p in rw_binds {
                let p = p.to_string_lossy();
                c.args(["--bind", &p, &p]);
            }
            c.args(["--bind", &ex, &ex])
                .args(["--chdir", &wd, "--"])
                .args(argv);
            c
        }
    };
    cmd.env_clear();
    for key in PASSED_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("COMFYRS_EXCHANGE_DIR", exchange);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<SandboxMode>().unwrap(), SandboxMode::Auto);
        assert!("yes"
            .parse::<SandboxMode>()
            .unwrap_err()
            .contains("off, auto or on"));
    }

    #[test]
    fn host_env_is_clean() {
        std::env::set_var("COMFYRS_TEST_SECRET", "x");
        let cmd = command(
            &["env".into()],
            Path::new("/"),
            &[("A".into(), "1".into())],
            Path::new("/tmp"),
            &[],
            &[],
            None,
        );
        let out = {
            let mut c = cmd;
            String::from_utf8(c.output().unwrap().stdout).unwrap()
        };
        assert!(out.contains("A=1\n") && out.contains("COMFYRS_EXCHANGE_DIR=/tmp\n"));
        assert!(!out.contains("COMFYRS_TEST_SECRET"), "{out}");
    }
}
