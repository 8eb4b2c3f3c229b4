//! A tiny line logger for workers: a timestamp, a level, a message; to standard error, to a
//! file rotated by size, or both.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use workq_core::Timestamp;

/// How much a worker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only errors.
    Error,
    /// Start, stop, each job's start and end.
    Info,
    /// Everything, including claims and wake-ups.
    Debug,
}

impl Level {
    /// The level a settings name stands for (`error`, `debug`; anything else is `info`).
    pub fn from_name(name: &str) -> Level {
        match name {
            "error" => Level::Error,
            "debug" => Level::Debug,
            _ => Level::Info,
        }
    }

    /// The name used in settings (`error`, `info`, `debug`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// A log file that rotates itself by size.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
    /// Point standard output and error at the new file after each rotation (daemons, whose
    /// stray output and panics belong in the log).
    redirect_std: bool,
}

impl RotatingFile {
    fn write_line(&mut self, line: &str) {
        if self.max_bytes > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.size += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1));
        }
        let moved = if self.keep > 0 {
            std::fs::rename(&self.path, numbered(&self.path, 1)).is_ok()
        } else {
            std::fs::remove_file(&self.path).is_ok()
        };
        if !moved {
            // Cannot rotate (permissions?): keep appending rather than lose lines.
            self.size = 0;
            return;
        }
        if let Ok(f) = open_append(&self.path) {
            self.file = f;
            self.size = 0;
            if self.redirect_std {
                use std::os::unix::io::AsRawFd;
                // SAFETY: dup2 onto the standard descriptors of this process.
                unsafe {
                    libc::dup2(self.file.as_raw_fd(), 1);
                    libc::dup2(self.file.as_raw_fd(), 2);
                }
            }
        }
    }
}

/// `worker.log.N`.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// True when standard error is connected to systemd's journal: `JOURNAL_STREAM` (which systemd
/// sets for a unit whose output goes to the journal) names the device and inode of descriptor
/// 2. `INVOCATION_ID` alone is not enough: it is also set for terminals a desktop session
/// starts as units, whose output a person reads.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat fills the zeroed struct it is given, for a descriptor number.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// A line for the journal: a syslog priority prefix (`<3>` error, `<6>` info, `<7>` debug)
/// and no timestamp or level word, which journald adds and shows itself.
fn journal_line(level: Level, msg: std::fmt::Arguments<'_>) -> String {
    let priority = match level {
        Level::Error => 3,
        Level::Info => 6,
        Level::Debug => 7,
    };
    format!("<{priority}>{msg}\n")
}

/// Writes log lines to standard error, a rotating file, or both.
pub struct Logger {
    level: Level,
    stderr: bool,
    /// Standard error is the journal: its lines carry priorities instead of timestamps.
    journal: bool,
    sink: Mutex<Option<Box<dyn Write + Send>>>,
    file: Mutex<Option<RotatingFile>>,
}

impl Logger {
    /// A logger at `level` writing to `sink`.
    pub fn new(level: Level, sink: Box<dyn Write + Send>) -> Self {
        Logger {
            level,
            stderr: false,
            journal: false,
            sink: Mutex::new(Some(sink)),
            file: Mutex::new(None),
        }
    }

    /// A logger writing to standard error.
    pub fn stderr(level: Level) -> Self {
        Logger {
            level,
            stderr: true,
            journal: stderr_is_journal(),
            sink: Mutex::new(None),
            file: Mutex::new(None),
        }
    }

    /// A logger appending to `path`, rotated past `max_bytes` keeping `keep` old files; also to
    /// standard error when `tee_stderr`. With `redirect_std`, rotation re-points stdout and
    /// stderr at the new file.
    pub fn file(
        level: Level,
        path: &Path,
        max_bytes: u64,
        keep: u32,
        tee_stderr: bool,
        redirect_std: bool,
    ) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Logger {
            level,
            stderr: tee_stderr,
            journal: tee_stderr && stderr_is_journal(),
            sink: Mutex::new(None),
            file: Mutex::new(Some(RotatingFile {
                path: path.to_path_buf(),
                file,
                size,
                max_bytes,
                keep,
                redirect_std,
            })),
        })
    }

    /// True if lines at `level` are written.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    /// Writes one line at `level`.
    pub fn log(&self, level: Level, msg: std::fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        let tag = match level {
            Level::Error => "ERROR",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
        };
        let line = format!("{} {tag} {msg}\n", Timestamp::now().to_rfc3339());
        // A log line that cannot be written must not stop the worker.
        if self.stderr && self.journal {
            let _ = std::io::stderr().write_all(journal_line(level, msg).as_bytes());
        } else if self.stderr {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let Ok(mut sink) = self.sink.lock() {
            if let Some(s) = sink.as_mut() {
                let _ = s.write_all(line.as_bytes());
                let _ = s.flush();
            }
        }
        if let Ok(mut f) = self.file.lock() {
            if let Some(f) = f.as_mut() {
                f.write_line(&line);
            }
        }
    }

    /// Logs at info level.
    pub fn info(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Info, msg);
    }

    /// Logs at error level.
    pub fn error(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Error, msg);
    }

    /// Logs at debug level.
    pub fn debug(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Debug, msg);
    }
}

/// Appends one line to `path` (opening and closing it), for processes that write rarely and
/// must follow another process's rotation, like a worker's monitor.
pub fn append_line(path: &Path, level: Level, msg: std::fmt::Arguments<'_>) {
    let tag = match level {
        Level::Error => "ERROR",
        Level::Info => "INFO ",
        Level::Debug => "DEBUG",
    };
    if let Ok(mut f) = open_append(path) {
        let _ = writeln!(f, "{} {tag} {msg}", Timestamp::now().to_rfc3339());
    }
}

/// The last `n` lines of `path` (for error reports).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_syslog_priorities_and_no_timestamp() {
        assert_eq!(
            journal_line(Level::Error, format_args!("bad {}", 1)),
            "<3>bad 1\n"
        );
        assert_eq!(journal_line(Level::Info, format_args!("ok")), "<6>ok\n");
        assert_eq!(journal_line(Level::Debug, format_args!("x")), "<7>x\n");
    }

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let log = Logger::file(Level::Info, &p, 200, 2, false, false).unwrap();
        for i in 0..40 {
            log.info(format_args!("line {i:03} padding padding"));
        }
        log.debug(format_args!("not written at info level"));
        assert!(p.exists() && numbered(&p, 1).exists() && numbered(&p, 2).exists());
        assert!(!numbered(&p, 3).exists(), "only two old files are kept");
        for f in [p.clone(), numbered(&p, 1), numbered(&p, 2)] {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(len <= 200, "{} is {len} bytes", f.display());
        }
        let last = tail(&p, 1);
        assert!(last[0].ends_with("line 039 padding padding"), "{last:?}");
        assert!(!std::fs::read_to_string(&p).unwrap().contains("not written"));
    }
}
