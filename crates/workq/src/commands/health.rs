//! `workq health`: per worker, each check and its verdict; exit 0 when all are healthy.

use std::time::Duration;

use serde_json::json;
use workq_core::{format_duration, Timestamp, WorkerRecord};
use workq_runtime::procinfo;

use crate::context::Context;
use crate::error::{CliError, CmdResult};
use crate::flag_values;
use crate::render::table::Table;

/// Check worker health
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Checks each live worker (on every host): heartbeat age, process alive (this host),\nerror rate over --window, RSS against --max-rss (this host), jobs running past their\ntimeout; and the free disk of the state dir. Workers of this host that died or crash-loop\nwithin the last day count as unhealthy until restarted or cleaned up.\nExit status: 0 when everything is healthy, 1 otherwise."
)]
pub struct Args {
    /// A heartbeat older than this fails
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = flag_values::duration)]
    max_heartbeat_age: Duration,
    /// Window for the error rate
    #[arg(long, default_value = "15m", value_name = "DUR", value_parser = flag_values::duration)]
    window: Duration,
    /// Error rate (failed / finished attempts in the window) above this fails, in percent
    #[arg(long, default_value_t = 50.0, value_name = "PCT")]
    max_error_rate: f64,
    /// Judge the error rate only after this many attempts in the window
    #[arg(long, default_value_t = 4, value_name = "N")]
    min_attempts: u64,
    /// Resident memory above this many MiB fails
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    max_rss_mib: u64,
    /// Free disk for the state dir below this many MiB fails
    #[arg(long, default_value_t = 100, value_name = "MIB")]
    min_free_disk_mib: u64,
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

/// One worker's verdicts, with the state it is shown in.
type Judged<'w> = (&'w WorkerRecord, String, Vec<Check>);

/// What every worker is judged by: the limits of the command line and the facts of now.
struct Judge<'a> {
    a: &'a Args,
    now: Timestamp,
    host: String,
    boot: String,
    running: Vec<workq_store::RunningJob>,
}

/// Runs `workq health`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    if !(0.0..=100.0).contains(&a.max_error_rate) {
        return Err(CliError::usage(
            "--max-error-rate: use a percentage from 0 to 100",
        ));
    }
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", json!({"healthy": true, "workers": [], "disk": null}));
        } else {
            println!("healthy: no store yet, so nothing runs");
        }
        return Ok(0);
    };
    let store = client.store();
    let judge = Judge {
        a: &a,
        now: store.now(),
        host: procinfo::hostname(),
        boot: procinfo::boot_id(),
        running: store.running_jobs()?,
    };
    let all = store.workers(true)?;
    let mut judged: Vec<Judged> = Vec::new();
    for w in &all {
        let state =
            procinfo::display_state(w, &judge.host, &judge.boot, judge.now, a.max_heartbeat_age);
        let checks = if w.state.is_live() {
            judge.live(store, w)?
        } else {
            match judge.ended(w, &all) {
                Some(c) => vec![c],
                None => continue,
            }
        };
        judged.push((w, state.to_string(), checks));
    }
    let disk = procinfo::disk_space(client.state_dir());
    let disk_check = disk_check(disk, a.min_free_disk_mib);
    let healthy = disk_check.ok && judged.iter().all(|(_, _, c)| c.iter().all(|c| c.ok));
    if ctx.json {
        print_json(&judged, healthy, &disk_check, disk);
    } else {
        print_table(ctx, &judged, &judge.host, &disk_check, healthy);
    }
    Ok(if healthy { 0 } else { 1 })
}

