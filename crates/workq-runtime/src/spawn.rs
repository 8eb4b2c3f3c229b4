//! Starting a job: its own session and process group, the parent-death signal, a log file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use workq_core::ClaimedJob;

/// A started job process.
pub struct Started {
    /// The child handle (to wait on).
    pub child: Child,
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Its kernel start time.
    pub start_time: u64,
    /// Its combined stdout/stderr log.
    pub log_path: PathBuf,
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

/// Describes why a spawn failed, for the job's `last_error`.
pub fn describe_spawn_error(job: &ClaimedJob, e: &io::Error) -> String {
    let program = job.spec.argv.first().map(String::as_str).unwrap_or("");
    match e.kind() {
        io::ErrorKind::NotFound => match &job.spec.cwd {
            Some(cwd) if !Path::new(cwd).is_dir() => {
                format!("cannot start: working directory {cwd} does not exist")
            }
            _ => format!("cannot start: command not found: {program}"),
        },
        io::ErrorKind::PermissionDenied => {
            format!("cannot start {program}: permission denied (is it executable?)")
        }
        _ => format!("cannot start {program}: {e}"),
    }
}

/// Starts `job` in a new session with stdout and stderr appended to its attempt log. Its
/// environment carries the marker (store id, job, attempt, lease) that identifies its processes.
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
    // Named, and of kind Other, so it is never mistaken for a missing command.
    let log = open_log(&log_path).map_err(|e| {
        io::Error::other(format!(
            "cannot open its log file {}: {e}",
            log_path.display()
        ))
    })?;
    let log_err = log.try_clone()?;
    let argv: Vec<String> = match &job.spec.container {
        None => job.spec.argv.clone(),
        Some(c) => {
            let cwd = match &job.spec.cwd {
                Some(d) => d.clone(),
                None => std::env::current_dir()?.display().to_string(),
            };
            let mut env = job.spec.env.clone();
            env.insert("WORKQ_JOB_ID".into(), job.id.to_string());
            env.insert("WORKQ_ATTEMPT".into(), job.attempt.to_string());
            env.insert("WORKQ_QUEUE".into(), job.spec.queue.clone());
            let name = workq_core::Container::name(store_id, job.id, job.attempt);
            c.argv(&name, &cwd, &env, &job.spec.argv)
        }
    };
    let program = &argv[0];
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .envs(&job.spec.env)
        .env("WORKQ_JOB_ID", job.id.to_string())
        .env("WORKQ_ATTEMPT", job.attempt.to_string())
        .env("WORKQ_QUEUE", &job.spec.queue)
        .env("WORKQ_LEASE", job.lease.to_string())
        .env("WORKQ_STORE_ID", store_id)
        .env_remove(crate::ready::READY_FD_ENV)
        .env_remove(crate::SETTINGS_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    if let Some(cwd) = &job.spec.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: between fork and exec we call only async-signal-safe functions.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || child_setup(true, parent, libc::SIGKILL));
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    Ok(Started {
        child,
        pid,
        start_time: crate::procinfo::start_time(pid),
        log_path,
    })
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
    fd: std::os::unix::io::RawFd,
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
