//! `workq worker …`: start (foreground or daemon), stop, restart, status, pause and resume of
//! local workers, plus the hidden entry points of a daemon's monitor and worker processes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use workq_core::{format_duration, Timestamp, WorkerRecord};
use workq_runtime::control::{self, Found, Stopped};
use workq_runtime::pidfile::{self, AcquireError, PidFile};
use workq_runtime::{daemon, procinfo, ready, Level, Logger, WorkerOptions, WorkerSettings};

use super::parse_dur;
use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::render::{self, table::Table};

/// Worker lifecycle
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Start a worker: in the foreground (default) or as a daemon under a monitor (-d)
    Start(StartArgs),
    /// Stop workers: drain gracefully, then kill and requeue after the timeout
    Stop(StopArgs),
    /// Stop a worker and start it again as a daemon with the same settings
    Restart(RestartArgs),
    /// Show whether workers run, with their processes, jobs and queues
    Status(StatusArgs),
    /// Stop claiming new jobs (running jobs go on); survives restarts
    Pause(PauseArgs),
    /// Claim jobs again after a pause
    Resume(PauseArgs),
    /// (internal) the monitor of a daemonized worker
    #[command(name = "_monitor", hide = true)]
    Monitor,
    /// (internal) a worker process started by its monitor
    #[command(name = "_run", hide = true)]
    Run,
}

/// Start a worker
#[derive(clap::Args, Debug)]
#[command(
    after_help = "On SIGTERM or Ctrl-C the worker stops claiming, lets running jobs finish for up to\n--stop-timeout, then stops them (SIGTERM, SIGKILL after each job's kill grace) and puts them\nback in the queue. A second Ctrl-C stops them at once.\n\nWith --daemon the worker runs in the background under a monitor that restarts it if it dies\nor hangs (at most --max-restarts times per --restart-window). Its log goes to\n.workq/logs/worker-NAME.log unless -l says otherwise.\n\nExamples:\n  workq worker start                    one slot on the default queue, in the foreground\n  workq worker start gpu -w 4 -Q gpu -d  a daemon named gpu with 4 slots\n  workq worker stop gpu                  stop it"
)]
pub struct StartArgs {
    /// Worker name (one running worker per name) [default: default]
    name: Option<String>,
    /// Jobs run at once (slots) [default: 1]
    #[arg(short = 'w', long = "workers")]
    slots: Option<u32>,
    /// Queues to serve (repeatable or comma-separated) [default: default]
    #[arg(short = 'Q', long = "queue", value_delimiter = ',')]
    queues: Vec<String>,
    /// Run in the background under a monitor; return once it is claiming
    #[arg(short = 'd', long)]
    daemon: bool,
    /// The worker's own log file [default: .workq/logs/worker-NAME.log]
    #[arg(short = 'l', long = "log-file", value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// On stop, how long running jobs may go on before they are interrupted and requeued [default: 10s]
    #[arg(long, value_name = "DUR")]
    stop_timeout: Option<String>,
    /// Between heartbeats [default: 5s]
    #[arg(long, value_name = "DUR")]
    heartbeat: Option<String>,
    /// A daemon whose heartbeat is older than this while its process lives is hung: killed and restarted [default: 60s]
    #[arg(long, value_name = "DUR")]
    hung_after: Option<String>,
    /// Restarts the monitor allows per --restart-window before it gives up [default: 3]
    #[arg(long, value_name = "N")]
    max_restarts: Option<u32>,
    /// Window over which restarts are counted [default: 1h]
    #[arg(long, value_name = "DUR")]
    restart_window: Option<String>,
    /// Rotate the worker log past this size, e.g. 10MiB [default: 10MiB]
    #[arg(long, value_name = "SIZE")]
    log_max_size: Option<String>,
    /// Old worker logs kept after rotation [default: 3]
    #[arg(long, value_name = "N")]
    log_keep: Option<u32>,
    /// A worker for the length of one command (`submit --wait`): no PID file, no log file,
    /// not managed by `worker stop --all` or `pause --all`
    #[arg(long, hide = true, conflicts_with = "daemon")]
    temporary: bool,
}

