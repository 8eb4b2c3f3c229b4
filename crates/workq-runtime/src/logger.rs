//! A tiny line logger for workers: a timestamp, a level, a message.

use std::io::Write;
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

/// Writes log lines to a sink (stderr or a file).
pub struct Logger {
    level: Level,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Logger {
    /// A logger at `level` writing to `sink`.
    pub fn new(level: Level, sink: Box<dyn Write + Send>) -> Self {
        Logger {
            level,
            sink: Mutex::new(sink),
        }
    }

    /// A logger writing to standard error.
    pub fn stderr(level: Level) -> Self {
        Logger::new(level, Box::new(std::io::stderr()))
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
        if let Ok(mut sink) = self.sink.lock() {
            // A log line that cannot be written must not stop the worker.
            let _ = writeln!(sink, "{} {tag} {msg}", Timestamp::now().to_rfc3339());
            let _ = sink.flush();
        }
    }

    /// Logs at info level.
    pub fn info(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Info, msg)
    }

    /// Logs at error level.
    pub fn error(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Error, msg)
    }

    /// Logs at debug level.
    pub fn debug(&self, msg: std::fmt::Arguments<'_>) {
        self.log(Level::Debug, msg)
    }
}
