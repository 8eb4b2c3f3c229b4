//! `workq worker …`: the lifecycle of local workers. Here: `start` (foreground or daemon) and
//! the hidden entry points of a daemon's monitor and worker processes; the other subcommands
//! are in the files of `worker/`.

mod pause;
mod status;
mod stop;

pub(super) use status::StatusArgs;

use std::path::PathBuf;
use std::time::Duration;

use workq_runtime::control;
use workq_runtime::pidfile::{self, AcquireError, PidFile};
use workq_runtime::{ready, Level, Logger, WorkerOptions, WorkerSettings};

use crate::context::Context;
use crate::daemon::{already_running, own_command, report_failure, start_daemon};
use crate::error::{CliError, CmdResult};
use crate::flag_values;
use crate::worker_settings::{apply_config, check_timing, name_of, DURATIONS};

/// Worker lifecycle
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Start a worker: in the foreground (default) or as a daemon under a monitor (-d)
    Start(StartArgs),
    /// Stop workers: drain gracefully, then kill and requeue after the timeout
    Stop(stop::StopArgs),
    /// Stop a worker and start it again as a daemon with the same settings
    Restart(stop::RestartArgs),
    /// Show whether workers run, with their processes, jobs and queues
    Status(StatusArgs),
    /// Stop claiming new jobs (running jobs go on); survives restarts
    Pause(pause::PauseArgs),
    /// Claim jobs again after a pause
    Resume(pause::PauseArgs),
    /// `workers list`, for those who type it under `worker`
    #[command(hide = true)]
    List(super::workers::ListArgs),
    /// `workers cleanup`, for those who type it under `worker`
    #[command(hide = true)]
    Cleanup(super::workers::CleanupArgs),
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
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    stop_timeout: Option<Duration>,
    /// Between heartbeats [default: 5s]
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    heartbeat: Option<Duration>,
    /// A daemon whose heartbeat is older than this while its process lives is hung: killed and restarted [default: 60s]
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    hung_after: Option<Duration>,
    /// Restarts the monitor allows per --restart-window before it gives up [default: 3]
    #[arg(long, value_name = "N")]
    max_restarts: Option<u32>,
    /// Window over which restarts are counted [default: 1h]
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    restart_window: Option<Duration>,
    /// Rotate the worker log past this size, e.g. 10MiB [default: 10MiB]
    #[arg(long, value_name = "SIZE", value_parser = flag_values::size)]
    log_max_size: Option<u64>,
    /// Old worker logs kept after rotation [default: 3]
    #[arg(long, value_name = "N")]
    log_keep: Option<u32>,
    /// A worker for the length of one command (`submit --wait`): no PID file, no log file,
    /// not managed by `worker stop --all` or `pause --all`
    #[arg(long, hide = true, conflicts_with = "daemon")]
    temporary: bool,
    /// With --temporary: claim only this job (repeatable), not the rest of the queue
    #[arg(long, hide = true, value_name = "ID", requires = "temporary")]
    only_job: Vec<i64>,
}

/// Runs `workq worker …`.
pub fn run(ctx: &Context, c: Command) -> CmdResult {
    match c {
        Command::Start(a) => start(ctx, a),
        Command::Stop(a) => stop::stop(ctx, a),
        Command::Restart(a) => stop::restart(ctx, a),
        Command::Status(a) => status::status(ctx, a),
        Command::Pause(a) => pause::pause(ctx, a, true),
        Command::Resume(a) => pause::pause(ctx, a, false),
        Command::List(a) => super::workers::run(ctx, super::workers::Command::List(a)),
        Command::Cleanup(a) => super::workers::run(ctx, super::workers::Command::Cleanup(a)),
        Command::Monitor => monitor(ctx),
        Command::Run => run_under_monitor(ctx),
    }
}

/// Settings from the defaults, the config and the flags, each with its source.
fn settings_from(ctx: &Context, a: &StartArgs) -> Result<WorkerSettings, CliError> {
    let name = name_of(a.name.clone())?;
    let mut s = WorkerSettings::defaults(&name, &ctx.state_dir);
    apply_config(&ctx.config, &mut s);
    apply_flags(a, &mut s)?;
    check_timing(&s)?;
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

/// The flags of `worker start` over the settings, each recorded as their source.
fn apply_flags(a: &StartArgs, s: &mut WorkerSettings) -> Result<(), CliError> {
    if let Some(w) = a.slots {
        if w == 0 {
            return Err(CliError::usage("-w/--workers must be at least 1"));
        }
        s.slots = w;
        s.set_source("slots", "flag -w");
    }
    if !a.queues.is_empty() {
        let queues: Vec<String> = a
            .queues
            .iter()
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
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
    for d in &DURATIONS {
        if let Some(v) = a.duration(d.key) {
            d.set(s, v, format!("flag {}", d.flag));
        }
    }
    if let Some(n) = a.max_restarts {
        s.max_restarts = n;
        s.set_source("max_restarts", "flag --max-restarts");
    }
    if let Some(v) = a.log_max_size {
        s.log_max_bytes = v;
        s.set_source("log_max_size", "flag --log-max-size");
    }
    if let Some(n) = a.log_keep {
        s.log_keep = n;
        s.set_source("log_keep", "flag --log-keep");
    }
    Ok(())
}

impl StartArgs {
    /// The value given for the duration setting `key` (one of [`DURATIONS`]).
    fn duration(&self, key: &str) -> Option<Duration> {
        match key {
            "stop_timeout" => self.stop_timeout,
            "heartbeat" => self.heartbeat,
            "hung_after" => self.hung_after,
            "restart_window" => self.restart_window,
            _ => None,
        }
    }
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
        opts.only_jobs = a.only_job.clone();
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
    .map_err(|e| CliError::worker_log(&settings.log_file, e))?;
    let run_dir = client.state_dir().join("run");
    let pid_path = pidfile::path_for(&run_dir, &name);
    let mut pid_file = match PidFile::acquire(&pid_path, &mut |s| log.info(format_args!("{s}"))) {
        Ok(f) => f,
        Err(AcquireError::Running(_)) => {
            let found = control::find(client.store(), &run_dir, &name)?;
            return Err(already_running(&name, &found));
        }
        Err(AcquireError::Io(e)) => {
            return Err(CliError::unavailable(format!(
                "cannot write PID file {}: {e}",
                pid_path.display()
            )))
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
        Err(e) => return report_failure(&mut ready, CliError::current_exe(e)),
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
        Err(e) => return report_failure(&mut ready, CliError::worker_log(&settings.log_file, e)),
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
            log.error(format_args!("{}", e.message()));
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
