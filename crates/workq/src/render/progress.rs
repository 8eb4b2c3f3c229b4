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
    /// Jobs already done at the first draw: they finished before the wait and say nothing
    /// about its speed (counting them gave 755857.9/s for one job).
    done_at_start: Option<usize>,
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
            done_at_start: None,
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
        let base = *self.done_at_start.get_or_insert(done);
        let speed = rate_and_eta(
            done.saturating_sub(base),
            c.total.saturating_sub(done),
            self.started.elapsed(),
        );
        bar.set_message(format!("{} failed, {} running{speed}", c.failed, c.running));
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

/// `, 2.5/s eta 4s` for `finished` jobs done during `elapsed` with `remaining` to go; nothing
/// until it means something (a second gone and two jobs done). Ours, not indicatif's, to keep
/// workq's duration format (1m30s).
fn rate_and_eta(finished: usize, remaining: usize, elapsed: Duration) -> String {
    if elapsed < Duration::from_secs(1) || finished < 2 {
        return String::new();
    }
    let rate = finished as f64 / elapsed.as_secs_f64();
    let eta = if remaining > 0 {
        let left = Duration::from_secs_f64(remaining as f64 / rate);
        format!(" eta {}", workq_core::format_duration(left))
    } else {
        String::new()
    };
    format!(", {rate:.1}/s{eta}")
}

fn new_bar() -> ProgressBar {
    // The template is a constant; a mistake in it would show as a plain bar, not a crash.
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} done, {msg}")
        .map(|s| s.progress_chars("#-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_until_a_second_has_passed_and_two_jobs_finished() {
        let secs = Duration::from_secs;
        assert_eq!(rate_and_eta(1, 0, Duration::from_micros(2)), "");
        assert_eq!(rate_and_eta(1, 5, secs(10)), "");
        assert_eq!(rate_and_eta(50, 5, Duration::from_millis(999)), "");
        assert_eq!(rate_and_eta(0, 5, secs(10)), "");
        assert_eq!(rate_and_eta(2, 0, secs(1)), ", 2.0/s");
        assert_eq!(rate_and_eta(4, 6, secs(2)), ", 2.0/s eta 3.0s");
    }
}
