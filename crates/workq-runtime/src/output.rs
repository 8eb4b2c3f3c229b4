//! A job's output: a pipe that the job's slot thread drains into the attempt's log file, which
//! is created when the first byte arrives.
//!
//! Creating a file per attempt up front cost more than starting the job itself on a busy ext4
//! (inode allocation), and left an empty file behind for every job that prints nothing. With a
//! pipe, silent jobs cost no file at all. The slot thread watches the pipe and the job's pidfd
//! together, so a process that escaped the job's group and still holds the pipe open cannot
//! delay noticing that the job ended.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Whether this kernel has pidfds (Linux 5.3+); without them jobs write to their log directly.
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: getpid has no preconditions.
    *SUPPORTED.get_or_init(|| pidfd_open(unsafe { libc::getpid() }).is_ok())
}

#[cfg(target_os = "linux")]
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call; the fd it returns is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_: libc::pid_t) -> io::Result<OwnedFd> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// A pipe for a job's stdout and stderr: (read end, write end), both close-on-exec; the read end
/// does not block.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two fresh descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Only the read end may be non-blocking: the job's writes must wait for a full pipe to drain.
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((read, write))
}

/// The read end of a job's pipe and the log file it fills.
pub struct Output {
    read: OwnedFd,
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    eof: bool,
    /// The last problem writing the log, reported once until it changes.
    problem: Option<String>,
}

/// What a drain found.
enum Drained {
    /// The pipe is empty for now.
    Empty,
    /// Every writer has closed it.
    Eof,
}

impl Output {
    /// Drains `read` into the log at `path`.
    pub fn new(read: OwnedFd, path: PathBuf) -> Output {
        Output {
            read,
            path,
            file: None,
            buf: Vec::new(),
            eof: false,
            problem: None,
        }
    }

    /// Moves up to `limit` bytes waiting in the pipe to the log, so that a writer faster than
    /// the log cannot keep the caller from looking at anything else. A log that cannot be
    /// written is reported through `report` and its bytes dropped: the job must never block on
    /// its output.
    fn drain(&mut self, limit: usize, report: &mut dyn FnMut(String)) -> Drained {
        if self.eof {
            return Drained::Eof;
        }
        let mut left = limit;
        while left > 0 {
            // Most jobs print nothing: their first read finds the end and needs no buffer.
            let mut probe = [0u8; 1];
            let (into, want) = if self.buf.is_empty() {
                (probe.as_mut_ptr(), 1)
            } else {
                (self.buf.as_mut_ptr(), left.min(self.buf.len()))
            };
            // SAFETY: reading at most `want` bytes into a buffer of ours that holds them.
            let n = unsafe { libc::read(self.read.as_raw_fd(), into.cast(), want) };
            if n == 0 {
                self.eof = true;
                return Drained::Eof;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Drained::Empty,
                    _ => {
                        self.eof = true;
                        return Drained::Eof;
                    }
                }
            }
            left -= n as usize;
            let chunk = if self.buf.is_empty() {
                self.buf = vec![0; 64 * 1024];
                &probe[..]
            } else {
                &self.buf[..n as usize]
            };
            store(&mut self.file, &self.path, &mut self.problem, chunk, report);
        }
        Drained::Empty
    }

    /// Bytes waiting in the pipe now.
    fn waiting(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        if unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
            return 64 * 1024;
        }
        n.max(0) as usize
    }

    /// Drains the pipe until `pid` exits, then reaps it and returns its status.
    pub fn run_until_exit(
        &mut self,
        pid: libc::pid_t,
        report: &mut dyn FnMut(String),
    ) -> io::Result<std::process::ExitStatus> {
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            // Out of descriptors, say: look for the exit every 100 ms instead.
            Err(_) => return self.poll_until_exit(pid, report),
        };
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let n = if self.eof { 1 } else { 2 };
            // SAFETY: polling descriptors we own.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), n, -1) };
            if rc < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return self.poll_until_exit(pid, report);
            }
            if n == 2 && fds[1].revents != 0 {
                // One pipe's worth, then look at the pidfd again.
                self.drain(PIPE_SHARE, report);
            }
            if fds[0].revents != 0 {
                return crate::launch::wait(pid);
            }
        }
    }

    fn poll_until_exit(
        &mut self,
        pid: libc::pid_t,
        report: &mut dyn FnMut(String),
    ) -> io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        loop {
            let mut status = 0;
            // SAFETY: polling our own child.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                return Ok(std::process::ExitStatus::from_raw(status));
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut fd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling a descriptor we own.
            unsafe { libc::poll(&mut fd, if self.eof { 0 } else { 1 }, 100) };
            self.drain(PIPE_SHARE, report);
        }
    }

    /// Takes what is in the pipe now (written before the job's group was killed), and no more:
    /// a writer that escaped the group must not hold up the report of the exit. Returns true
    /// when every writer has closed the pipe, so nothing more can come.
    pub fn drain_now(&mut self, report: &mut dyn FnMut(String)) -> bool {
        // One byte past what is waiting: a read there tells whether the writers are all gone.
        let n = self.waiting();
        matches!(self.drain(n.saturating_add(1), report), Drained::Eof)
    }

    /// Drains for up to `within` while waiting for every writer to close the pipe; returns
    /// whether they all did. Members of the job's group that were just killed still hold the
    /// pipe until the kernel has finished them off, which takes a moment.
    pub fn ends_within(
        &mut self,
        within: std::time::Duration,
        report: &mut dyn FnMut(String),
    ) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Drained::Eof = self.drain(PIPE_SHARE, report) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: polling a descriptor we own.
            unsafe { libc::poll(&mut fd, 1, ms) };
        }
    }

    /// Keeps draining until every writer has closed the pipe: a process that escaped the job's
    /// group still gets its output into this attempt's log.
    pub fn drain_to_end(&mut self, report: &mut dyn FnMut(String)) {
        loop {
            if let Drained::Eof = self.drain(usize::MAX, report) {
                return;
            }
            let mut fd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling a descriptor we own.
            if unsafe { libc::poll(&mut fd, 1, -1) } < 0
                && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
            {
                return;
            }
        }
    }
}