impl Judge<'_> {
    /// A worker of this host that ended badly (died or crash-looped) within the last day, as
    /// the latest of its name, fails until restarted or cleaned up.
    fn ended(&self, w: &WorkerRecord, all: &[WorkerRecord]) -> Option<Check> {
        let latest = all
            .iter()
            .filter(|o| o.name == w.name && o.host == w.host)
            .max_by_key(|o| o.id)
            .map(|o| o.id)
            == Some(w.id);
        let ended_badly = matches!(
            w.state,
            workq_core::WorkerState::Dead | workq_core::WorkerState::CrashLooping
        );
        let day = Duration::from_secs(24 * 3600);
        let recent = w.stopped_at.is_none_or(|t| self.now.since(t) <= day);
        (latest && ended_badly && recent && w.settings.is_some()).then(|| {
            check(
                "running",
                false,
                format!(
                    "{}: {} (restart it: workq worker start {} -d)",
                    w.state,
                    w.stop_reason.as_deref().unwrap_or("no reason recorded"),
                    w.name
                ),
            )
        })
    }

    /// Every check of a live worker: heartbeat, process and memory (this host), error rate,
    /// jobs past their timeout.
    fn live(
        &self,
        store: &dyn workq_store::Store,
        w: &WorkerRecord,
    ) -> Result<Vec<Check>, CliError> {
        let age = self.now.since(w.heartbeat_at);
        let mut checks = vec![check(
            "heartbeat",
            age <= self.a.max_heartbeat_age,
            format!(
                "last heartbeat {} ago (limit {})",
                format_duration(age),
                format_duration(self.a.max_heartbeat_age)
            ),
        )];
        let local = w.host == self.host;
        if local {
            checks.push(
                match procinfo::worker_death(w, &self.host, &self.boot, self.now) {
                    None => check("process", true, format!("pid {} is alive", w.pid)),
                    Some(why) => check(
                        "process",
                        false,
                        format!("{why} (run: workq workers cleanup)"),
                    ),
                },
            );
        }
        checks.push(self.error_rate(store, w)?);
        if local {
            checks.extend(self.memory(w));
        }
        checks.push(self.timeouts(w));
        Ok(checks)
    }

    /// Failed attempts over finished ones in the window, judged from `--min-attempts` on.
    fn error_rate(
        &self,
        store: &dyn workq_store::Store,
        w: &WorkerRecord,
    ) -> Result<Check, CliError> {
        let a = self.a;
        let since = Timestamp(self.now.0 - self.a.window.as_millis() as i64);
        let o = store.worker_outcomes(w.id, since)?;
        let finished = o.succeeded + o.failed;
        let rate = if finished > 0 {
            o.failed as f64 * 100.0 / finished as f64
        } else {
            0.0
        };
        let rate_ok = finished < a.min_attempts || rate <= a.max_error_rate;
        Ok(check(
            "error_rate",
            rate_ok,
            format!(
                "{} of {finished} attempt(s) failed in the last {} ({rate:.0}%, limit {:.0}%{})",
                o.failed,
                format_duration(self.a.window),
                a.max_error_rate,
                if finished < a.min_attempts {
                    format!(", judged from {} attempts", a.min_attempts)
                } else {
                    String::new()
                }
            ),
        ))
    }

    /// Resident memory of a worker of this host, when its process can be read.
    fn memory(&self, w: &WorkerRecord) -> Option<Check> {
        let s = procinfo::stats(w.pid)?;
        let mib = s.rss_bytes / (1024 * 1024);
        Some(check(
            "memory",
            mib <= self.a.max_rss_mib,
            format!("{mib} MiB resident (limit {} MiB)", self.a.max_rss_mib),
        ))
    }

    /// The worker's jobs that have run well past their timeout (so were not stopped).
    fn timeouts(&self, w: &WorkerRecord) -> Check {
        let overdue: Vec<String> = self
            .running
            .iter()
            .filter(|r| r.worker_id == Some(w.id))
            .filter_map(|r| {
                let limit = r.timeout? + r.kill_grace + Duration::from_secs(30);
                let ran = self.now.since(r.started_at);
                (ran > limit).then(|| {
                    format!(
                        "job {} has run {}, past its timeout of {}",
                        r.job_id,
                        format_duration(ran),
                        format_duration(r.timeout.unwrap_or_default())
                    )
                })
            })
            .collect();
        check(
            "timeouts",
            overdue.is_empty(),
            if overdue.is_empty() {
                "no job past its timeout".into()
            } else {
                overdue.join("; ")
            },
        )
    }
}

/// Free disk of the state dir's filesystem (`disk`: free and total bytes) against the minimum.
fn disk_check(disk: Option<(u64, u64)>, min_free_mib: u64) -> Check {
    match disk {
        Some((free, total)) => {
            let mib = free / (1024 * 1024);
            check(
                "disk",
                mib >= min_free_mib,
                format!(
                    "{mib} MiB free of {} MiB on the state dir's filesystem (need {} MiB)",
                    total / (1024 * 1024),
                    min_free_mib
                ),
            )
        }
        None => check("disk", false, "cannot read the free disk space".into()),
    }
}

fn print_json(judged: &[Judged], healthy: bool, disk_check: &Check, disk: Option<(u64, u64)>) {
    let workers: Vec<_> = judged
        .iter()
        .map(|(w, state, checks)| {
            json!({
                "id": w.id, "name": w.name, "host": w.host, "pid": w.pid, "state": state,
                "healthy": checks.iter().all(|c| c.ok),
                "checks": checks.iter().map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "healthy": healthy,
            "workers": workers,
            "disk": {"ok": disk_check.ok, "detail": disk_check.detail,
                     "free_bytes": disk.map(|d| d.0), "total_bytes": disk.map(|d| d.1)},
        })
    );
}

fn print_table(ctx: &Context, judged: &[Judged], host: &str, disk_check: &Check, healthy: bool) {
    let mut t = Table::new(&["WORKER", "HOST", "CHECK", "VERDICT", "DETAIL"]);
    for (w, _, checks) in judged {
        for c in checks {
            t.row(vec![
                format!("{} ({})", w.name, w.id),
                w.host.clone(),
                c.name.to_string(),
                verdict(ctx, c.ok),
                c.detail.clone(),
            ]);
        }
    }
    t.row(vec![
        "-".into(),
        host.to_string(),
        disk_check.name.into(),
        verdict(ctx, disk_check.ok),
        disk_check.detail.clone(),
    ]);
    t.print(ctx.tty);
    if judged.is_empty() && !ctx.quiet {
        println!("no live workers");
    }
    if !ctx.quiet {
        println!("{}", if healthy { "healthy" } else { "UNHEALTHY" });
    }
}

fn verdict(ctx: &Context, ok: bool) -> String {
    if ok {
        ctx.paint("ok", "32")
    } else {
        ctx.paint("FAIL", "31")
    }
}
