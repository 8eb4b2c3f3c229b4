//! Container execution: the runtime client (`docker` or `podman`) is the job's process; the
//! container itself lives in the engine, so stopping a job also tells the engine to stop it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to do to a job's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `stop --time N`: SIGTERM inside, SIGKILL after the grace.
    Stop(Duration),
    /// `kill`: SIGKILL now.
    Kill,
    /// `rm -f`: kill and remove (for a dead worker's leftovers).
    Remove,
}

/// Tells the engine to `action` the container `name`, without waiting (a thread reaps the
/// runtime client). Never fails: a container that is already gone is fine.
pub fn signal(runtime: &str, name: &str, action: Action) {
    let mut cmd = Command::new(runtime);
    match action {
        Action::Stop(grace) => {
            cmd.args(["stop", "--time", &grace.as_secs().max(1).to_string(), name]);
        }
        Action::Kill => {
            cmd.args(["kill", name]);
        }
        Action::Remove => {
            cmd.args(["rm", "-f", name]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(mut child) = cmd.spawn() {
        let _ = std::thread::Builder::new()
            .name("container-signal".into())
            .stack_size(64 * 1024)
            .spawn(move || child.wait());
    }
}

/// The first of `docker`, `podman` found on PATH.
pub fn detect() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    for name in ["docker", "podman"] {
        if std::env::split_paths(&path).any(|d| is_executable(&d.join(name))) {
            return Some(name.to_string());
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True if `runtime` is a path or a name found on PATH.
pub fn exists(runtime: &str) -> bool {
    if runtime.contains('/') {
        return is_executable(Path::new(runtime));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(runtime))))
        .unwrap_or(false)
}

/// Asks the engine whether it answers (`runtime version`, at most 10 s): `Err` says why not.
pub fn probe(runtime: &str) -> Result<(), String> {
    let mut child = Command::new(runtime)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {runtime}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let last = err.lines().last().unwrap_or("").trim().to_string();
                return Err(format!("`{runtime} version` failed ({status}): {last}"));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{runtime} version` did not answer within 10s"));
            }
        }
    }
}