/// Stop workers
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Sends SIGTERM (to the monitor of a daemon, which passes it on): the worker stops claiming\nand lets its jobs finish. After the timeout, the monitor, the worker and every process of\nits running jobs get SIGKILL, and those jobs go back to the queue (outcome `interrupted`).\nA PID file that names an unrelated process is reported stale and nothing is signalled."
)]
pub struct StopArgs {
    /// Worker name [default: default]
    #[arg(conflicts_with = "all")]
    name: Option<String>,
    /// Stop every local worker
    #[arg(long)]
    all: bool,
    /// Seconds (or a duration) before SIGKILL [default: the worker's stop timeout + 15s]
    #[arg(short = 't', long = "timeout", value_name = "SECS")]
    timeout: Option<String>,
}

/// Restart a worker
#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Worker name [default: default]
    name: Option<String>,
    /// New number of slots (other settings are kept)
    #[arg(short = 'w', long = "workers")]
    slots: Option<u32>,
    /// Seconds (or a duration) before SIGKILL when stopping
    #[arg(short = 't', long = "timeout", value_name = "SECS")]
    timeout: Option<String>,
}

/// Show local workers
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 if the worker runs, 1 if it is known but not running (stopped, dead,\ncrash-looping), 3 if no worker of that name was ever seen here. CPU % is CPU time over\nwall time since the worker started, like `ps -o %cpu`."
)]
pub struct StatusArgs {
    /// Worker name [default: every local worker]
    name: Option<String>,
}

/// Pause or resume workers
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// Worker name [default: default]
    #[arg(conflicts_with = "all")]
    name: Option<String>,
    /// Every local worker
    #[arg(long)]
    all: bool,
}

pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::Start(a) => start(ctx, a),
        Command::Stop(a) => stop(ctx, a),
        Command::Restart(a) => restart(ctx, a),
        Command::Status(a) => status(ctx, a),
        Command::Pause(a) => pause(ctx, a, true),
        Command::Resume(a) => pause(ctx, a, false),
        Command::Monitor => monitor(ctx),
        Command::Run => run_under_monitor(ctx),
    }
}

fn name_of(name: Option<String>) -> Result<String, CliError> {
    let name = name.unwrap_or_else(|| "default".into());
    workq_runtime::check_name(&name).map_err(CliError::usage)?;
    Ok(name)
}

