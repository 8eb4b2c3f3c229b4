//! The readiness pipe: how a starting worker tells whoever started it that it is registered and
//! claiming (or why it failed), one line each way.
//!
//! Lines: `ready <pid> <worker id>` (a worker), `listening <pid> <address>` (the server of
//! `serve -d`), or `error <exit code> <message>`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

/// Environment variable naming the write end of the readiness pipe in a started process.
pub const READY_FD_ENV: &str = "WORKQ_READY_FD";

/// What the other end reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Registered and claiming.
    Ready {
        /// The reporting worker's pid.
        pid: i32,
        /// Its registry id.
        worker_id: i64,
    },
    /// The server is bound and about to serve.
    Listening {
        /// The server's pid.
        pid: i32,
        /// The address it is bound to (the real port when port 0 was asked for).
        addr: String,
    },
    /// It failed, with the exit code it uses and the reason.
    Error {
        /// Exit code category (ARCHITECTURE.md §7.1).
        code: u8,
        /// What went wrong.
        message: String,
    },
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("ready ") {
            let mut it = rest.split_whitespace();
            let pid = it.next()?.parse().ok()?;
            let worker_id = it.next()?.parse().ok()?;
            return Some(Report::Ready { pid, worker_id });
        }
        if let Some(rest) = line.strip_prefix("listening ") {
            let mut it = rest.split_whitespace();
            let pid = it.next()?.parse().ok()?;
            let addr = it.next()?.to_string();
            return it
                .next()
                .is_none()
                .then_some(Report::Listening { pid, addr });
        }
        let rest = line.strip_prefix("error ")?;
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Report::Error {
            code: code.parse().unwrap_or(workq_core::exit::JOB_FAILED),
            message: message.to_string(),
        })
    }
}

/// A pipe whose write end goes to a child as descriptor 3.
pub struct Pipe {
    /// Read end (close-on-exec).
    pub read: File,
    /// Write end (close-on-exec here; the child gets a copy as fd 3).
    pub write: File,
}

/// A new close-on-exec pipe.
pub fn pipe() -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        Ok(Pipe {
            read: File::from_raw_fd(fds[0]),
            write: File::from_raw_fd(fds[1]),
        })
    }
}

/// What waiting on a readiness pipe gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// A report (or an unreadable line: `None`).
    Got(Option<Report>),
    /// The writer closed the pipe without reporting (it died).
    Closed,
    /// Nothing came in time.
    TimedOut,
}

/// Waits up to `timeout` for one report on `read`.
pub fn wait_report(read: &File, timeout: Duration) -> Waited {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Waited::TimedOut;
        }
        let mut pfd = libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
        if n <= 0 {
            continue;
        }
        let mut chunk = [0u8; 512];
        // SAFETY: reading into our buffer from a descriptor we own.
        let got = unsafe { libc::read(read.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if got <= 0 {
            return Waited::Closed;
        }
        buf.extend_from_slice(&chunk[..got as usize]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return Waited::Got(Report::parse(&String::from_utf8_lossy(&buf[..end])));
        }
    }
}

/// Reads one report, blocking (for a thread that only waits on it).
pub fn read_report(read: File) -> Option<Report> {
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).ok()?;
    Report::parse(&line)
}

/// The write end handed down in the environment, taken over (and made close-on-exec, so job
/// processes do not inherit it).
pub fn from_env() -> Option<File> {
    let fd: RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    // SAFETY: fcntl on a descriptor number; fails harmlessly if it is not open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return None;
        }
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        Some(File::from_raw_fd(fd))
    }
}

/// Sends a report (best effort: the reader may be gone).
pub fn send(w: &mut File, report: &Report) {
    let line = match report {
        Report::Ready { pid, worker_id } => format!("ready {pid} {worker_id}\n"),
        Report::Listening { pid, addr } => format!("listening {pid} {addr}\n"),
        Report::Error { code, message } => {
            format!("error {code} {}\n", message.replace('\n', " "))
        }
    };
    let _ = w.write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_reports_or_nothing() {
        assert_eq!(
            Report::parse("ready 12 7\n"),
            Some(Report::Ready {
                pid: 12,
                worker_id: 7
            })
        );
        assert_eq!(
            Report::parse("error 5 store locked"),
            Some(Report::Error {
                code: workq_core::exit::UNAVAILABLE,
                message: "store locked".into()
            })
        );
        // An error whose code is garbled is still an error, with the general failure code.
        assert_eq!(
            Report::parse("error x"),
            Some(Report::Error {
                code: workq_core::exit::JOB_FAILED,
                message: String::new()
            })
        );
        assert_eq!(
            Report::parse("listening 12 [::1]:7878\n"),
            Some(Report::Listening {
                pid: 12,
                addr: "[::1]:7878".into()
            })
        );
        for bad in [
            "",
            "ready",
            "ready 12",
            "ready x 7",
            "hello",
            "listening 12",
            "listening x 127.0.0.1:1",
            "listening 12 a b",
        ] {
            assert_eq!(Report::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reports_round_trip_through_a_pipe() {
        let Pipe { read, mut write } = pipe().unwrap();
        send(
            &mut write,
            &Report::Error {
                code: workq_core::exit::CONFLICT,
                message: "already\nrunning".into(),
            },
        );
        assert_eq!(
            wait_report(&read, Duration::from_secs(5)),
            Waited::Got(Some(Report::Error {
                code: workq_core::exit::CONFLICT,
                message: "already running".into()
            }))
        );
        let Pipe { read, mut write } = pipe().unwrap();
        send(
            &mut write,
            &Report::Ready {
                pid: 12,
                worker_id: 7,
            },
        );
        drop(write);
        assert_eq!(
            read_report(read),
            Some(Report::Ready {
                pid: 12,
                worker_id: 7
            })
        );
        let Pipe { read, mut write } = pipe().unwrap();
        let listening = Report::Listening {
            pid: 12,
            addr: "127.0.0.1:40000".into(),
        };
        send(&mut write, &listening);
        assert_eq!(
            wait_report(&read, Duration::from_secs(5)),
            Waited::Got(Some(listening))
        );
        let Pipe { read, write } = pipe().unwrap();
        drop(write);
        assert_eq!(wait_report(&read, Duration::from_secs(5)), Waited::Closed);
        let Pipe { read, write: _w } = pipe().unwrap();
        assert_eq!(
            wait_report(&read, Duration::from_millis(50)),
            Waited::TimedOut
        );
    }
}
