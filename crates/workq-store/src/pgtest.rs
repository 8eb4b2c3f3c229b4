//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into a temporary
//! directory, `postgres` listening on 127.0.0.1 and a unix socket in that directory only (plus
//! any addresses a test asks for, see [`Cluster::start_listening`]), and everything stopped (by
//! its pid) and removed on drop.
//!
//! PostgreSQL refuses to run as root, so when the caller is root the cluster runs as the
//! unprivileged `postgres` user. The server binaries are found in `WORKQ_PG_BIN`, the newest
//! `/usr/lib/postgresql/*/bin`, or on PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    server: Option<Child>,
    owner: Option<(u32, u32)>,
    die_with_thread: bool,
    /// Addresses listened on besides 127.0.0.1.
    extra: Vec<std::net::Ipv4Addr>,
}

/// The one cluster shared by every test of this process, or why there is none. The server dies
/// with the process (parent-death signal from a thread that never exits), since statics are
/// never dropped.
pub fn shared() -> Result<&'static std::sync::Mutex<Cluster>, String> {
    static CLUSTER: std::sync::OnceLock<Result<std::sync::Mutex<Cluster>, String>> =
        std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("pg-keeper".into())
                .spawn(move || {
                    let _ = tx.send(Cluster::start_with(true, &[]));
                    // This thread is the server's parent for the parent-death signal: it must
                    // live as long as the process.
                    loop {
                        std::thread::park();
                    }
                });
            if let Err(e) = spawned {
                return Err(format!("cannot start the keeper thread: {e}"));
            }
            rx.recv()
                .map_err(|e| format!("the keeper thread died: {e}"))?
                .map(std::sync::Mutex::new)
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// Removes clusters left behind by test processes that are gone (statics are never dropped).
fn remove_stale_dirs() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("workq-pg-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) == 0 };
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Where the server binaries are, if anywhere.
pub fn find_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WORKQ_PG_BIN").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return d.join("initdb").is_file().then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

fn postgres_user() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy two integers.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

impl Cluster {
    /// Creates and starts a cluster with a trusted superuser `workq`, stopped on drop.
    pub fn start() -> Result<Cluster, String> {
        Cluster::start_with(false, &[])
    }

    /// Like [`Cluster::start`], and also listening on each address of `nets` (`(address,
    /// prefix length)`, e.g. the root-namespace end of a test's veth link), trusting connections
    /// from the network each is on: tests put "hosts" in network namespaces that reach the
    /// server only through such links. The addresses must be configured before the call, since
    /// the server binds them at start.
    pub fn start_listening(nets: &[(std::net::Ipv4Addr, u8)]) -> Result<Cluster, String> {
        Cluster::start_with(false, nets)
    }

    fn start_with(
        die_with_thread: bool,
        nets: &[(std::net::Ipv4Addr, u8)],
    ) -> Result<Cluster, String> {
        remove_stale_dirs();
        let bin = find_bin().ok_or("no PostgreSQL server binaries (initdb) found")?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner =
            if root {
                Some(postgres_user().ok_or(
                    "running as root, but there is no `postgres` user to run the server as",
                )?)
            } else {
                None
            };
        let base = std::env::temp_dir().join(format!(
            "workq-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&base)
            .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        if let Some((uid, gid)) = owner {
            chown_tree(&base, uid, gid)
                .map_err(|e| format!("cannot chown {}: {e}", base.display()))?;
        }
        let mut c = Cluster {
            dir: base,
            bin,
            port: free_port().map_err(|e| format!("no free port: {e}"))?,
            server: None,
            owner,
            die_with_thread,
            extra: nets.iter().map(|(a, _)| *a).collect(),
        };
        let data = c.dir.join("data");
        let out = c
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "workq",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if !nets.is_empty() {
            c.trust_networks(&data, nets)?;
        }
        c.launch()?;
        Ok(c)
    }

    /// Adds a `trust` line to `pg_hba.conf` for the network of each of `nets`.
    fn trust_networks(&self, data: &Path, nets: &[(std::net::Ipv4Addr, u8)]) -> Result<(), String> {
        use std::io::Write;
        let hba = data.join("pg_hba.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&hba)
            .map_err(|e| format!("cannot open {}: {e}", hba.display()))?;
        for &(addr, prefix) in nets {
            if prefix > 32 {
                return Err(format!("bad prefix length /{prefix} for {addr}"));
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let network = std::net::Ipv4Addr::from(u32::from(addr) & mask);
            writeln!(f, "host all all {network}/{prefix} trust")
                .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn launch(&mut self) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let data = self.dir.join("data");
        let log = std::fs::File::create(self.dir.join("server.log"))
            .map_err(|e| format!("cannot create the server log: {e}"))?;
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(self.dir.join("server.log"), Some(uid), Some(gid));
        }
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = self.command("postgres");
        if self.die_with_thread {
            // SAFETY: prctl is async-signal-safe; it runs after the uid change, which would
            // otherwise clear it.
            unsafe {
                cmd.pre_exec(|| {
                    #[cfg(target_os = "linux")]
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGQUIT as libc::c_ulong,
                        0,
                        0,
                        0,
                    );
                    Ok(())
                });
            }
        }
        let listen = std::iter::once("127.0.0.1".to_string())
            .chain(self.extra.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(",");
        let child = cmd
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c"])
            .arg(format!("listen_addresses={listen}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        self.server = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok()
            {
                return Ok(());
            }
            if let Some(s) = self.server.as_mut() {
                if let Ok(Some(status)) = s.try_wait() {
                    return Err(format!("postgres exited ({status}): {}", self.log_tail()));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not accept connections: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// A URL for database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://workq@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for database `db` on this cluster through `addr`, one of the addresses given to
    /// [`Cluster::start_listening`].
    pub fn url_via(&self, addr: std::net::Ipv4Addr, db: &str) -> String {
        format!("postgres://workq@{addr}:{}/{db}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|c| c.id())
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_db(&self, name: &str) -> Result<String, String> {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| format!("cannot connect: {e}"))?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .and_then(|_| c.batch_execute(&format!("CREATE DATABASE \"{name}\"")))
            .map_err(|e| {
                let detail = e.as_db_error().map(|d| d.message().to_string());
                format!(
                    "cannot create database {name}: {}",
                    detail.unwrap_or(e.to_string())
                )
            })?;
        Ok(self.url(name))
    }

    /// Restarts the server the hard way (like `pg_ctl restart -m immediate`): SIGQUIT, then
    /// start again on the same port.
    pub fn restart_immediate(&mut self) -> Result<(), String> {
        self.stop_immediate();
        self.launch()
    }

    /// Stops the server at once (SIGQUIT, like `pg_ctl stop -m immediate`); the data stays.
    pub fn stop_immediate(&mut self) {
        if let Some(mut s) = self.server.take() {
            // SAFETY: signalling the server process we started.
            unsafe {
                libc::kill(s.id() as i32, libc::SIGQUIT);
            }
            let _ = s.wait();
        }
    }

    /// Starts the server again after [`Cluster::stop_immediate`].
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            // SIGQUIT: immediate shutdown; children exit with the postmaster.
            // SAFETY: signalling the server process we started.
            unsafe {
                libc::kill(s.id() as i32, libc::SIGQUIT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = s.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