/// Parses `10MiB`, `512k`, `1G`, `4096`.
fn parse_size(flag: &str, s: &str) -> Result<u64, CliError> {
    crate::config::parse_size(s).map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// Settings from the defaults and the flags, each with its source.
fn settings_from(ctx: &Context, a: &StartArgs) -> Result<WorkerSettings, CliError> {
    let name = name_of(a.name.clone())?;
    let mut s = WorkerSettings::defaults(&name, &ctx.state_dir);
    apply_config(&ctx.config, &mut s);
    if let Some(w) = a.slots {
        if w == 0 {
            return Err(CliError::usage("-w/--workers must be at least 1"));
        }
        s.slots = w;
        s.set_source("slots", "flag -w");
    }
    let queues: Vec<String> = a
        .queues
        .iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if !a.queues.is_empty() {
        if queues.is_empty() {
            return Err(CliError::usage("-Q/--queue: no queue named"));
        }
        s.queues = queues;
        s.set_source("queues", "flag -Q");
    }
    if let Some(l) = &a.log_file {
        s.log_file = if l.is_absolute() {
            l.clone()
        } else {
            std::env::current_dir()
                .map(|d| d.join(l))
                .unwrap_or_else(|_| l.clone())
        };
        s.set_source("log_file", "flag -l");
    }
    let durations: [(&str, &str, &Option<String>, &mut u64); 4] = [
        (
            "stop_timeout",
            "--stop-timeout",
            &a.stop_timeout,
            &mut s.stop_timeout_ms,
        ),
        (
            "heartbeat",
            "--heartbeat",
            &a.heartbeat,
            &mut s.heartbeat_ms,
        ),
        (
            "hung_after",
            "--hung-after",
            &a.hung_after,
            &mut s.hung_after_ms,
        ),
        (
            "restart_window",
            "--restart-window",
            &a.restart_window,
            &mut s.restart_window_ms,
        ),
    ];
    let mut sources = Vec::new();
    for (key, flag, value, slot) in durations {
        if let Some(v) = value {
            *slot = parse_dur(flag, v)?.as_millis() as u64;
            sources.push((key, format!("flag {flag}")));
        }
    }
    for (k, v) in sources {
        s.set_source(k, v);
    }
    if s.heartbeat_ms < 100 {
        return Err(CliError::usage("--heartbeat must be at least 100ms"));
    }
    if s.hung_after_ms <= 2 * s.heartbeat_ms {
        return Err(CliError::usage(format!(
            "--hung-after ({}) must be more than twice --heartbeat ({}), or a healthy worker would be killed as hung",
            format_duration(s.hung_after()),
            format_duration(s.heartbeat())
        )));
    }
    if let Some(n) = a.max_restarts {
        s.max_restarts = n;
        s.set_source("max_restarts", "flag --max-restarts");
    }
    if let Some(v) = &a.log_max_size {
        s.log_max_bytes = parse_size("--log-max-size", v)?;
        s.set_source("log_max_size", "flag --log-max-size");
    }
    if let Some(n) = a.log_keep {
        s.log_keep = n;
        s.set_source("log_keep", "flag --log-keep");
    }
    if ctx.quiet {
        s.level = Level::Error.as_str().into();
        s.set_source("level", "flag -q");
    } else if ctx.verbose {
        s.level = Level::Debug.as_str().into();
        s.set_source("level", "flag -v");
    }
    s.daemon = a.daemon;
    Ok(s)
}

/// The `[worker]` section over the built-in defaults, each with the file or variable it came
/// from.
pub(crate) fn apply_config(cfg: &crate::config::Config, s: &mut WorkerSettings) {
    use crate::config::Source;
    if let Some(Some(keep)) = cfg.dur("store.retention") {
        s.retention_ms = Some(keep.as_millis() as u64);
    }
    let set = |key: &str| cfg.get(key).filter(|v| v.source != Source::Default);
    if let Some(v) = set("worker.slots").and_then(|v| v.value.as_integer()) {
        s.slots = v.clamp(1, u32::MAX as i64) as u32;
        s.set_source("slots", cfg.source("worker.slots"));
    }
    let durations: [(&str, &str, &mut u64); 4] = [
        (
            "worker.stop_timeout",
            "stop_timeout",
            &mut s.stop_timeout_ms,
        ),
        ("worker.heartbeat", "heartbeat", &mut s.heartbeat_ms),
        ("worker.hung_after", "hung_after", &mut s.hung_after_ms),
        (
            "worker.restart_window",
            "restart_window",
            &mut s.restart_window_ms,
        ),
    ];
    let mut sources = Vec::new();
    for (key, name, slot) in durations {
        if set(key).is_some() {
            if let Some(Some(d)) = cfg.dur(key) {
                *slot = d.as_millis() as u64;
                sources.push((name, cfg.source(key)));
            }
        }
    }
    for (name, src) in sources {
        s.set_source(name, src);
    }
    if set("worker.max_restarts").is_some() {
        if let Some(n) = cfg.int("worker.max_restarts") {
            s.max_restarts = n.clamp(0, u32::MAX as i64) as u32;
            s.set_source("max_restarts", cfg.source("worker.max_restarts"));
        }
    }
    if set("worker.log_keep").is_some() {
        if let Some(n) = cfg.int("worker.log_keep") {
            s.log_keep = n.clamp(0, u32::MAX as i64) as u32;
            s.set_source("log_keep", cfg.source("worker.log_keep"));
        }
    }
    if set("worker.log_max_size").is_some() {
        if let Some(n) = cfg.size("worker.log_max_size") {
            s.log_max_bytes = n;
            s.set_source("log_max_size", cfg.source("worker.log_max_size"));
        }
    }
}

/// `--state-dir` and `--store` for re-executed processes, so they open the same store.
fn global_args(ctx: &Context) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["--state-dir".into(), ctx.state_dir.clone().into_os_string()];
    v.extend(ctx.store_args().into_iter().map(OsString::from));
    v
}

/// This binary's command line for the hidden `worker SUBCOMMAND` (`_monitor` or `_run`).
fn own_command(exe: PathBuf, ctx: &Context, subcommand: &str) -> daemon::CommandLine {
    let mut args = global_args(ctx);
    args.extend(["worker", subcommand].map(OsString::from));
    daemon::CommandLine { program: exe, args }
}

fn already_running(name: &str, found: &Found) -> CliError {
    let pid = match found {
        Found::Running(r) => format!(" (pid {})", r.worker.pid),
        _ => String::new(),
    };
    CliError::new(
        code::CONFLICT,
        format!("worker {name} is already running{pid}"),
    )
    .hint(format!(
        "stop it first (workq worker stop {name}), or start another one under a different name"
    ))
}

