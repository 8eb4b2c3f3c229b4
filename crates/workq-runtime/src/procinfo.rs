//! Facts about processes and the host: identity, liveness, the job marker in the environment.

use workq_core::{JobId, WorkerRecord};

/// This host's name (`WORKQ_HOST` overrides it, e.g. to run two "hosts" on one machine).
pub fn hostname() -> String {
    if let Some(h) = std::env::var("WORKQ_HOST").ok().filter(|h| !h.is_empty()) {
        return h;
    }
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
    use std::io::Read;
    // One read into a stack buffer: this runs for every job started, and read_to_string's
    // stat and growing reads cost several times as many system calls.
    let mut buf = [0u8; 2048];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // The command name may contain spaces, parentheses and any bytes: split after the last ')'.
    let bytes = &buf[..len];
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let pgid = f.get(2)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, pgid, start))
}

/// The parent of `pid`, if it lives.
pub fn parent_pid(pid: i32) -> Option<i32> {
    stat_fields(pid).map(|f| f.1)
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

/// How long a worker on another host may go without a heartbeat before it counts as dead.
pub const HEARTBEAT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The heartbeat TTL in force: `WORKQ_HEARTBEAT_TTL` (a duration) overrides [`HEARTBEAT_TTL`].
/// Every host sharing a store must use the same value.
pub fn heartbeat_ttl() -> std::time::Duration {
    std::env::var("WORKQ_HEARTBEAT_TTL")
        .ok()
        .and_then(|v| workq_core::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(HEARTBEAT_TTL)
}

/// When a worker that cannot heartbeat stops its own jobs: 20 s before the TTL runs out (a
/// third of it for short TTLs), so they are gone before another host may rescue them.
pub fn fence_after() -> std::time::Duration {
    let ttl = heartbeat_ttl();
    ttl.saturating_sub(std::time::Duration::from_secs(20).min(ttl / 3))
}

/// How long a call to a store shared across hosts may go unanswered before its connection is
/// given up: half the margin between the fence point and the TTL (at most 10 s, at least
/// 500 ms), so a worker blocked in a call on a dropped network still fences before the TTL.
pub fn store_io_timeout() -> std::time::Duration {
    let margin = heartbeat_ttl().saturating_sub(fence_after());
    (margin / 2).clamp(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(10),
    )
}

/// Why a registered worker is dead, or `None` if it is alive: on this host, its process is gone
/// (or the host rebooted); on another host, its heartbeat is older than [`HEARTBEAT_TTL`].
pub fn worker_death(
    w: &WorkerRecord,
    my_host: &str,
    my_boot: &str,
    now: workq_core::Timestamp,
) -> Option<String> {
    if w.host != my_host {
        let age = now.since(w.heartbeat_at);
        let ttl = heartbeat_ttl();
        return (age > ttl).then(|| {
            format!(
                "no heartbeat from host {} for {} (limit {})",
                w.host,
                workq_core::format_duration(age),
                workq_core::format_duration(ttl)
            )
        });
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

/// True if `pid`'s environment has the variable `name` (any value): how a process that a
/// monitor started, which gets its settings there, is told apart from an unrelated one.
pub fn has_env_var(pid: i32, name: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let prefix = format!("{name}=");
    env.split(|&b| b == 0)
        .any(|var| var.starts_with(prefix.as_bytes()))
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
    if worker_death(w, my_host, my_boot, now).is_some() {
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

/// Resource use of one process, read from `/proc` without sampling (so it costs microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStats {
    /// CPU time over wall time since it started, in percent (like `ps -o %cpu`).
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Thread count.
    pub threads: u32,
    /// Time since it started.
    pub uptime: std::time::Duration,
}

/// Resource use of `pid`, or `None` if it is gone (or not on Linux).
pub fn stats(pid: i32) -> Option<ProcStats> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { f.get(i)?.parse().ok() };
    let cpu_ticks = num(11)? + num(12)?;
    let threads = num(17)? as u32;
    let start_ticks = num(19)?;
    let rss_pages = num(21)?;
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let since_boot: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = (since_boot - start_ticks as f64 / hz).max(0.0);
    let cpu_percent = if age > 0.0 {
        (cpu_ticks as f64 / hz) / age * 100.0
    } else {
        0.0
    };
    Some(ProcStats {
        cpu_percent,
        rss_bytes: rss_pages * page,
        threads,
        uptime: std::time::Duration::from_secs_f64(age),
    })
}

/// Free and total bytes on the filesystem holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        let unit = st.f_frsize as u64;
        Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
    }
}

/// A live process that carries a workq job marker of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedProcess {
    /// The process.
    pub pid: i32,
    /// Its process group.
    pub pgid: i32,
    /// The attempt it belongs to.
    pub marker: Marker,
}

/// Every live process whose environment says it belongs to a job of the store `store_id`.
pub fn marked_processes(store_id: &str) -> Vec<MarkedProcess> {
    let want_store = format!("WORKQ_STORE_ID={store_id}");
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for (pid, pgid) in all_processes() {
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut store = false;
        let (mut job, mut attempt, mut lease) = (None, None, None);
        for var in env.split(|&b| b == 0) {
            let Ok(var) = std::str::from_utf8(var) else {
                continue;
            };
            if var == want_store {
                store = true;
            } else if let Some(v) = var.strip_prefix("WORKQ_JOB_ID=") {
                job = v.parse().ok();
            } else if let Some(v) = var.strip_prefix("WORKQ_ATTEMPT=") {
                attempt = v.parse().ok();
            } else if let Some(v) = var.strip_prefix("WORKQ_LEASE=") {
                lease = v.parse().ok();
            }
        }
        if let (true, Some(job), Some(attempt), Some(lease)) = (store, job, attempt, lease) {
            if stat_fields(pid).is_some_and(|f| f.0 != 'Z') {
                out.push(MarkedProcess {
                    pid,
                    pgid,
                    marker: Marker {
                        job,
                        attempt,
                        lease,
                    },
                });
            }
        }
    }
    out
}

/// Sends `sig` to `pid` only if it is still the process that started at `start_time`.
pub fn signal_verified(pid: i32, start_time: u64, sig: libc::c_int) -> bool {
    if pid <= 1 || start_time == 0 || !process_alive(pid, start_time) {
        return false;
    }
    // SAFETY: the pid was just checked to be the same process (pid and start time match).
    unsafe { libc::kill(pid, sig) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_this_process() {
        let s = stats(std::process::id() as i32).expect("own stats");
        assert!(s.rss_bytes > 0 && s.threads >= 1);
        assert!(s.cpu_percent >= 0.0);
        assert!(stats(i32::MAX - 3).is_none());
        let (free, total) = disk_space(std::path::Path::new("/")).expect("statvfs /");
        assert!(total > 0 && free <= total);
    }

    /// A child that is killed and reaped when the test ends, even by a failed assertion.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_process_is_signalled_only_if_its_start_time_matches() {
        let mut child = Reaped(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id() as i32;
        let st = start_time(pid);
        assert!(!signal_verified(pid, st + 1, libc::SIGKILL));
        assert!(process_alive(pid, st));
        assert!(signal_verified(pid, st, libc::SIGKILL));
        let status = child.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "killed by the verified signal"
        );
    }
}
