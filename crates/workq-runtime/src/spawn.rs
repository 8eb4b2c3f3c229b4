//! Starting a job: its own session and process group, the parent-death signal, a log file.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::launch;

use workq_core::ClaimedJob;

/// A started job process.
pub struct Started {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Its combined stdout/stderr log.
    pub log_path: PathBuf,
    /// The pipe its output arrives on, to drain into `log_path`; `None` when it writes to the
    /// file itself (no pidfds here).
    pub output: Option<crate::output::Output>,
}

/// Path of the log of one attempt: `<logs>/<job / 1000>/<job>.<attempt>.log`.
///
/// One directory per thousand jobs, not per job: creating a directory on ext4 searches the
/// block groups for a home (Orlov), which cost 1.4 ms of kernel time per job in the drain
/// benchmark, more than spawning the job itself.
pub fn log_path(log_dir: &Path, job: i64, attempt: u32) -> PathBuf {
    log_dir
        .join(format!("{:03}", job / 1000))
        .join(format!("{job}.{attempt}.log"))
}

fn open_log(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // First job of a new thousand: make its directory, then try again.
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// How [`describe_spawn_error`] begins when the program was not found.
const NOT_FOUND: &str = "cannot start: command not found: ";
/// How [`describe_spawn_error`] ends when the program may not be executed.
const NOT_EXECUTABLE: &str = ": permission denied (is it executable?)";

/// Describes why a spawn failed, for the job's `last_error`.
pub fn describe_spawn_error(job: &ClaimedJob, e: &io::Error) -> String {
    let program = job.spec.argv.first().map(String::as_str).unwrap_or("");
    match e.kind() {
        io::ErrorKind::NotFound => match &job.spec.cwd {
            Some(cwd) if !Path::new(cwd).is_dir() => {
                format!("cannot start: working directory {cwd} does not exist")
            }
            _ => format!("{NOT_FOUND}{program}"),
        },
        io::ErrorKind::PermissionDenied => format!("cannot start {program}{NOT_EXECUTABLE}"),
        _ => format!("cannot start {program}: {e}"),
    }
}

/// The status a shell gives a command that failed to start as `error` (a spawn error's text,
/// from [`describe_spawn_error`]) says: 127 not found, 126 not executable; `None` for the
/// rest (a missing working directory, an unusable log), which a shell has no code for.
pub fn spawn_error_status(error: &str) -> Option<u8> {
    if error.starts_with(NOT_FOUND) {
        Some(workq_core::exit::COMMAND_NOT_FOUND)
    } else if error.starts_with("cannot start ") && error.ends_with(NOT_EXECUTABLE) {
        Some(workq_core::exit::NOT_EXECUTABLE)
    } else {
        None
    }
}

/// Names that `sh` runs itself (reserved words and builtins), so a line that starts with one
/// must go to the shell.
const SHELL_WORDS: &[&str] = &[
    "!", "{", "}", "case", "chdir", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in",
    "then", "until", "while", ".", ":", "alias", "bg", "break", "cd", "command", "continue",
    "echo", "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "jobs",
    "kill", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source",
    "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait",
];

/// The words of `line` when `sh -c line` would do nothing but run them as one program: no
/// quoting, expansion, redirection, operator or comment, and a first word that is neither an
/// assignment nor something the shell runs itself. GNU make takes the same shortcut.
pub fn plain_words(line: &str) -> Option<Vec<&str>> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./,:+=@%".contains(&b);
    if !line.bytes().all(|b| plain(b) || b == b' ' || b == b'\t') {
        return None;
    }
    let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let first = *words.first()?;
    if first.contains('=') || (!first.contains('/') && SHELL_WORDS.contains(&first)) {
        return None;
    }
    Some(words)
}