fn start(ctx: &Context, a: StartArgs) -> CmdResult {
    let settings = settings_from(ctx, &a)?;
    if settings.daemon {
        return start_daemon(ctx, settings);
    }
    // Before any thread exists, so every thread inherits the blocked mask.
    workq_runtime::signals::block_terminating();
    let client = ctx.client()?;
    if a.temporary {
        let mut opts = WorkerOptions::from_settings(&settings, client.state_dir());
        opts.settings = None;
        let log = Logger::stderr(settings.log_level());
        workq_runtime::run_worker(client.store(), opts, &log, &mut |_| {})?;
        return Ok(0);
    }
    let name = settings.name.clone();
    let log = Logger::file(
        settings.log_level(),
        &settings.log_file,
        settings.log_max_bytes,
        settings.log_keep,
        true,
        false,
    )
    .map_err(|e| {
        CliError::new(
            code::UNAVAILABLE,
            format!(
                "cannot open worker log {}: {e}",
                settings.log_file.display()
            ),
        )
        .hint("pass -l FILE to log somewhere writable")
    })?;
    let run_dir = client.state_dir().join("run");
    let pid_path = pidfile::path_for(&run_dir, &name);
    let mut pid_file = match PidFile::acquire(&pid_path, &mut |s| log.info(format_args!("{s}"))) {
        Ok(f) => f,
        Err(AcquireError::Running(_)) => {
            let found = control::find(client.store(), &run_dir, &name)?;
            return Err(already_running(&name, &found));
        }
        Err(AcquireError::Io(e)) => {
            return Err(CliError::new(
                code::UNAVAILABLE,
                format!("cannot write PID file {}: {e}", pid_path.display()),
            ))
        }
    };
    let settings_value = serde_json::from_str(&settings.to_json()).ok();
    let mut info = pidfile::info_for_self(&name, None);
    info.settings = settings_value;
    if let Err(e) = pid_file.write(&info) {
        log.error(format_args!("cannot write {}: {e}", pid_path.display()));
    }
    let opts = WorkerOptions::from_settings(&settings, client.state_dir());
    let result = workq_runtime::run_worker(client.store(), opts, &log, &mut |id| {
        info.worker_id = Some(id);
        if let Err(e) = pid_file.write(&info) {
            log.error(format_args!("cannot write {}: {e}", pid_path.display()));
        }
    });
    pid_file.release();
    result?;
    Ok(0)
}

pub(crate) fn start_daemon(ctx: &Context, settings: WorkerSettings) -> CmdResult {
    let client = ctx.client()?;
    let run_dir = client.state_dir().join("run");
    let name = settings.name.clone();
    let found = control::find(client.store(), &run_dir, &name)?;
    if matches!(found, Found::Running(_)) {
        return Err(already_running(&name, &found));
    }
    drop(client);
    let exe = std::env::current_exe().map_err(|e| {
        CliError::new(
            code::UNAVAILABLE,
            format!("cannot find the workq executable: {e}"),
        )
    })?;
    let quiet = ctx.quiet || ctx.json;
    let launched = daemon::launch(
        &own_command(exe, ctx, "_monitor"),
        &settings,
        Duration::from_secs(30),
        &mut |msg| {
            if !quiet {
                eprintln!("workq: {msg}");
            }
        },
    );
    match launched {
        Ok(l) => {
            if ctx.json {
                println!(
                    "{}",
                    json!({
                        "name": name, "pid": l.worker_pid, "monitor_pid": l.monitor_pid,
                        "worker_id": l.worker_id, "log_file": settings.log_file,
                        "state_dir": ctx.state_dir,
                    })
                );
            } else if !ctx.quiet {
                println!(
                    "worker {name} started: pid {} (monitor pid {}), {} slot(s) on {}",
                    l.worker_pid,
                    l.monitor_pid,
                    settings.slots,
                    settings.queues.join(",")
                );
                println!("  log:    {}", settings.log_file.display());
                println!(
                    "  watch:  workq worker status {name}   or   tail -f {}",
                    settings.log_file.display()
                );
                println!("  stop:   workq worker stop {name}");
            }
            Ok(0)
        }
        Err(e) => {
            let mut msg = format!(
                "worker {name} did not start after {} attempt(s): {}",
                e.attempts, e.reason
            );
            if !e.log_tail.is_empty() {
                msg.push_str(&format!(
                    "\nlast lines of {}:\n  {}",
                    settings.log_file.display(),
                    e.log_tail.join("\n  ")
                ));
            }
            let code = if e.code == 0 { 1 } else { e.code };
            Err(CliError::new(code, msg).hint(format!(
                "see the whole log: less {}",
                settings.log_file.display()
            )))
        }
    }
}

