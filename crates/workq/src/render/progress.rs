//! A one-line progress bar on standard error, redrawn in place.

use std::io::Write;
use std::time::Instant;

/// Counts shown by the bar.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Finished successfully.
    pub succeeded: usize,
    /// Failed or cancelled.
    pub failed: usize,
    /// Running now.
    pub running: usize,
    /// All jobs being waited for.
    pub total: usize,
}

/// A progress bar; draws only when enabled (standard error is a terminal).
pub struct Progress {
    enabled: bool,
    started: Instant,
    drawn: bool,
}

impl Progress {
    /// Whether it draws at all.
    pub fn visible(&self) -> bool {
        self.enabled
    }

    /// A bar that draws when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            started: Instant::now(),
            drawn: false,
        }
    }

    /// Redraws with these counts.
    pub fn draw(&mut self, c: Counts) {
        if !self.enabled {
            return;
        }
        let done = c.succeeded + c.failed;
        let width = 30usize;
        let filled = (done * width).checked_div(c.total).unwrap_or(width);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta = if rate > 0.0 && c.total > done {
            format!(
                " eta {}",
                workq_core::format_duration(std::time::Duration::from_secs_f64(
                    (c.total - done) as f64 / rate
                ))
            )
        } else {
            String::new()
        };
        let line = format!(
            "\r[{}{}] {done}/{} done, {} failed, {} running, {rate:.1}/s{eta}\x1b[K",
            "#".repeat(filled),
            "-".repeat(width - filled),
            c.total,
            c.failed,
            c.running,
        );
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
