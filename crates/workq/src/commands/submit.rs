//! `workq submit`: queue one job, or one per line of a file.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use workq::{JobSpec, Submitted};
use workq_core::{JobState, Outcome, Timestamp};
use workq_runtime::ephemeral::EphemeralWorker;

use crate::context::Context;
use crate::error::{code, CliError, CmdResult, ErrorKind};
use crate::flag_values::{self, parse_kv, JobTimeout};
use crate::interrupts::Interrupts;
use crate::log_tail::LogTail;

/// Queue a job: workq submit [OPTIONS] -- COMMAND [ARGS]...
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  workq submit -- ./process.sh sub-01\n  workq submit -Q gpu -p 10 --retries 2 --timeout 2h -- python train.py\n  workq submit --shell -- 'make -j4 && make test'\n  workq submit --lines jobs.txt          # one shell command per line\n  workq submit --wait -- echo hello      # run now, print output, exit with its status"
)]
pub struct Args {
    /// Queue
    #[arg(short = 'Q', long, default_value = "default")]
    queue: String,
    /// Priority: higher runs first [default: config, else 0]
    #[arg(short, long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Extra attempts after a failure [default: config, else 0]
    #[arg(long)]
    retries: Option<u32>,
    /// First retry delay, doubling after each further failure (e.g. 10s, 5m) [default: config, else 10s]
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    backoff: Option<Duration>,
    /// Kill the job after this long (SIGTERM, then SIGKILL after --kill-grace); none for no limit [default: config, else none]
    #[arg(long, value_name = "DUR", value_parser = flag_values::job_timeout)]
    timeout: Option<JobTimeout>,
    /// Between SIGTERM and SIGKILL when the job is stopped [default: config, else 10s]
    #[arg(long, value_name = "DUR", value_parser = flag_values::duration)]
    kill_grace: Option<Duration>,
    /// Start no sooner than this long from now
    #[arg(long, value_name = "DUR", conflicts_with = "at", value_parser = flag_values::duration)]
    delay: Option<Duration>,
    /// Start no sooner than this time (RFC 3339, or local "2026-11-24 09:00")
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Run only after this job succeeded (repeatable)
    #[arg(long, value_name = "ID")]
    after: Vec<i64>,
    /// At most one queued-or-running job with this key
    #[arg(long, value_name = "KEY")]
    unique: Option<String>,
    /// Submitting again with the same key returns the same job
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Label for filtering (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Environment variable for the job (repeatable)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory [default: the current directory]
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Run the command as one string with `sh -c`
    #[arg(long)]
    shell: bool,
    /// Wait for the job, print its output and exit with its status
    #[arg(long)]
    wait: bool,
    /// One job per non-empty line of FILE (or - for stdin), run with `sh -c`, in one transaction
    #[arg(long, value_name = "FILE", conflicts_with_all = ["wait", "shell", "unique", "idempotency_key"])]
    lines: Option<String>,
    /// The command and its arguments (after --)
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn template(ctx: &Context, a: &Args) -> Result<JobSpec, CliError> {
    let mut spec = JobSpec::new(a.queue.clone(), Vec::new());
    if a.queue.trim().is_empty() {
        return Err(CliError::usage("-Q/--queue: the queue name is empty"));
    }
    // The queue's config (or [defaults]) first, the flags over it.
    crate::config::apply_job_defaults(&ctx.config, &a.queue, &mut spec);
    // A container-mode queue runs what is submitted to it in its container, as `run` does.
    spec.container = crate::container::container_for(ctx, &a.queue)?;
    if let Some(p) = a.priority {
        spec.priority = p;
    }
    if let Some(r) = a.retries {
        spec.retries = r;
    }
    if let Some(b) = a.backoff {
        spec.backoff = b;
    }
    if let Some(k) = a.kill_grace {
        spec.kill_grace = k;
    }
    if let Some(JobTimeout(t)) = a.timeout {
        spec.timeout = t;
    }
    if let Some(d) = a.delay {
        spec.run_at = Some(Timestamp::now().plus(d));
    }
    if let Some(at) = &a.at {
        spec.run_at =
            Some(Timestamp::parse_at(at).map_err(|e| CliError::usage(format!("--at: {e}")))?);
    }
    spec.after = a.after.clone();
    spec.unique_key = a.unique.clone();
    spec.idempotency_key = a.idempotency_key.clone();
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = parse_kv("--label", l)?;
        labels.insert(k, v);
    }
    spec.labels = labels;
    for e in &a.env {
        let (k, v) = parse_kv("-e/--env", e)?;
        spec.env.insert(k, v);
    }
    let cwd = std::env::current_dir().map_err(CliError::current_dir)?;
    let dir = match &a.cwd {
        Some(d) => cwd.join(d),
        // The queue's configured cwd, else where submit runs.
        None => match &spec.cwd {
            Some(c) => cwd.join(c),
            None => cwd,
        },
    };
    if a.cwd.is_some() && !dir.is_dir() {
        return Err(CliError::not_found(format!(
            "-C {}: no such directory",
            dir.display()
        )));
    }
    spec.cwd = Some(dir.display().to_string());
    Ok(spec)
}

fn read_lines(source: &str) -> Result<Vec<String>, CliError> {
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(source)
            .map_err(|e| CliError::unreadable(format_args!("--lines {source}"), e))?;
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    };
    parse_lines(reader, source)
}