/// The hidden `worker _monitor`: started by `start --daemon`.
fn monitor(ctx: &Context) -> CmdResult {
    workq_runtime::signals::block_terminating();
    let mut ready = ready::from_env();
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => return report_failure(&mut ready, e),
    };
    let client = match ctx.client() {
        Ok(c) => c,
        Err(e) => return report_failure(&mut ready, e),
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return report_failure(
                &mut ready,
                CliError::new(
                    code::UNAVAILABLE,
                    format!("cannot find the workq executable: {e}"),
                ),
            )
        }
    };
    let run_dir = client.state_dir().join("run");
    let code = workq_runtime::monitor::run_monitor(
        client.store(),
        &settings,
        &own_command(exe, ctx, "_run"),
        &run_dir,
        ready,
    );
    Ok(code)
}

/// The hidden `worker _run`: one worker process under a monitor.
fn run_under_monitor(ctx: &Context) -> CmdResult {
    workq_runtime::signals::block_terminating();
    let mut ready = ready::from_env();
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => return report_failure(&mut ready, e),
    };
    let log = match Logger::file(
        settings.log_level(),
        &settings.log_file,
        settings.log_max_bytes,
        settings.log_keep,
        false,
        true,
    ) {
        Ok(l) => l,
        Err(e) => {
            return report_failure(
                &mut ready,
                CliError::new(
                    code::UNAVAILABLE,
                    format!(
                        "cannot open worker log {}: {e}",
                        settings.log_file.display()
                    ),
                ),
            )
        }
    };
    let client = match ctx.client() {
        Ok(c) => c,
        Err(e) => return report_failure(&mut ready, e),
    };
    let opts = WorkerOptions::from_settings(&settings, client.state_dir());
    let pid = std::process::id() as i32;
    let result = workq_runtime::run_worker(client.store(), opts, &log, &mut |id| {
        if let Some(mut w) = ready.take() {
            ready::send(&mut w, &ready::Report::Ready { pid, worker_id: id });
        }
    });
    match result {
        Ok(_) => Ok(0),
        Err(e) => {
            let e = CliError::from(e);
            log.error(format_args!("{}", e.message));
            report_failure(&mut ready, e)
        }
    }
}

fn settings_from_env() -> Result<WorkerSettings, CliError> {
    let raw = std::env::var(workq_runtime::SETTINGS_ENV).map_err(|_| {
        CliError::usage("this subcommand is internal: use `workq worker start --daemon`")
    })?;
    WorkerSettings::from_json(&raw).map_err(CliError::usage)
}

fn report_failure(ready: &mut Option<std::fs::File>, e: CliError) -> CmdResult {
    if let Some(w) = ready.as_mut() {
        ready::send(
            w,
            &ready::Report::Error {
                code: e.code,
                message: e.message.clone(),
            },
        );
    }
    Err(e)
}

fn stop(ctx: &Context, a: StopArgs) -> CmdResult {
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| parse_secs("-t/--timeout", t))
        .transpose()?;
    let Some(client) = ctx.client_if_exists()? else {
        return Ok(0);
    };
    let run_dir = client.state_dir().join("run");
    let names = if a.all {
        control::local_names(client.store(), &run_dir)?
    } else {
        vec![name_of(a.name)?]
    };
    if names.is_empty() && !ctx.quiet {
        eprintln!("workq: no local workers to stop");
    }
    let mut refused = false;
    let mut report = Vec::new();
    for name in names {
        let mut steps = Vec::new();
        let outcome = control::stop(client.store(), &run_dir, &name, timeout, &mut |m| {
            if !ctx.json && !ctx.quiet {
                println!("{m}");
            }
            steps.push(m);
        })?;
        refused |= outcome == Stopped::Refused;
        report.push(json!({
            "name": name,
            "result": match outcome {
                Stopped::NotRunning => "not_running",
                Stopped::Gracefully => "stopped",
                Stopped::Killed => "killed",
                Stopped::Refused => "refused",
            },
            "steps": steps,
        }));
    }
    if ctx.json {
        println!("{}", serde_json::Value::Array(report));
    }
    Ok(if refused { code::UNAVAILABLE } else { 0 })
}

