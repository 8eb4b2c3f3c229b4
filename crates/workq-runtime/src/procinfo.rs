//! Facts about processes and the host: identity, liveness, the job marker in the environment.

use workq_core::{JobId, WorkerRecord};

/// This host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The kernel's boot id, so a reboot is never mistaken for a live worker.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Fields of `/proc/PID/stat` after the command name: (state, ppid, pgid, start time).
fn stat_fields(pid: i32) -> Option<(char, i32, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let pgid = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, pgid, start))
}

/// Kernel start time of `pid` in clock ticks since boot (0 where unknown).
pub fn start_time(pid: i32) -> u64 {
    stat_fields(pid).map(|f| f.3).unwrap_or(0)
}

/// True if `pid` runs and is the same process that started at `start` (0 = not checked).
pub fn process_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    if cfg!(target_os = "linux") {
        match stat_fields(pid) {
            Some((state, _, _, st)) => state != 'Z' && (start == 0 || st == start),
            None => false,
        }
    } else {
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }
}

/// Why a registered worker on this host is dead, or `None` if it is alive.
pub fn worker_death(w: &WorkerRecord, my_host: &str, my_boot: &str) -> Option<String> {
    if w.host != my_host {
        return None;
    }
    if w.boot_id != my_boot && my_boot != "unknown" {
        return Some("the host rebooted since it started".into());
    }
    if !process_alive(w.pid, w.pid_start_time) {
        return Some(format!("process {} is gone", w.pid));
    }
    None
}

/// The environment marker of one attempt. The lease is random per attempt, so the marker of a
/// job in one store never matches a job with the same id and attempt in another store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The job.
    pub job: JobId,
    /// The attempt number.
    pub attempt: u32,
    /// The attempt's lease.
    pub lease: i64,
}

/// True if `pid`'s environment carries `marker` (all of job id, attempt and lease).
pub fn has_marker(pid: i32, marker: Marker) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = [
        format!("WORKQ_JOB_ID={}", marker.job),
        format!("WORKQ_ATTEMPT={}", marker.attempt),
        format!("WORKQ_LEASE={}", marker.lease),
    ];
    let mut found = [false; 3];
    for var in env.split(|&b| b == 0) {
        for (i, w) in wanted.iter().enumerate() {
            if var == w.as_bytes() {
                found[i] = true;
            }
        }
    }
    found.iter().all(|f| *f)
}

/// Every live process on this host as (pid, pgid).
fn all_processes() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| stat_fields(pid).map(|f| (pid, f.2)))
        .collect()
}

/// Kills every process left over from one attempt: the members of its process group and any
/// other process carrying its marker. A process without the marker is never signalled.
/// Returns how many processes were signalled.
pub fn kill_attempt_leftovers(marker: Marker) -> usize {
    let me = std::process::id() as i32;
    let mut killed = 0;
    for (pid, pgid) in all_processes() {
        if pid == me || !has_marker(pid, marker) {
            continue;
        }
        // SAFETY: signalling a process (and its group) that carries this attempt's marker.
        unsafe {
            if pgid > 1 && pgid != me && has_marker(pgid, marker) {
                libc::killpg(pgid, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
        killed += 1;
    }
    killed
}

/// Members of process group `pgid` still alive (excluding zombies).
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|&(pid, g)| g == pgid && stat_fields(pid).is_some_and(|f| f.0 != 'Z'))
        .map(|(pid, _)| pid)
        .collect()
}

/// A worker's state as people should see it: `idle`/`busy` for a running worker, `dead` for one
/// whose process is gone, `hung` for one whose heartbeat is older than `ttl` while it lives.
pub fn display_state(
    w: &WorkerRecord,
    my_host: &str,
    my_boot: &str,
    now: workq_core::Timestamp,
    ttl: std::time::Duration,
) -> &'static str {
    use workq_core::WorkerState as S;
    if !w.state.is_live() {
        return w.state.as_str();
    }
    if worker_death(w, my_host, my_boot).is_some() {
        return "dead";
    }
    if now.since(w.heartbeat_at) > ttl {
        return "hung";
    }
    match w.state {
        S::Running if w.running_jobs > 0 => "busy",
        S::Running => "idle",
        other => other.as_str(),
    }
}