/// One command per non-empty line (a trailing `\r` dropped); any invalid UTF-8 is an error
/// naming the line.
fn parse_lines(reader: impl BufRead, source: &str) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    for (n, line) in reader.split(b'\n').enumerate() {
        let bytes = line.map_err(|e| {
            CliError::usage(format!("--lines {source}: cannot read line {}: {e}", n + 1))
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            CliError::usage(format!(
                "--lines {source}: line {} is not valid UTF-8",
                n + 1
            ))
        })?;
        let trimmed = text.trim_end_matches('\r');
        if !trimmed.trim().is_empty() {
            out.push(trimmed.to_string());
        }
    }
    Ok(out)
}

/// Runs `workq submit`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let base = template(ctx, &a)?;
    if let Some(source) = &a.lines {
        if !a.command.is_empty() {
            return Err(CliError::usage(
                "--lines takes the commands from the file: give no COMMAND after it",
            ));
        }
        return submit_lines(ctx, base, source);
    }
    if a.command.is_empty() {
        return Err(CliError::usage("no command given")
            .with_hint("put the command after --, e.g. workq submit -- echo hello"));
    }
    let raw: Vec<String> = std::env::args_os()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let stray = stray_words(&a.command, &raw);
    if !stray.is_empty() {
        return Err(stray_words_error(&stray));
    }
    let mut spec = base;
    spec.argv = if a.shell {
        vec!["sh".into(), "-c".into(), a.command.join(" ")]
    } else {
        a.command.clone()
    };
    if spec.argv[0].is_empty() {
        return Err(CliError::usage("the command is empty"));
    }
    // Signals must be blocked before any thread or child exists (the ephemeral worker).
    let interrupts = a.wait.then(Interrupts::install);
    let client = ctx.client()?;
    let submitted = client
        .submit(spec.clone())
        .map_err(|e| with_after_hint(e.into(), &spec.after))?;
    let id = submitted.id();
    match submitted {
        Submitted::Duplicate(existing) => {
            return Err(CliError::conflict(format!(
                "job {existing} with unique key {:?} is already queued or running; nothing was submitted",
                spec.unique_key.unwrap_or_default()
            ))
            .with_hint(format!("follow it with: workq wait {existing}")));
        }
        Submitted::Existing(_) if !ctx.quiet && !ctx.json => {
            eprintln!("workq: idempotency key seen before: this is job {id}");
        }
        _ => {}
    }
    if !a.wait {
        if ctx.json {
            let job = client.get(id)?;
            println!(
                "{}",
                serde_json::json!({"id": id, "queue": job.spec.queue, "state": job.display_state(Timestamp::now())})
            );
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    let interrupts = interrupts.unwrap_or_else(Interrupts::install);
    wait_for_one(ctx, &client, id, &spec, &interrupts)
}

/// The words clap took for the command that come before the first `--` of the raw command
/// line `raw`: `submit --timeout 1h 30m -- echo hi` gives `30m`, which would otherwise be
/// queued as the program. When `raw` has `--`, the command is exactly what follows it.
fn stray_words(command: &[String], raw: &[String]) -> Vec<String> {
    let Some(dashes) = raw.iter().position(|w| w == "--") else {
        return Vec::new();
    };
    let after = &raw[dashes + 1..];
    if command.len() < after.len() || !command.ends_with(after) {
        return Vec::new();
    }
    let mut before = &command[..command.len() - after.len()];
    // clap keeps the `--` that ended the options among the command's words.
    if before.last().is_some_and(|w| w == "--") {
        before = &before[..before.len() - 1];
    }
    before.to_vec()
}

/// The usage error for words before `--` that are neither options nor their values.
fn stray_words_error(stray: &[String]) -> CliError {
    let quoted: Vec<String> = stray.iter().map(|w| format!("{w:?}")).collect();
    let what = if stray.len() == 1 {
        "is neither an option nor an option's value"
    } else {
        "are neither options nor options' values"
    };
    CliError::usage(format!("{} before -- {what}", quoted.join(", "))).with_hint(
        "quote a value with spaces (--timeout '1h 30m'); a command that itself contains -- goes after a leading --: workq submit -- git diff -- file",
    )
}

/// `--lines`: one `sh -c` job per non-empty line, all in one transaction, like `base`.
fn submit_lines(ctx: &Context, base: JobSpec, source: &str) -> CmdResult {
    let lines = read_lines(source)?;
    if lines.is_empty() {
        return Err(CliError::usage(format!(
            "--lines {source}: no commands (every line is empty)"
        )));
    }
    let specs: Vec<JobSpec> = lines
        .into_iter()
        .map(|l| JobSpec {
            argv: vec!["sh".into(), "-c".into(), l],
            ..base.clone()
        })
        .collect();
    let client = ctx.client()?;
    let out = client
        .submit_many(&specs)
        .map_err(|e| with_after_hint(e.into(), &base.after))?;
    let ids: Vec<i64> = out.iter().map(|s| s.id()).collect();
    if ctx.json {
        let arr: Vec<_> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "queue": base.queue, "state": "queued"}))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if ctx.tty {
        println!(
            "queued {} jobs on {}: ids {}–{}",
            ids.len(),
            base.queue,
            ids.first().copied().unwrap_or(0),
            ids.last().copied().unwrap_or(0)
        );
    } else if !ctx.quiet {
        let mut stdout = std::io::stdout().lock();
        for id in &ids {
            let _ = writeln!(stdout, "{id}");
        }
    }
    Ok(0)
}