/// `-t 2` means two seconds; `-t 1m` works too.
pub(crate) fn parse_secs(flag: &str, s: &str) -> Result<Duration, CliError> {
    if let Ok(n) = s.trim().parse::<f64>() {
        // The same bound as durations: about 31,700 years.
        if (0.0..1e12).contains(&n) {
            return Ok(Duration::from_secs_f64(n));
        }
        return Err(CliError::usage(format!(
            "{flag} {s:?}: use a number of seconds from 0 to 999999999999, or a duration like 30s"
        )));
    }
    parse_dur(flag, s)
}

fn restart(ctx: &Context, a: RestartArgs) -> CmdResult {
    let name = name_of(a.name)?;
    let timeout = a
        .timeout
        .as_deref()
        .map(|t| parse_secs("-t/--timeout", t))
        .transpose()?;
    let client = ctx.client()?;
    let run_dir = client.state_dir().join("run");
    let store = client.store();
    // The settings it runs with now, else those it last registered with, else the defaults.
    let mut settings = match control::find(store, &run_dir, &name)? {
        Found::Running(r) => r.settings,
        _ => None,
    }
    .or_else(|| {
        let host = procinfo::hostname();
        store.workers(true).ok()?.into_iter().rev().find_map(|w| {
            (w.name == name && w.host == host)
                .then(|| {
                    w.settings
                        .as_deref()
                        .and_then(|s| WorkerSettings::from_json(s).ok())
                })
                .flatten()
        })
    })
    .unwrap_or_else(|| WorkerSettings::defaults(&name, &ctx.state_dir));
    for key in workq_runtime::SETTING_KEYS {
        if settings.sources.get(key).is_some_and(|s| s != "default") {
            settings.set_source(key, "kept by restart");
        }
    }
    if let Some(w) = a.slots {
        if w == 0 {
            return Err(CliError::usage("-w/--workers must be at least 1"));
        }
        settings.slots = w;
        settings.set_source("slots", "flag -w");
    }
    settings.daemon = true;
    let outcome = control::stop(store, &run_dir, &name, timeout, &mut |m| {
        if !ctx.quiet && !ctx.json {
            println!("{m}");
        }
    })?;
    if outcome == Stopped::Refused {
        return Ok(code::UNAVAILABLE);
    }
    drop(client);
    start_daemon(ctx, settings)
}

/// Everything `worker status` shows for one worker.
struct StatusView {
    name: String,
    running: bool,
    state: String,
    note: Option<String>,
    pid: Option<i32>,
    monitor_pid: Option<i32>,
    record: Option<WorkerRecord>,
    stats: Option<procinfo::ProcStats>,
    log_file: Option<PathBuf>,
}

fn view(
    ctx: &Context,
    store: &dyn workq_store::Store,
    run_dir: &std::path::Path,
    name: &str,
) -> Result<StatusView, CliError> {
    let host = procinfo::hostname();
    let boot = procinfo::boot_id();
    let now = store.now();
    let records: Vec<WorkerRecord> = store
        .workers(true)?
        .into_iter()
        .filter(|w| w.name == name && w.host == host)
        .collect();
    let found = control::find(store, run_dir, name)?;
    let (running, pid, monitor_pid, worker_id, settings, note) = match &found {
        Found::Running(r) => (
            true,
            Some(r.worker.pid),
            r.monitor.map(|m| m.pid),
            r.worker_id,
            r.settings.clone(),
            (r.worker.start_time == 0).then(|| "its monitor is restarting it".to_string()),
        ),
        Found::NotRunning(n) => (false, None, None, None, None, n.clone()),
        Found::Unsure(n) => (false, None, None, None, None, Some(n.clone())),
    };
    let record = match worker_id {
        Some(id) => records.iter().find(|w| w.id == id).cloned(),
        None => records.last().cloned(),
    };
    let settings = settings.or_else(|| {
        record
            .as_ref()
            .and_then(|r| r.settings.as_deref())
            .and_then(|s| WorkerSettings::from_json(s).ok())
    });
    let hung_after = settings
        .as_ref()
        .map(|s| s.hung_after())
        .unwrap_or(Duration::from_secs(60));
    let state = if let Found::Unsure(_) = found {
        "unknown".to_string()
    } else if running {
        match &record {
            Some(r) if r.state.is_live() => {
                procinfo::display_state(r, &host, &boot, now, hung_after).to_string()
            }
            _ if note.is_some() => "restarting".into(),
            _ => "starting".into(),
        }
    } else {
        match &record {
            Some(r) if r.state.is_live() => {
                procinfo::display_state(r, &host, &boot, now, hung_after).to_string()
            }
            Some(r) => r.state.as_str().to_string(),
            None if note.as_deref().is_some_and(|n| n.contains("crash-looping")) => {
                "crash-looping".into()
            }
            None => "not running".into(),
        }
    };
    let stats = pid.filter(|_| running).and_then(procinfo::stats);
    let _ = ctx;
    Ok(StatusView {
        name: name.to_string(),
        running,
        state,
        note,
        pid,
        monitor_pid,
        record,
        stats,
        log_file: settings.map(|s| s.log_file),
    })
}

