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
    /// `kill`, then `rm -f`: kill and remove (for a dead worker's leftovers). Podman's `rm -f`
    /// alone stops the container first, and waits out its stop timeout (10s) if the command
    /// ignores SIGTERM; docker's kills at once. `kill` first makes both immediate.
    Remove,
}

/// Tells the engine to `action` the container `name`, without waiting (a thread reaps the
/// runtime client). Never fails: a container that is already gone is fine.
pub fn signal(runtime: &str, name: &str, action: Action) {
    let mut cmd = match action {
        Action::Stop(grace) => {
            let mut c = Command::new(runtime);
            c.args(["stop", "--time", &grace.as_secs().max(1).to_string(), name]);
            c
        }
        Action::Kill => {
            let mut c = Command::new(runtime);
            c.args(["kill", name]);
            c
        }
        // One process for both steps: the caller may be a command that exits at once (`worker
        // stop`, `workers cleanup`), and the second step must not depend on it still running.
        Action::Remove => {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                "\"$0\" kill \"$1\" >/dev/null 2>&1; exec \"$0\" rm -f \"$1\"",
                runtime,
                name,
            ]);
            c
        }
    };
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

/// The exit status of `RUNTIME run` when the engine itself failed and the container never ran.
pub const ENGINE_FAILED: i32 = 125;

/// What an exit status of `RUNTIME run` says when it is the engine's rather than the command's:
/// 125 the engine itself failed (no such image, a bad option, no daemon), 126 and 127 the
/// command inside the container could not be run or was not found (docker and podman alike).
pub fn engine_failure(code: i32) -> Option<&'static str> {
    match code {
        ENGINE_FAILED => Some("the container engine failed"),
        126 => Some("the command in the container could not run"),
        127 => Some("the command in the container was not found"),
        _ => None,
    }
}

/// How much of the end of a job's log is read for the engine's message: engines print one or
/// a few lines before they exit.
const LOG_TAIL: u64 = 8 * 1024;

/// The engine's last error line in the job's log at `log` (its combined output), if any.
pub fn engine_error_line(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL))).ok()?;
    let mut tail = Vec::new();
    f.take(LOG_TAIL).read_to_end(&mut tail).ok()?;
    last_error_line(&String::from_utf8_lossy(&tail)).map(str::to_string)
}

/// The line of an engine's output that says what went wrong: the last one that mentions an
/// error, else the last one, leaving out the "See 'docker run --help'." that docker adds.
fn last_error_line(text: &str) -> Option<&str> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_help_pointer(l))
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())?;
    // A line of a few hundred characters is enough to say what failed.
    Some(match line.char_indices().nth(300) {
        Some((i, _)) => &line[..i],
        None => line,
    })
}

/// Docker's "See 'docker run --help'." after an error (clients since 28 say "Run 'docker run
/// --help' for more information").
fn is_help_pointer(line: &str) -> bool {
    (line.starts_with("See '") || line.starts_with("Run '")) && line.contains("--help")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_engines_own_exit_statuses_are_its_failures() {
        assert!(engine_failure(125).is_some_and(|s| s.contains("engine")));
        assert!(engine_failure(126).is_some());
        assert!(engine_failure(127).is_some());
        for code in [0, 1, 2, 124, 128, 137] {
            assert_eq!(engine_failure(code), None, "{code}");
        }
    }

    #[test]
    fn the_engines_last_error_line_is_found_past_its_help_pointer() {
        let docker = "Unable to find image 'nosuch:1' locally\n\
                      docker: Error response from daemon: pull access denied for nosuch.\n\
                      See 'docker run --help'.\n";
        assert_eq!(
            last_error_line(docker),
            Some("docker: Error response from daemon: pull access denied for nosuch.")
        );
        let podman = "Trying to pull docker.io/library/nosuch:1...\nError: initializing source: reading manifest 1: manifest unknown\n";
        assert_eq!(
            last_error_line(podman),
            Some("Error: initializing source: reading manifest 1: manifest unknown")
        );
        // Docker 28 and later, with no daemon: no line says "error".
        let down = "docker: Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?\n\n\
                    Run 'docker run --help' for more information\n";
        assert_eq!(
            last_error_line(down),
            Some("docker: Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?")
        );
        // Without a line that says "error", the last line is the best there is.
        assert_eq!(
            last_error_line("output of the job\nUnable to find image 'x' locally\n\n"),
            Some("Unable to find image 'x' locally")
        );
        assert_eq!(last_error_line("\n  \n"), None);
        assert_eq!(
            last_error_line(&"é".repeat(1000)).map(|l| l.chars().count()),
            Some(300)
        );
    }

    #[test]
    fn remove_kills_then_removes_and_stop_gives_the_grace() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("calls");
        let engine = d.path().join("engine");
        std::fs::write(
            &engine,
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
        let engine = engine.display().to_string();
        let calls = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.lines().count() >= n || Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        signal(&engine, "workq-x-1-1", Action::Remove);
        assert_eq!(calls(2), "kill workq-x-1-1\nrm -f workq-x-1-1\n");
        signal(
            &engine,
            "workq-x-1-1",
            Action::Stop(Duration::from_millis(300)),
        );
        assert_eq!(calls(3).lines().last(), Some("stop --time 1 workq-x-1-1"));
    }

    #[test]
    fn the_log_is_read_from_its_end_and_a_missing_log_has_no_line() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("1.1.log");
        assert_eq!(engine_error_line(&log), None);
        let mut text = "x\n".repeat(20_000);
        text.push_str("Error: no such image\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            engine_error_line(&log).as_deref(),
            Some("Error: no such image")
        );
    }
}
