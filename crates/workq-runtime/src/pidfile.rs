//! PID files that cannot lie (ARCHITECTURE.md §5.8).
//!
//! `run/<name>.pid` holds JSON naming the worker process and, for a daemon, its monitor. The
//! process that owns the file (the monitor, or a foreground worker) holds an exclusive `flock`
//! on it for its whole life, so "is it running?" is answered by trying the lock: the kernel
//! drops it when the owner dies, and stale or reused PIDs cannot fool it. The content is
//! replaced atomically (temp file, locked, renamed over), so a reader never sees half of it.
//! A process named by a file is only ever signalled after its start time and boot id match.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::procinfo;

/// What a PID file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PidInfo {
    /// The worker process (the one that runs jobs).
    pub pid: i32,
    /// Its kernel start time, in clock ticks since boot.
    pub start_time: u64,
    /// The kernel boot id when it started.
    pub boot_id: String,
    /// Its registry id, once registered.
    pub worker_id: Option<i64>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Worker name.
    pub name: String,
    /// The monitor process of a daemon.
    #[serde(default)]
    pub monitor_pid: Option<i32>,
    /// The monitor's kernel start time.
    #[serde(default)]
    pub monitor_start_time: Option<u64>,
    /// `crash-looping` once the monitor gave up (left behind, unlocked).
    #[serde(default)]
    pub state: Option<String>,
    /// How it was started ([`crate::WorkerSettings`], or [`crate::ServerSettings`] for the
    /// server, as JSON).
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    /// The server's bound address (`serve -d` only). Left out when unset, so a worker's file
    /// reads exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl PidInfo {
    /// True if the worker process named here is alive and is the same process.
    pub fn worker_alive(&self) -> bool {
        same_boot(&self.boot_id) && procinfo::process_alive(self.pid, self.start_time)
    }

    /// True if the monitor named here is alive and is the same process.
    pub fn monitor_alive(&self) -> bool {
        match (self.monitor_pid, self.monitor_start_time) {
            (Some(pid), Some(st)) => same_boot(&self.boot_id) && procinfo::process_alive(pid, st),
            _ => false,
        }
    }
}

fn same_boot(boot: &str) -> bool {
    let now = procinfo::boot_id();
    boot == now || now == "unknown"
}

/// Path of the PID file of worker `name`.
pub fn path_for(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

/// The name in the background server's PID file.
pub const SERVER_NAME: &str = "serve";

/// Path of the background server's PID file: `run/serve/serve.pid`. A directory of its own, so
/// it cannot be the file of a worker named `serve` (`run/serve.pid`), and [`list`], which
/// takes every `run/*.pid` for a worker's, never returns it.
pub fn server_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SERVER_NAME).join(format!("{SERVER_NAME}.pid"))
}

/// What a look at a PID file found.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// No PID file.
    Missing,
    /// Its lock is held: the owner lives. `problem` says what is wrong with the content, if
    /// anything (then `info` may be `None`, and nothing may be signalled on its word alone).
    Live {
        /// The content, if readable.
        info: Option<PidInfo>,
        /// What is wrong with it.
        problem: Option<String>,
    },
    /// The lock is free but the worker it names still runs as the same process (its monitor
    /// was killed and the worker is finishing its jobs).
    Orphan(PidInfo),
    /// The monitor gave up restarting the worker.
    CrashLooping(PidInfo),
    /// Nobody owns it: safe to remove. `reason` is one plain sentence.
    Stale {
        /// Why it is stale.
        reason: String,
        /// The content, if readable.
        info: Option<PidInfo>,
    },
    /// It cannot be opened, so nothing can be said for sure.
    Unreadable(String),
}

impl Probe {
    /// True if a process of this worker runs.
    pub fn is_running(&self) -> bool {
        matches!(self, Probe::Live { .. } | Probe::Orphan(_))
    }

    /// The content, if any was readable.
    pub fn info(&self) -> Option<&PidInfo> {
        match self {
            Probe::Live { info, .. } | Probe::Stale { info, .. } => info.as_ref(),
            Probe::Orphan(i) | Probe::CrashLooping(i) => Some(i),
            Probe::Missing | Probe::Unreadable(_) => None,
        }
    }
}

fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn parse(text: &str) -> Result<PidInfo, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("it is empty".into());
    }
    if let Ok(pid) = t.parse::<i64>() {
        return Err(format!(
            "it holds a bare number ({pid}) instead of workq's JSON, so the process cannot be verified"
        ));
    }
    serde_json::from_str::<PidInfo>(t).map_err(|e| {
        if e.is_eof() {
            "it is truncated".to_string()
        } else {
            format!("it is not a workq PID file ({e})")
        }
    })
}