/// Appends `chunk` to the log at `path`. A log that cannot be written is reported through
/// `report`, once until the problem changes, and the bytes are dropped.
fn store(
    file: &mut Option<File>,
    path: &std::path::Path,
    problem: &mut Option<String>,
    chunk: &[u8],
    report: &mut dyn FnMut(String),
) {
    if let Err(e) = write_log(file, path, chunk) {
        let msg = format!(
            "cannot write the job's log {}: {e}; its output is dropped until it can",
            path.display()
        );
        if problem.as_deref() != Some(msg.as_str()) {
            report(msg.clone());
            *problem = Some(msg);
        }
        *file = None;
    } else {
        *problem = None;
    }
}

/// Bytes moved per turn while also watching for the exit: one default pipe's capacity.
const PIPE_SHARE: usize = 64 * 1024;

fn write_log(file: &mut Option<File>, path: &std::path::Path, chunk: &[u8]) -> io::Result<()> {
    if file.is_none() {
        let open = || OpenOptions::new().create(true).append(true).open(path);
        let f = match open() {
            // Its directory was checked when the job started; it may have gone since.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                open()?
            }
            other => other?,
        };
        *file = Some(f);
    }
    match file {
        Some(f) => f.write_all(chunk),
        None => Ok(()),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::launch;
    use std::ffi::OsString;

    fn start(script: &str, write: &OwnedFd) -> libc::pid_t {
        let argv: Vec<OsString> = ["sh", "-c", script].iter().map(OsString::from).collect();
        let fd = write.as_raw_fd();
        let plan =
            launch::Plan::new(&argv, &launch::environment(&[], &[]), None, [fd, fd, fd]).unwrap();
        launch::launch(&plan).unwrap()
    }

    /// Kills what is left of a job's process group when the test ends, even by a failed
    /// assertion, so no test leaves a background process behind.
    struct Group(libc::pid_t);

    impl Drop for Group {
        fn drop(&mut self) {
            crate::spawn::signal_group(self.0, libc::SIGKILL);
        }
    }

    #[test]
    fn a_silent_job_leaves_no_file_and_output_lands_in_order() {
        assert!(supported());
        let dir = tempfile::tempdir().unwrap();
        let mut notes = Vec::new();
        let mut report = |m: String| notes.push(m);

        let (read, write) = pipe().unwrap();
        let pid = start("exit 3", &write);
        drop(write);
        let mut out = Output::new(read, dir.path().join("silent.log"));
        let st = out.run_until_exit(pid, &mut report).unwrap();
        assert_eq!(st.code(), Some(3));
        assert!(
            out.drain_now(&mut report),
            "nothing holds the pipe any more"
        );
        out.drain_to_end(&mut report);
        assert!(!dir.path().join("silent.log").exists());

        let (read, write) = pipe().unwrap();
        let pid = start(
            "echo one; echo two >&2; head -c 300000 /dev/zero; echo end",
            &write,
        );
        drop(write);
        let path = dir.path().join("loud.log");
        let mut out = Output::new(read, path.clone());
        out.run_until_exit(pid, &mut report).unwrap();
        out.drain_now(&mut report);
        let got = std::fs::read(&path).unwrap();
        assert!(got.starts_with(b"one\ntwo\n") && got.ends_with(b"end\n"));
        assert_eq!(got.len(), 8 + 300_000 + 4);
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn an_escaped_writer_cannot_hide_the_exit_and_still_reaches_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let c_go = std::ffi::CString::new(go.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a path we own.
        assert_eq!(unsafe { libc::mkfifo(c_go.as_ptr(), 0o600) }, 0);
        let mut report = |m: String| panic!("{m}");
        let (read, write) = pipe().unwrap();
        // The leader exits at once; a child still in its group holds the pipe until it reads a
        // line from the FIFO `go`, which is only written after the exit was seen (else this
        // test would hang).
        let script = format!("(read _ < {}; echo late) & echo early", go.display());
        let pid = start(&script, &write);
        let _group = Group(pid);
        drop(write);
        let path = dir.path().join("x.log");
        let mut out = Output::new(read, path.clone());
        assert_eq!(
            out.run_until_exit(pid, &mut report).unwrap().code(),
            Some(0)
        );
        // The detached child still holds the pipe.
        assert!(!out.drain_now(&mut report));
        assert!(!out.ends_within(std::time::Duration::from_millis(20), &mut report));
        std::fs::write(&go, "\n").unwrap();
        out.drain_to_end(&mut report);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "early\nlate\n");
    }

    #[test]
    fn killed_members_of_the_group_let_go_of_the_pipe() {
        let mut report = |m: String| panic!("{m}");
        let (read, write) = pipe().unwrap();
        // The background sleep stays in the job's group and holds the pipe.
        let pid = start("sleep 30 & echo started", &write);
        let _group = Group(pid);
        drop(write);
        let mut out = Output::new(read, PathBuf::from("/dev/null"));
        assert_eq!(
            out.run_until_exit(pid, &mut report).unwrap().code(),
            Some(0)
        );
        crate::spawn::signal_group(pid, libc::SIGKILL);
        // A liveness bound: the kernel closes a killed process's files at once.
        assert!(
            out.drain_now(&mut report)
                || out.ends_within(std::time::Duration::from_secs(10), &mut report)
        );
    }

    #[test]
    fn an_unwritable_log_is_reported_once_and_the_job_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut notes = Vec::new();
        let mut report = |m: String| notes.push(m);
        let (read, write) = pipe().unwrap();
        // More than a pipe holds: the job would block if nobody read.
        let pid = start("head -c 1000000 /dev/zero; echo done", &write);
        drop(write);
        // The log's "directory" is a file.
        std::fs::write(dir.path().join("file"), "").unwrap();
        let mut out = Output::new(read, dir.path().join("file/x.log"));
        assert_eq!(
            out.run_until_exit(pid, &mut report).unwrap().code(),
            Some(0)
        );
        out.drain_to_end(&mut report);
        assert_eq!(notes.len(), 1, "reported once: {notes:?}");
        assert!(notes[0].contains("file/x.log"), "{notes:?}");
    }

    #[test]
    fn a_writer_that_never_pauses_cannot_hide_the_exit() {
        let mut report = |m: String| panic!("{m}");
        let (read, write) = pipe().unwrap();
        // `yes` stays in the group after the leader exits and keeps the pipe full.
        let pid = start("yes & exit 7", &write);
        let _group = Group(pid);
        drop(write);
        let mut out = Output::new(read, PathBuf::from("/dev/null"));
        assert_eq!(
            out.run_until_exit(pid, &mut report).unwrap().code(),
            Some(7)
        );
        crate::spawn::signal_group(pid, libc::SIGKILL);
        out.drain_now(&mut report);
        out.drain_to_end(&mut report);
    }
}
