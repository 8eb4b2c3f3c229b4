//! The doorbell: a unix datagram socket per worker in `run/`, rung after a submit commits.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Longest socket path the kernel accepts (sun_path minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A bound doorbell; the socket file is removed on drop.
pub struct Doorbell {
    path: PathBuf,
    /// Cleared by the worker when it has taken a wake-up, so rings coalesce.
    pub pending: Arc<AtomicBool>,
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Path of worker `id`'s doorbell.
pub fn socket_path(run_dir: &Path, worker_id: i64) -> PathBuf {
    run_dir.join(format!("worker-{worker_id}.sock"))
}

/// Binds worker `id`'s doorbell and forwards each ring to `tx` as `wake`.
/// `Ok(None)` when the path is too long for a unix socket: the worker then relies on polling.
pub fn bind<T: Send + Clone + 'static>(
    run_dir: &Path,
    worker_id: i64,
    tx: Sender<T>,
    wake: T,
) -> std::io::Result<Option<Doorbell>> {
    let path = socket_path(run_dir, worker_id);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path)?;
    let pending = Arc::new(AtomicBool::new(false));
    let flag = pending.clone();
    std::thread::Builder::new()
        .name("workq-doorbell".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 16];
            while sock.recv(&mut buf).is_ok() {
                if !flag.swap(true, Ordering::AcqRel) && tx.send(wake.clone()).is_err() {
                    return;
                }
            }
        })?;
    Ok(Some(Doorbell { path, pending }))
}

/// Rings every worker doorbell in `run_dir`; dead sockets are skipped. Never fails.
pub fn ring_all(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let _ = sock.set_nonblocking(true);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("worker-") && name.ends_with(".sock") {
            let _ = sock.send_to(b"!", entry.path());
        }
    }
}