/// Starts `job` in a new session with stdout and stderr appended to its attempt log. Its
/// environment carries the marker (store id, job, attempt, lease) that identifies its processes.
///
/// A shell line that is just a program and its arguments (see [`plain_words`]) is executed
/// directly, which saves starting `sh`; if that cannot start, `sh -c` runs the line as usual,
/// so errors read exactly as the shell words them.
///
/// Must be called from a thread that lives as long as the job: the parent-death signal fires
/// when the spawning thread exits.
pub fn spawn_job(job: &ClaimedJob, log_dir: &Path, store_id: &str) -> io::Result<Started> {
    if job.spec.argv.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the job has an empty command",
        ));
    }
    let log_path = log_path(log_dir, job.id, job.attempt);
    let (log, output) = open_output(&log_path)?;
    let stdin = dev_null()?;
    let job_id = job.id.to_string();
    let attempt = job.attempt.to_string();
    let lease = job.lease.to_string();
    let mut set: Vec<(&str, &str)> = job
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    set.extend([
        ("WORKQ_JOB_ID", job_id.as_str()),
        ("WORKQ_ATTEMPT", attempt.as_str()),
        ("WORKQ_QUEUE", job.spec.queue.as_str()),
        ("WORKQ_LEASE", lease.as_str()),
        ("WORKQ_STORE_ID", store_id),
    ]);
    let fds = [stdin.as_raw_fd(), log.as_raw_fd(), log.as_raw_fd()];
    let mut plan = plan(job, store_id, &set, fds)?;
    plan.new_session = true;
    plan.death_signal = libc::SIGKILL;
    let pid = launch::launch(&plan)?;
    // Our copy of the write end must go, or the pipe would never report its end.
    drop(log);
    Ok(Started {
        pid,
        log_path,
        output,
    })
}

/// Where the job's stdout and stderr go: a pipe drained into the log (returned with it), or
/// the log file itself where output cannot be watched that way.
fn open_output(log_path: &Path) -> io::Result<(OwnedFd, Option<crate::output::Output>)> {
    // Errors are named, and of kind Other, so they are never mistaken for a missing command.
    let log_error = |e: io::Error| {
        io::Error::other(format!(
            "cannot open its log file {}: {e}",
            log_path.display()
        ))
    };
    // The log file itself is made when the first byte arrives (see `output`); its directory
    // must be usable now, so that a problem is this job's spawn error, not lost output.
    if crate::output::supported() {
        usable_dir(log_path).map_err(log_error)?;
        let (read, write) = crate::output::pipe()?;
        let output = crate::output::Output::new(read, log_path.to_path_buf());
        Ok((write, Some(output)))
    } else {
        Ok((OwnedFd::from(open_log(log_path).map_err(log_error)?), None))
    }
}

/// How to start the job with environment additions `set` and descriptors `fds`: in its
/// container, as a plain shell line without the shell, or as its argv.
fn plan(
    job: &ClaimedJob,
    store_id: &str,
    set: &[(&str, &str)],
    fds: [RawFd; 3],
) -> io::Result<launch::Plan> {
    // A job must not speak for its worker: not on the readiness pipe, not to systemd.
    let remove = [
        crate::ready::READY_FD_ENV,
        crate::SETTINGS_ENV,
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ];
    let cwd = job.spec.cwd.as_deref().map(OsStr::new);
    // A plain shell line, executed without the shell (see `plain_words`).
    let plain = match (&job.spec.container, job.spec.argv.as_slice()) {
        (None, [sh, c, line]) if sh == "sh" && c == "-c" => plain_words(line).map(|w| (w, line)),
        _ => None,
    };
    match (&job.spec.container, plain) {
        (Some(c), _) => {
            let argv = container_argv(job, c, store_id)?;
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            launch::Plan::new(&os(&argv), &launch::environment(set, &remove), cwd, fds)
        }
        (None, Some((words, line))) => {
            let mut env = launch::environment(set, &remove);
            // The shell would export the directory it runs in as PWD; do the same (the
            // fallback shell sets it again itself).
            let pwd = match &job.spec.cwd {
                Some(d) => Some(OsString::from(d)),
                None => std::env::current_dir().ok().map(|d| d.into_os_string()),
            };
            if let Some(pwd) = pwd {
                env.retain(|(k, _)| k != "PWD");
                env.push(("PWD".into(), pwd));
            }
            launch::Plan::new(&os(&words), &env, cwd, fds)?.or_else(&os(&["sh", "-c", line]), &env)
        }
        (None, None) => {
            let argv: Vec<&str> = job.spec.argv.iter().map(String::as_str).collect();
            launch::Plan::new(&os(&argv), &launch::environment(set, &remove), cwd, fds)
        }
    }
}