/// Looks at the PID file at `path` without changing it.
pub fn probe(path: &Path) -> Probe {
    probe_looking_again(path, &mut || {})
}

/// [`probe`], calling `before_looking_again` whenever a look was inconsistent and another
/// follows (so a test can end the lock holder exactly there).
fn probe_looking_again(path: &Path, before_looking_again: &mut dyn FnMut()) -> Probe {
    // A process that exits while we look can make one pass inconsistent (lock held, pid gone):
    // look again a few times before reporting what we saw.
    let mut last = Probe::Missing;
    for round in 0..5 {
        let Some(seen) = probe_once(path) else {
            // Replaced while we looked: look at the new file.
            continue;
        };
        last = seen;
        let settled = match &last {
            Probe::Live {
                info: Some(i),
                problem: None,
            } => i.worker_alive() || i.monitor_alive(),
            Probe::Live { info: None, .. } => false,
            _ => true,
        };
        if settled {
            return last;
        }
        if round < 4 {
            before_looking_again();
            std::thread::sleep(std::time::Duration::from_millis(40));
        }
    }
    if let Probe::Live {
        info: Some(i),
        problem: None,
    } = &last
    {
        return Probe::Live {
            problem: Some(format!(
                "its lock is held but the processes it names (worker {}{}) are gone",
                i.pid,
                i.monitor_pid
                    .map(|m| format!(", monitor {m}"))
                    .unwrap_or_default()
            )),
            info: Some(i.clone()),
        };
    }
    last
}

/// One look; `None` if the file was replaced while we looked.
fn probe_once(path: &Path) -> Option<Probe> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(Probe::Missing),
        Err(e) => {
            return Some(Probe::Unreadable(format!(
                "cannot read PID file {}: {e}",
                path.display()
            )))
        }
    };
    let mut text = String::new();
    let content = match file.read_to_string(&mut text) {
        Ok(_) => parse(&text),
        Err(e) => Err(format!("it cannot be read ({e})")),
    };
    Some(match try_lock(&file) {
        Ok(false) => match content {
            Ok(info) => Probe::Live {
                info: Some(info),
                problem: None,
            },
            Err(why) => Probe::Live {
                info: None,
                problem: Some(format!(
                    "its lock is held by a live process{} but {why}",
                    holder_note(path)
                )),
            },
        },
        Ok(true) => {
            // The owner may have renamed a new file over this one and dropped its lock.
            if !same_inode(&file, path) {
                return None;
            }
            // We hold the lock now only for the moment of looking; dropping `file` releases it.
            unowned(path, content)
        }
        Err(e) => Probe::Unreadable(format!("cannot lock PID file {}: {e}", path.display())),
    })
}

/// What an unlocked PID file with `content` says: nobody owns it.
fn unowned(path: &Path, content: Result<PidInfo, String>) -> Probe {
    match content {
        Err(why) => Probe::Stale {
            reason: format!("PID file {} is stale: {why}", path.display()),
            info: None,
        },
        Ok(info) if info.state.as_deref() == Some("crash-looping") => Probe::CrashLooping(info),
        Ok(info) if info.worker_alive() => Probe::Orphan(info),
        Ok(info) => Probe::Stale {
            reason: stale_reason(path, &info),
            info: Some(info),
        },
    }
}

/// Why the worker an unlocked PID file names is not running.
fn stale_reason(path: &Path, info: &PidInfo) -> String {
    if !same_boot(&info.boot_id) {
        format!(
            "PID file {} is stale: it was written before the last reboot",
            path.display()
        )
    } else if procinfo::process_alive(info.pid, 0) {
        format!(
            "PID file {} is stale: pid {} now belongs to an unrelated process (it started at a different time), which will not be touched",
            path.display(),
            info.pid
        )
    } else {
        format!(
            "PID file {} is stale: process {} is gone",
            path.display(),
            info.pid
        )
    }
}