fn status(ctx: &Context, a: StatusArgs) -> CmdResult {
    let Some(client) = ctx.client_if_exists()? else {
        if ctx.json {
            println!("{}", if a.name.is_some() { "null" } else { "[]" });
        }
        return Ok(if a.name.is_some() { code::NOT_FOUND } else { 0 });
    };
    let store = client.store();
    let run_dir = client.state_dir().join("run");
    let names = match &a.name {
        Some(n) => vec![name_of(Some(n.clone()))?],
        None => control::local_names(store, &run_dir)?,
    };
    let stats = store.queue_stats()?;
    let views: Vec<StatusView> = names
        .iter()
        .map(|n| view(ctx, store, &run_dir, n))
        .collect::<Result<_, _>>()?;
    let now = Timestamp::now();
    let to_json = |v: &StatusView| {
        let queues: Vec<_> = v
            .record
            .as_ref()
            .map(|r| r.queues.clone())
            .unwrap_or_default();
        let qcounts: Vec<_> = stats
            .iter()
            .filter(|q| queues.contains(&q.queue))
            .map(|q| {
                json!({"queue": q.queue, "queued": q.queued, "scheduled": q.scheduled,
                       "running": q.running, "succeeded": q.succeeded, "failed": q.failed,
                       "cancelled": q.cancelled})
            })
            .collect();
        let mut o = match &v.record {
            Some(r) => render::json::worker(r, &v.state, now),
            None => json!({"name": v.name, "state": v.state}),
        };
        if let Some(obj) = o.as_object_mut() {
            obj.insert("running".into(), json!(v.running));
            obj.insert(
                "pid".into(),
                json!(v.pid.or(v.record.as_ref().map(|r| r.pid))),
            );
            obj.insert("monitor_pid".into(), json!(v.monitor_pid));
            obj.insert(
                "cpu_percent".into(),
                json!(v.stats.map(|s| (s.cpu_percent * 10.0).round() / 10.0)),
            );
            obj.insert("rss_bytes".into(), json!(v.stats.map(|s| s.rss_bytes)));
            obj.insert("threads".into(), json!(v.stats.map(|s| s.threads)));
            obj.insert("log_file".into(), json!(v.log_file));
            obj.insert("state_dir".into(), json!(ctx.state_dir));
            obj.insert("queue_counts".into(), json!(qcounts));
            obj.insert("note".into(), json!(v.note));
            if !v.running {
                obj.insert("uptime_secs".into(), json!(null));
            } else if let Some(s) = v.stats {
                obj.insert("uptime_secs".into(), json!(s.uptime.as_secs()));
            }
        }
        o
    };
    if ctx.json {
        match &a.name {
            Some(_) => println!("{}", to_json(&views[0])),
            None => println!(
                "{}",
                serde_json::Value::Array(views.iter().map(to_json).collect())
            ),
        }
    } else if views.is_empty() {
        println!("no local workers (start one with: workq worker start -d)");
    } else {
        for (i, v) in views.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_view(ctx, v, &stats);
        }
    }
    Ok(match (&a.name, views.first()) {
        (Some(_), Some(v)) if v.running => 0,
        (Some(_), Some(v)) if v.record.is_none() && v.note.is_none() => code::NOT_FOUND,
        (Some(_), Some(_)) => code::JOB_FAILED,
        _ => 0,
    })
}

