//! A one-line progress bar on standard error, redrawn in place (indicatif).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    /// The bar on screen; `finish` ends it, and a later `draw` starts a new line.
    bar: Option<ProgressBar>,
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
            bar: None,
        }
    }

    /// Redraws with these counts.
    pub fn draw(&mut self, c: Counts) {
        if !self.enabled {
            return;
        }
        let bar = self.bar.get_or_insert_with(new_bar);
        let done = c.succeeded + c.failed;
        bar.update(|s| {
            s.set_len(c.total as u64);
            s.set_pos(done as u64);
        });
        // Rate and eta are ours, not indicatif's, to keep workq's duration format (1m30s).
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta = if rate > 0.0 && c.total > done {
            format!(
                " eta {}",
                workq_core::format_duration(Duration::from_secs_f64(
                    (c.total - done) as f64 / rate
                ))
            )
        } else {
            String::new()
        };
        bar.set_message(format!(
            "{} failed, {} running, {rate:.1}/s{eta}",
            c.failed, c.running
        ));
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            // `abandon`, not `finish`: the latter would fill the bar to 100% on a timeout.
            bar.abandon();
            eprintln!();
        }
    }
}

fn new_bar() -> ProgressBar {
    // The template is a constant; a mistake in it would show as a plain bar, not a crash.
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} done, {msg}")
        .map(|s| s.progress_chars("#-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style)
}
