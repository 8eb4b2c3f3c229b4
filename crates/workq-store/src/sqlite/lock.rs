//! The write lock: a `flock` on `workq.db.lock` taken before every write transaction.
//!
//! SQLite's own busy handler sleeps in growing steps and starves some writers under contention;
//! polling a non-blocking flock at a fine, capped interval gives every workq process a fair share.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file beside the database.
pub(crate) struct WriteLock {
    file: File,
    path: PathBuf,
}

/// Held while a write transaction runs; released on drop.
pub(crate) struct WriteGuard<'a> {
    lock: &'a WriteLock,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor we own; failure to unlock is impossible for a held lock.
        unsafe {
            libc::flock(self.lock.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl WriteLock {
    /// Opens (creating) the lock file.
    pub(crate) fn open(path: &Path) -> std::io::Result<WriteLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(WriteLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock, waiting up to `timeout`; `Err(waited)` if it stayed held.
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<WriteGuard<'_>, Duration> {
        let fd = self.file.as_raw_fd();
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(WriteGuard { lock: self });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK)
                && err.raw_os_error() != Some(libc::EINTR)
            {
                // A filesystem without flock support: carry on and rely on SQLite's own locking.
                return Ok(WriteGuard { lock: self });
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(waited);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

/// The pid holding a lock on `path`, read from `/proc/locks` (Linux); `None` elsewhere.
pub fn lock_holder(path: &Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let ino = meta.ino();
    // The kernel prints the device as hex major:minor (new_encode_dev layout of dev_t).
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    // The kernel hands /proc/locks out a page per read, restarting its walk by position: while
    // other processes take and drop locks, a line can be skipped. Look a few times.
    (0..3).find_map(|_| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_in(&locks, major, minor, ino)
    })
}

/// The pid (not this process) holding a lock on the file `major:minor:ino` in a copy of
/// /proc/locks.
fn holder_in(locks: &str, major: u64, minor: u64, ino: u64) -> Option<i32> {
    let me = std::process::id() as i32;
    for line in locks.lines() {
        // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = fields.iter().position(|f| f.matches(':').count() == 2) else {
            continue;
        };
        if pos == 0 {
            continue;
        }
        let mut parts = fields[pos].split(':');
        let (Some(maj), Some(min), Some(file_ino)) = (
            parts.next().and_then(|s| u64::from_str_radix(s, 16).ok()),
            parts.next().and_then(|s| u64::from_str_radix(s, 16).ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if file_ino != ino || maj != major || min != minor {
            continue;
        }
        if let Ok(pid) = fields[pos - 1].parse::<i32>() {
            if pid != me && pid > 0 {
                return Some(pid);
            }
        }
    }
    None
}