fn holder_note(path: &Path) -> String {
    match workq_store::lock_holder(path) {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// Removes the PID file at `path` if nobody holds its lock. Returns true if it removed it.
pub fn remove_if_unlocked(path: &Path) -> io::Result<bool> {
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // Unreadable: without its lock we cannot know that nobody owns it.
        Err(e) => return Err(e),
    };
    // Another process may hold the lock for a moment (a probe, or a child between fork and
    // exec that still shares a probe's descriptor): try a few times before calling it owned.
    let mut locked = false;
    for _ in 0..10 {
        if try_lock(&file)? {
            locked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if !locked {
        return Ok(false);
    }
    if same_inode(&file, path) {
        std::fs::remove_file(path)?;
        return Ok(true);
    }
    Ok(false)
}

fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// A PID file owned by this process: its lock is held until [`PidFile::release`] or exit.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

/// Why a PID file could not be taken.
#[derive(Debug)]
pub enum AcquireError {
    /// Another live process owns it.
    Running(Box<Probe>),
    /// The file or its directory cannot be used.
    Io(io::Error),
}

impl PidFile {
    /// Takes the PID file at `path`, replacing a stale one. `on_stale` hears why an old file
    /// was stale (to log it). Fails with [`AcquireError::Running`] if a live process owns it.
    pub fn acquire(path: &Path, on_stale: &mut dyn FnMut(&str)) -> Result<PidFile, AcquireError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(AcquireError::Io)?;
        }
        for _ in 0..20 {
            match probe(path) {
                Probe::Missing => {}
                p @ (Probe::Live { .. } | Probe::Orphan(_)) => {
                    return Err(AcquireError::Running(Box::new(p)))
                }
                Probe::Stale { reason, .. } => on_stale(&format!("{reason}; replacing it")),
                Probe::CrashLooping(info) => on_stale(&format!(
                    "PID file {} records a crash-looping {}; starting afresh",
                    path.display(),
                    // Only the background server's settings have an address.
                    if info
                        .settings
                        .as_ref()
                        .is_some_and(|s| s.get("listen").is_some())
                    {
                        "server"
                    } else {
                        "worker"
                    }
                )),
                Probe::Unreadable(why) => {
                    // Its owner may live: never replace a file whose lock we cannot test.
                    return Err(AcquireError::Io(io::Error::other(format!(
                        "{why}; fix its permissions or remove it if no worker of this name runs"
                    ))));
                }
            }
            if let Some(file) = swap_in(path)? {
                return Ok(PidFile {
                    path: path.to_path_buf(),
                    file,
                });
            }
        }
        Err(AcquireError::Io(io::Error::other(format!(
            "PID file {} keeps changing under us; is another `workq worker start` running?",
            path.display()
        ))))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content atomically; the lock stays held throughout.
    pub fn write(&mut self, info: &PidInfo) -> io::Result<()> {
        let json = serde_json::to_string_pretty(info).map_err(io::Error::other)?;
        let tmp = temp_path(&self.path);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        if !try_lock(&f)? {
            return Err(io::Error::other("cannot lock the new PID file"));
        }
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        // The old inode is gone from the directory; its lock goes with the old descriptor.
        self.file = f;
        Ok(())
    }

    /// Removes the file and drops the lock.
    pub fn release(self) {
        if same_inode(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Leaves the file behind with `info` (for a crash-looping record) and drops the lock.
    pub fn abandon_with(mut self, info: &PidInfo) {
        let _ = self.write(info);
    }
}

/// One attempt at putting a new, locked, empty PID file in place at `path`: the new file, or
/// `None` if another process changed the path meanwhile (look again).
fn swap_in(path: &Path) -> Result<Option<File>, AcquireError> {
    // Lock a fresh file first, then rename it into place: whoever opens the path sees a
    // locked file from the moment it appears.
    let tmp = temp_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(AcquireError::Io)?;
    if !try_lock(&file).map_err(AcquireError::Io)? {
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    // Take the old file's lock for the swap, so two starters cannot both win.
    let old = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(AcquireError::Io(e));
        }
    };
    if let Some(old) = &old {
        if !matches!(try_lock(old), Ok(true)) || !same_inode(old, path) {
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
    }
    if old.is_none() {
        // No file: link the new one in without replacing anything a racer put there.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(AcquireError::Io(e)),
        }
    } else {
        std::fs::rename(&tmp, path).map_err(AcquireError::Io)?;
    }
    Ok(Some(file))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(name)
}

/// Every PID file in `run_dir`, as (worker name, path), sorted by name.
pub fn list(run_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let worker = name.strip_suffix(".pid")?.to_string();
            Some((worker, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The identity of this process, for a PID file.
pub fn info_for_self(name: &str, worker_id: Option<i64>) -> PidInfo {
    let pid = std::process::id() as i32;
    PidInfo {
        pid,
        start_time: procinfo::start_time(pid),
        boot_id: procinfo::boot_id(),
        worker_id,
        started_at: workq_core::Timestamp::now().to_rfc3339(),
        name: name.to_string(),
        monitor_pid: None,
        monitor_start_time: None,
        state: None,
        settings: None,
        listen: None,
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_pid_file_content_is_judged_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("x.pid");
            std::fs::write(&p, &bytes).unwrap();
            // Unlocked: whatever it says, it is stale, crash-looping or (if it names this very
            // process) an orphan; never live.
            let live = matches!(probe(&p), Probe::Live { .. });
            prop_assert!(!live, "an unlocked file was judged live");
        }

        #[test]
        fn json_shaped_pid_files_are_judged_without_panicking(
            pid in any::<i64>(), st in any::<u64>(), id in proptest::option::of(any::<i64>()),
            state in proptest::option::of("[a-z-]{0,15}"),
        ) {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("x.pid");
            let text = serde_json::json!({
                "pid": pid, "start_time": st, "boot_id": "b", "worker_id": id,
                "started_at": "", "name": "x", "state": state,
            });
            std::fs::write(&p, text.to_string()).unwrap();
            let _ = probe(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_missing_file_is_missing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(probe(&d.path().join("x.pid")), Probe::Missing);
    }

    #[test]
    fn garbage_empty_and_truncated_files_are_stale_when_unlocked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        for (text, word) in [
            ("", "empty"),
            ("   \n", "empty"),
            ("12345", "bare number"),
            ("hello", "not a workq PID file"),
            ("{\"pid\": 12", "truncated"),
        ] {
            write(&p, text);
            match probe(&p) {
                Probe::Stale { reason, info: None } => {
                    assert!(reason.contains(word), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(remove_if_unlocked(&p).unwrap());
        assert!(!p.exists());
    }

    #[test]
    fn a_gone_process_is_stale_and_a_reused_pid_is_never_ours() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        let mut info = info_for_self("x", Some(1));
        info.pid = i32::MAX - 7;
        write(&p, &serde_json::to_string(&info).unwrap());
        match probe(&p) {
            Probe::Stale { reason, .. } => assert!(reason.contains("is gone"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Our own pid with another start time: a reused pid.
        let mut info = info_for_self("x", Some(1));
        info.start_time += 1;
        write(&p, &serde_json::to_string(&info).unwrap());
        match probe(&p) {
            Probe::Stale { reason, .. } => assert!(reason.contains("unrelated"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_owned_file_is_live_and_cannot_be_taken_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        let mut stale = Vec::new();
        let mut owned = PidFile::acquire(&p, &mut |s| stale.push(s.to_string())).unwrap();
        assert!(stale.is_empty());
        // Locked but still empty: live with a problem, never stale.
        assert!(matches!(probe(&p), Probe::Live { .. }));
        owned.write(&info_for_self("x", Some(7))).unwrap();
        match probe(&p) {
            Probe::Live {
                info: Some(i),
                problem: None,
            } => assert_eq!(i.worker_id, Some(7)),
            other => panic!("{other:?}"),
        }
        // flock locks belong to the open file, so a second acquire in this process fails too.
        assert!(matches!(
            PidFile::acquire(&p, &mut |_| {}),
            Err(AcquireError::Running(_))
        ));
        assert!(!remove_if_unlocked(&p).unwrap());
        owned.release();
        assert!(!p.exists());
    }

    /// An open file description of `path` holding its exclusive lock (as another process
    /// would: flock locks of two descriptions conflict even within one process).
    fn hold_lock(path: &Path) -> File {
        let f = File::open(path).unwrap();
        assert!(try_lock(&f).unwrap(), "the lock is free to take");
        f
    }

    /// Well-formed content naming a worker (and no monitor) that is gone.
    fn naming_a_gone_process(path: &Path) {
        let mut info = info_for_self("x", Some(3));
        info.pid = i32::MAX - 11;
        write(path, &serde_json::to_string(&info).unwrap());
    }

    #[test]
    fn a_held_lock_over_gone_processes_is_live_with_the_problem_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        naming_a_gone_process(&p);
        let _holder = hold_lock(&p);
        let mut looks = 0;
        match probe_looking_again(&p, &mut || looks += 1) {
            Probe::Live {
                info: Some(i),
                problem: Some(why),
            } => {
                assert_eq!(i.pid, i32::MAX - 11);
                assert!(
                    why.contains("lock is held") && why.contains("are gone"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(looks, 4, "it looked again before giving that verdict");
    }

    #[test]
    fn a_holder_that_exits_in_the_middle_of_the_check_leaves_a_stale_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        naming_a_gone_process(&p);
        let mut holder = Some(hold_lock(&p));
        let mut looks = 0;
        // The lock is held during the first look and let go right after it.
        let got = probe_looking_again(&p, &mut || {
            looks += 1;
            holder = None;
        });
        assert_eq!(looks, 1, "the first look saw the lock held");
        match got {
            Probe::Stale { reason, info } => {
                assert!(reason.contains("is gone"), "{reason}");
                assert_eq!(info.map(|i| i.pid), Some(i32::MAX - 11));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stale_file_is_replaced_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.pid");
        write(&p, "garbage");
        let mut stale = Vec::new();
        let owned = PidFile::acquire(&p, &mut |s| stale.push(s.to_string())).unwrap();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].contains("not a workq PID file"));
        assert!(matches!(probe(&p), Probe::Live { .. }));
        drop(owned);
        assert!(matches!(probe(&p), Probe::Stale { .. }));
    }
}