fn print_view(ctx: &Context, v: &StatusView, stats: &[workq_store::QueueStats]) {
    let now = Timestamp::now();
    let state = ctx.paint(&v.state, render::state_color(&v.state));
    println!("worker {}: {state}", v.name);
    let mut lines: Vec<(&str, String)> = Vec::new();
    if let Some(note) = &v.note {
        lines.push(("note", note.clone()));
    }
    if v.running {
        let mut pid = v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        if let Some(m) = v.monitor_pid {
            pid.push_str(&format!(" (monitor {m})"));
        }
        lines.push(("pid", pid));
    }
    if let Some(s) = v.stats {
        lines.push(("cpu", format!("{:.1}%", s.cpu_percent)));
        lines.push((
            "memory",
            format!("{:.1} MiB RSS", s.rss_bytes as f64 / 1048576.0),
        ));
        lines.push(("threads", s.threads.to_string()));
        lines.push(("uptime", format_duration(s.uptime)));
    }
    if let Some(r) = &v.record {
        lines.push(("slots", format!("{} of {} in use", r.running_jobs, r.slots)));
        lines.push((
            "jobs",
            format!("{} done, {} failed", r.jobs_done, r.jobs_failed),
        ));
        lines.push((
            "heartbeat",
            format!("{} ago", format_duration(now.since(r.heartbeat_at))),
        ));
        if !v.running {
            if let (Some(at), Some(why)) = (r.stopped_at, &r.stop_reason) {
                lines.push(("ended", format!("{} ({why})", at.to_local_short())));
            }
        }
        for q in stats.iter().filter(|q| r.queues.contains(&q.queue)) {
            lines.push((
                "queue",
                format!(
                    "{}: {} queued, {} scheduled, {} running, {} succeeded, {} failed",
                    q.queue, q.queued, q.scheduled, q.running, q.succeeded, q.failed
                ),
            ));
        }
        if !stats.iter().any(|q| r.queues.contains(&q.queue)) {
            lines.push(("queues", format!("{} (no jobs yet)", r.queues.join(","))));
        }
    }
    if let Some(l) = &v.log_file {
        lines.push(("log", l.display().to_string()));
    }
    lines.push(("state dir", ctx.state_dir.display().to_string()));
    let mut t = Table::new(&["", ""]);
    for (k, val) in lines {
        t.row(vec![format!("  {k}"), val]);
    }
    // Key/value lines read the same on a terminal and in a pipe.
    for line in t.render(true).lines().skip(1) {
        println!("{}", line.trim_end());
    }
}

fn pause(ctx: &Context, a: PauseArgs, paused: bool) -> CmdResult {
    let client = ctx.client()?;
    let store = client.store();
    let run_dir = client.state_dir().join("run");
    let names = if a.all {
        control::local_names(store, &run_dir)?
    } else {
        vec![name_of(a.name)?]
    };
    let host = procinfo::hostname();
    let mut out = Vec::new();
    for name in &names {
        store.set_worker_paused(&host, name, paused)?;
        let running = matches!(control::find(store, &run_dir, name)?, Found::Running(_));
        out.push(json!({"name": name, "paused": paused, "running": running}));
        if ctx.json || ctx.quiet {
            continue;
        }
        match (paused, running) {
            (true, true) => println!(
                "worker {name} paused: it lets its running jobs finish and claims nothing new (workq worker resume {name} to undo)"
            ),
            (true, false) => println!("worker {name} is not running; it will start paused"),
            (false, true) => println!("worker {name} resumed: claiming again"),
            (false, false) => println!("worker {name} is not running; it will start unpaused"),
        }
    }
    workq_runtime::doorbell::ring_all(&run_dir);
    // Let running workers acknowledge, so `status` right after shows the new state.
    let want = if paused {
        workq_core::WorkerState::Paused
    } else {
        workq_core::WorkerState::Running
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let pending = store.workers(false)?.into_iter().any(|w| {
            w.host == host
                && names.contains(&w.name)
                && matches!(
                    w.state,
                    workq_core::WorkerState::Running | workq_core::WorkerState::Paused
                )
                && w.state != want
                && procinfo::process_alive(w.pid, w.pid_start_time)
        });
        if !pending {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ctx.json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(0)
}