/// A job refused for its `--after` dependencies (one missing, failed or cancelled), with the fix
/// in this command's terms.
fn with_after_hint(e: CliError, after: &[i64]) -> CliError {
    if after.is_empty() || !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) {
        return e;
    }
    e.with_hint(
        "every --after ID must be a job that has not failed or been cancelled: `workq retry ID` queues a failed one again, or drop --after ID",
    )
}

/// The jobs a temporary worker for job `id` may run: the job and the jobs it was told to run
/// after, since it cannot run before they do. When one of those waits on further jobs, the list
/// would have to follow the whole chain: the worker then serves the queue as a whole (empty
/// list), as a worker started by hand would.
fn jobs_to_run(client: &workq::Client, id: i64, after: &[i64]) -> Result<Vec<i64>, CliError> {
    let mut only = vec![id];
    for &dep in after.iter().filter(|a| **a != id) {
        let job = client.get(dep)?;
        if job.state == JobState::Queued && job.deps_pending > 0 {
            return Ok(Vec::new());
        }
        only.push(dep);
    }
    Ok(only)
}

/// Waits for job `id`, streaming its output; starts a temporary worker if none serves `queue`.
fn wait_for_one(
    ctx: &Context,
    client: &workq::Client,
    id: i64,
    spec: &JobSpec,
    interrupts: &Interrupts,
) -> CmdResult {
    let queue = spec.queue.as_str();
    let only = jobs_to_run(client, id, &spec.after)?;
    let mut ephemeral = temporary_worker(ctx, client, queue, &only)?;
    if !ctx.quiet && !ctx.json && ctx.err_tty {
        eprintln!("workq: job {id} queued; waiting (Ctrl-C to stop waiting)");
    }
    let mut tail = LogTail::new(&client.log_dir(), 0);
    loop {
        let job = client.get(id)?;
        if !ctx.json && !ctx.quiet {
            tail.pump(&job, &mut std::io::stdout(), true);
        }
        if job.state.is_terminal() {
            drop(ephemeral.take());
            return report_finished(ctx, client, &job, tail.has_shown(job.attempt));
        }
        if interrupts.received().is_some() {
            let had_temp = ephemeral.is_some();
            drop(ephemeral.take());
            return report_interrupted(ctx, client, &mut tail, id, queue, had_temp);
        }
        if let Some(w) = ephemeral.as_mut() {
            if w.exited() {
                ephemeral = None;
                client.clean_up_dead_workers()?;
                if client.live_workers_serving(queue)?.is_empty() {
                    return Err(CliError::unavailable(format!(
                        "the temporary worker for queue {queue} exited before job {id} finished"
                    ))
                    .with_hint("run `workq worker start` to see why"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker for the length of this command when no live worker serves `queue`; it runs the
/// jobs `only`, not the others waiting in the queue (ARCHITECTURE.md §5.11).
fn temporary_worker(
    ctx: &Context,
    client: &workq::Client,
    queue: &str,
    only: &[i64],
) -> Result<Option<EphemeralWorker>, CliError> {
    client.clean_up_dead_workers()?;
    if client.live_workers_serving(queue)?.is_empty() {
        let exe = std::env::current_exe().map_err(|e| {
            CliError::unavailable(format!(
                "cannot find the workq executable to start a worker: {e}"
            ))
        })?;
        let mut args = vec![
            "--state-dir".to_string(),
            ctx.state_dir.display().to_string(),
        ];
        args.extend(ctx.store_args());
        args.extend([
            "-q".to_string(),
            "worker".to_string(),
            "start".to_string(),
            format!("temp-{}", std::process::id()),
            "--temporary".to_string(),
            "-Q".to_string(),
            queue.to_string(),
            "--stop-timeout".to_string(),
            "0s".to_string(),
        ]);
        for id in only {
            args.extend(["--only-job".to_string(), id.to_string()]);
        }
        let w = EphemeralWorker::start(&exe, &args)
            .map_err(|e| CliError::unavailable(format!("cannot start a temporary worker: {e}")))?;
        if ctx.verbose {
            eprintln!(
                "workq: no worker serves queue {queue}; started a temporary one (pid {})",
                w.pid().unwrap_or(0)
            );
        }
        return Ok(Some(w));
    }
    Ok(None)
}

/// The end of a finished job: its attempts in JSON, or why it failed (unless its log, just
/// shown, said it already: a spawn error is written there); exits with its status.
fn report_finished(
    ctx: &Context,
    client: &workq::Client,
    job: &workq::Job,
    log_shown: bool,
) -> CmdResult {
    let attempts = client.store().attempts(job.id)?;
    let last = attempts.last();
    let spawn_error = last.is_some_and(|a| a.outcome == Some(Outcome::SpawnError));
    if ctx.json {
        let mut v = crate::render::json::job(job, Timestamp::now());
        v["attempts"] = attempts.iter().map(crate::render::json::attempt).collect();
        println!("{v}");
    } else if job.state != JobState::Succeeded && !ctx.quiet && !(spawn_error && log_shown) {
        eprintln!(
            "workq: job {} {}: {}",
            job.id,
            job.state,
            job.last_error.as_deref().unwrap_or("no details")
        );
    }
    Ok(job_exit_status(job, last))
}

/// Ctrl-C while waiting: the rest of the output, and where the job stands (`had_temp`: the
/// temporary worker that ran it has just been stopped, so it is queued again).
fn report_interrupted(
    ctx: &Context,
    client: &workq::Client,
    tail: &mut LogTail,
    id: i64,
    queue: &str,
    had_temp: bool,
) -> CmdResult {
    let job = client.get(id)?;
    if !ctx.json && !ctx.quiet {
        tail.pump(&job, &mut std::io::stdout(), false);
    }
    if job.state.is_terminal() {
        eprintln!("workq: interrupted; job {id} had already {}", job.state);
    } else if had_temp {
        eprintln!(
            "workq: interrupted; job {id} is {} again and no worker is running it: cancel it with `workq cancel {id}` or run it with `workq worker start -Q {queue}`",
            job.state
        );
    } else {
        eprintln!(
            "workq: stopped waiting; job {id} is {} (follow it with `workq logs -f {id}`)",
            job.state
        );
    }
    Ok(code::INTERRUPTED)
}

/// The exit status `submit --wait` reports for a finished job: its own code, 128+N for a
/// signal, 127 or 126 for a program that could not start (as a shell gives them), else 1.
fn job_exit_status(job: &workq::Job, last: Option<&workq::Attempt>) -> u8 {
    let signal = last.and_then(|a| a.signal);
    let spawn_error = last
        .filter(|a| a.outcome == Some(Outcome::SpawnError))
        .and_then(|a| a.error.as_deref())
        .and_then(workq_runtime::spawn::spawn_error_status);
    match job.state {
        JobState::Succeeded => 0,
        JobState::Failed => match (job.exit_code, signal, spawn_error) {
            (Some(c), _, _) if (1..=255).contains(&c) => c as u8,
            (_, Some(s), _) if s > 0 => (128 + s).min(255) as u8,
            (_, _, Some(status)) => status,
            _ => 1,
        },
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn words_before_the_first_double_dash_are_strays() {
        let stray = |command: &str, raw: &str| super::stray_words(&words(command), &words(raw));
        assert_eq!(
            stray("30m -- echo hi", "workq submit --timeout 1h 30m -- echo hi"),
            ["30m"]
        );
        assert_eq!(
            stray("a b -- echo hi", "workq submit a b -- echo hi"),
            ["a", "b"]
        );
        let none: [&str; 0] = [];
        assert_eq!(stray("echo hi", "workq submit echo hi"), none);
        assert_eq!(stray("echo hi", "workq submit -- echo hi"), none);
        assert_eq!(
            stray("echo -- hi", "workq submit -- echo -- hi"),
            none,
            "a command that contains -- after a leading --"
        );
        assert_eq!(
            stray("git diff -- file", "workq submit -Q x -- git diff -- file"),
            none
        );
    }

    proptest! {
        #[test]
        fn the_lines_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let got = super::parse_lines(&bytes[..], "fuzz");
            if let Ok(lines) = got {
                prop_assert!(lines.iter().all(|l| !l.trim().is_empty() && !l.contains('\n')));
            }
        }
    }
}