/// The container runtime's command line that runs the job in container `c`.
fn container_argv(
    job: &ClaimedJob,
    c: &workq_core::Container,
    store_id: &str,
) -> io::Result<Vec<String>> {
    let dir = match &job.spec.cwd {
        Some(d) => d.clone(),
        None => std::env::current_dir()?.display().to_string(),
    };
    let mut env = job.spec.env.clone();
    env.insert("WORKQ_JOB_ID".into(), job.id.to_string());
    env.insert("WORKQ_ATTEMPT".into(), job.attempt.to_string());
    env.insert("WORKQ_QUEUE".into(), job.spec.queue.clone());
    let name = workq_core::Container::name(store_id, job.id, job.attempt);
    Ok(c.argv(&name, &dir, &env, &job.spec.argv))
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// Makes sure the directory of `log` exists and can take new files.
fn usable_dir(log: &Path) -> io::Result<()> {
    let Some(dir) = log.parent() else {
        return Ok(());
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(dir)?,
        Err(e) => return Err(e),
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `/dev/null` for a job's stdin.
fn dev_null() -> io::Result<File> {
    File::open("/dev/null")
}

/// In the child: optionally a new session, die with the parent (unless `death_signal` is 0),
/// default signal mask.
fn child_setup(
    new_session: bool,
    parent: libc::pid_t,
    death_signal: libc::c_int,
) -> io::Result<()> {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        if new_session {
            libc::setsid();
        }
        #[cfg(target_os = "linux")]
        if death_signal != 0 {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            );
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (parent, death_signal);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    Ok(())
}

/// Sends `sig` to process group `pgid` (no-op if it is gone).
pub fn signal_group(pgid: i32, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: signalling a process group we created.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// Starts a helper process (e.g. an ephemeral worker) that gets `death_signal` when the calling
/// thread exits, with the default signal mask.
pub fn spawn_with_death_signal(mut cmd: Command, death_signal: libc::c_int) -> io::Result<Child> {
    // SAFETY: only async-signal-safe calls run in the child; see `child_setup`.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || child_setup(false, parent, death_signal));
    }
    cmd.spawn()
}

/// Starts a helper process with `fd` as its descriptor 3 (a readiness pipe), optionally in a
/// new session and with a parent-death signal (0 for none), with the default signal mask.
pub fn spawn_with_fd3(
    mut cmd: Command,
    new_session: bool,
    death_signal: libc::c_int,
    fd: RawFd,
) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls run in the child.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            child_setup(new_session, parent, death_signal)
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn spawn_errors_get_the_status_a_shell_gives_them() {
        use super::{describe_spawn_error, spawn_error_status};
        use std::io::{Error, ErrorKind};
        let job = |cwd: &str| workq_core::ClaimedJob {
            id: 1,
            lease: 1,
            attempt: 1,
            spec: workq_core::JobSpec {
                cwd: Some(cwd.into()),
                ..workq_core::JobSpec::new("q", vec!["prog".into()])
            },
        };
        let status = |cwd: &str, kind: ErrorKind| {
            spawn_error_status(&describe_spawn_error(&job(cwd), &Error::from(kind)))
        };
        assert_eq!(status("/", ErrorKind::NotFound), Some(127));
        assert_eq!(status("/", ErrorKind::PermissionDenied), Some(126));
        assert_eq!(status("/no/such/dir", ErrorKind::NotFound), None);
        assert_eq!(status("/", ErrorKind::OutOfMemory), None);
        assert_eq!(spawn_error_status("exited with status 127"), None);
    }

    #[test]
    fn only_lines_the_shell_would_run_as_one_plain_command_skip_it() {
        assert_eq!(plain_words("/bin/true"), Some(vec!["/bin/true"]));
        assert_eq!(
            plain_words("  make -C build\tVERBOSE=1 all "),
            Some(vec!["make", "-C", "build", "VERBOSE=1", "all"])
        );
        for shell in [
            "",
            "   ",
            "echo hi",
            "true",
            "cd /tmp",
            "exec foo",
            "FOO=1 make",
            "a; b",
            "a && b",
            "a | b",
            "a > f",
            "echo $HOME",
            "ls *.txt",
            "ls ~",
            "say 'hi'",
            "say \"hi\"",
            "a\\ b",
            "a # comment",
            "(a)",
            "{ a; }",
            "a &",
            "a\nb",
            "ls [ab]",
            "ls ?",
            "é",
            "if",
            "! a",
            "`a`",
        ] {
            assert_eq!(plain_words(shell), None, "{shell:?}");
        }
    }
}
