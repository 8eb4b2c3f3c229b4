//! `workq run QUEUE`: typed jobs from a queue's command template, one per parameter row, all
//! submitted in one transaction; `--wait` runs them to the end with a temporary pool if needed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use workq_core::{params, JobSpec, JobState, Template, Timestamp};
use workq_store::Submitted;

use crate::container::container_for;
use crate::context::Context;
use crate::error::{code, CliError, CmdResult};
use crate::flag_values::parse_kv;
use crate::interrupts::Interrupts;
use crate::render::{self, table::Table};
use crate::waiting::{wait_jobs, WaitEnd};

/// Run typed jobs
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  workq run qsiprep --param participant=01 --param session=a
  workq run qsiprep --params sessions.csv --where site=upenn --dry-run
  workq run qsiprep --params sessions.csv --wait

One job per row of --params (CSV with a header, or JSON Lines), with --param values added to
every row. A parameter value is always exactly one argument of the command. Rows whose unique
key already has a queued, running or succeeded job are skipped (--force submits succeeded ones
again). --wait shows progress, ends with a results table and exits 1 if any job failed; when no
worker serves the queue it starts the queue's pool for the duration and stops it on exit.")]
pub struct Args {
    /// A queue defined in config ([queues.NAME] command = …)
    queue: String,
    /// A parameter for every job (repeatable)
    #[arg(short = 'p', long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// One job per row: a .csv file with a header, or .jsonl/.ndjson (one object per line)
    #[arg(long = "params", value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// Only rows whose column K equals V (repeatable; all must match)
    #[arg(long = "where", value_name = "K=V")]
    filters: Vec<String>,
    /// Print the exact argv of each job; submit nothing
    #[arg(long)]
    dry_run: bool,
    /// Submit rows whose unique key already succeeded
    #[arg(long)]
    force: bool,
    /// Block until the jobs finish (starting the queue's pool if no worker serves it)
    #[arg(long)]
    wait: bool,
    /// With --wait: fail instead of starting workers when none serves the queue
    #[arg(long, requires = "wait")]
    no_start_workers: bool,
}

struct Planned {
    line: Option<usize>,
    values: BTreeMap<String, String>,
    spec: JobSpec,
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn template_of(ctx: &Context, queue: &str) -> Result<Template, CliError> {
    let key = format!("queues.{queue}.command");
    let Some(setting) = ctx.config.get(&key) else {
        let known = ctx.config.queue_names();
        return Err(CliError::usage(format!("queue {queue:?} has no command in the config"))
            .with_hint(if known.is_empty() {
                format!("define it in .workq/config.toml:\n  [queues.{queue}]\n  command = \"prog {{param}} …\"")
            } else {
                format!("typed queues defined: {}", known.join(", "))
            }));
    };
    let parsed = match &setting.value {
        toml::Value::String(s) => Template::parse(s),
        toml::Value::Array(a) => Template::from_argv(
            &a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<Vec<_>>(),
        ),
        _ => return Err(CliError::usage(format!("{key}: not a command"))),
    };
    parsed.map_err(|e| CliError::usage(format!("{key} ({}): {e}", setting.source)))
}

fn read_rows(path: &PathBuf) -> Result<params::Table, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::unreadable(format_args!("--params {}", path.display()), e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let parsed = match ext.as_str() {
        "jsonl" | "ndjson" | "json" => params::parse_jsonl(&text),
        "csv" => params::parse_csv(&text),
        _ if text.trim_start().starts_with('{') => params::parse_jsonl(&text),
        _ => params::parse_csv(&text),
    };
    parsed.map_err(|e| CliError::usage(format!("--params {}: {e}", path.display())))
}

/// A row of parameters: the line of `--params` it came from (none for `--param` alone) and its
/// values.
type Row = (Option<usize>, BTreeMap<String, String>);

/// A row not submitted: the job that already has its key, if any, and why.
struct Skipped {
    row: Planned,
    existing: Option<i64>,
    why: String,
}

/// What was submitted, for the results and the JSON of `--wait`.
struct Submission {
    ids: Vec<i64>,
    submitted_json: Vec<serde_json::Value>,
    skipped_json: Vec<serde_json::Value>,
}

/// Runs `workq run`; returns its exit code.
pub fn run(ctx: &Context, a: Args) -> CmdResult {
    let interrupts = a.wait.then(Interrupts::install);
    let template = template_of(ctx, &a.queue)?;
    let container = container_for(ctx, &a.queue)?;
    let needed = template.params();
    let unique = unique_of(ctx, &a.queue)?;
    let rows = rows_of(&a, &needed)?;
    if rows.is_empty() {
        if !ctx.quiet {
            eprintln!("workq: no rows to run (after --where)");
        }
        if ctx.json {
            println!("{}", json!({"submitted": [], "skipped": []}));
        }
        return Ok(0);
    }
    let cwd = std::env::current_dir().map_err(CliError::current_dir)?;
    let planned = rows
        .into_iter()
        .map(|row| {
            let mut p = plan(ctx, &a.queue, &template, &needed, row)?;
            p.spec.container = container.clone();
            p.spec.cwd = Some(match &p.spec.cwd {
                Some(c) => cwd.join(c).display().to_string(),
                None => cwd.display().to_string(),
            });
            if let Some(u) = &unique {
                p.spec.unique_key = Some(unique_key(&a.queue, u, &p)?);
            }
            Ok(p)
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    let client = ctx.client()?;
    let (to_submit, skipped) = skip_existing(&client, planned, a.force)?;
    if a.dry_run {
        print_dry_run(ctx, &a, &to_submit, &skipped);
        return Ok(0);
    }
    let submission = submit(ctx, &client, &a, &needed, &to_submit, &skipped)?;
    if !a.wait {
        if ctx.json {
            println!(
                "{}",
                json!({"submitted": submission.submitted_json, "skipped": submission.skipped_json})
            );
        }
        return Ok(0);
    }
    let interrupts = interrupts.unwrap_or_else(Interrupts::install);
    wait_for_all(ctx, &client, &a, &needed, &submission, &interrupts)
}

/// The queue's `unique` template, which makes each row's unique key.
fn unique_of(ctx: &Context, queue: &str) -> Result<Option<Template>, CliError> {
    let Some(u) = ctx.config.str(&format!("queues.{queue}.unique")) else {
        return Ok(None);
    };
    Template::single(&u)
        .map(Some)
        .map_err(|e| CliError::usage(format!("queues.{queue}.unique: {e}")))
}

/// The rows to run: one per row of `--params` (or one of `--param` values alone), each with
/// the `--param` values added, only those matching every `--where`.
fn rows_of(a: &Args, needed: &[String]) -> Result<Vec<Row>, CliError> {
    let mut given = BTreeMap::new();
    for p in &a.params {
        let (k, v) = parse_kv("--param", p)?;
        given.insert(k, v);
    }
    let filters: Vec<(String, String)> = a
        .filters
        .iter()
        .map(|f| parse_kv("--where", f))
        .collect::<Result<_, _>>()?;
    let mut rows: Vec<Row> = match &a.params_file {
        Some(path) => file_rows(path, &a.queue, needed, &given, &filters)?,
        None => vec![(None, given)],
    };
    rows.retain(|(_, v)| filters.iter().all(|(k, want)| v.get(k) == Some(want)));
    Ok(rows)
}

/// The rows of a `--params` file, checked for the columns the template and `--where` need.
fn file_rows(
    path: &PathBuf,
    queue: &str,
    needed: &[String],
    given: &BTreeMap<String, String>,
    filters: &[(String, String)],
) -> Result<Vec<Row>, CliError> {
    let table = read_rows(path)?;
    let lacking: Vec<&str> = needed
        .iter()
        .filter(|n| !table.columns.contains(n) && !given.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !lacking.is_empty() && !table.rows.is_empty() {
        return Err(CliError::usage(format!(
            "--params {}: no column {} (the template of queue {queue} needs {}; the file has {})",
            path.display(),
            lacking.join(", "),
            needed.join(", "),
            table.columns.join(", ")
        ))
        .with_hint("add the column, or give the value for every row with --param K=V"));
    }
    for (k, _) in filters {
        if !table.columns.contains(k) && !given.contains_key(k) {
            return Err(CliError::usage(format!(
                "--where {k}=…: no such column in {} (columns: {})",
                path.display(),
                table.columns.join(", ")
            )));
        }
    }
    Ok(table
        .rows
        .into_iter()
        .map(|r| {
            let mut v = r.values;
            v.extend(given.clone());
            (Some(r.line), v)
        })
        .collect())
}

/// Where a row's error happened, for messages.
fn row_at(line: Option<usize>) -> String {
    line.map(|l| format!("row at line {l}: "))
        .unwrap_or_default()
}

/// The job one row becomes: the template rendered, the queue's defaults, its parameters as
/// labels.
fn plan(
    ctx: &Context,
    queue: &str,
    template: &Template,
    needed: &[String],
    (line, values): Row,
) -> Result<Planned, CliError> {
    let argv = template.render(&values).map_err(|e| {
        CliError::usage(format!("{}{e}", row_at(line)))
            .with_hint("give it with --param K=V, or as a column of --params FILE")
    })?;
    let mut spec = JobSpec::new(queue.to_string(), argv);
    crate::config::apply_job_defaults(&ctx.config, queue, &mut spec);
    spec.labels = values
        .iter()
        .filter(|(k, _)| needed.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Planned { line, values, spec })
}

/// A row's unique key: the queue's name and its `unique` template rendered.
fn unique_key(queue: &str, unique: &Template, p: &Planned) -> Result<String, CliError> {
    let key = unique
        .render_one(&p.values)
        .map_err(|e| CliError::usage(format!("{}queues.{queue}.unique: {e}", row_at(p.line))))?;
    Ok(format!("{queue}:{key}"))
}

/// Splits off the rows whose key already has a queued, running or succeeded job (succeeded
/// ones go again with `force`), or that repeat a key of an earlier row.
fn skip_existing(
    client: &workq::Client,
    planned: Vec<Planned>,
    force: bool,
) -> Result<(Vec<Planned>, Vec<Skipped>), CliError> {
    let keys: Vec<String> = planned
        .iter()
        .filter_map(|p| p.spec.unique_key.clone())
        .collect();
    let existing: BTreeMap<String, (i64, JobState)> = client
        .store()
        .jobs_with_unique_keys(&keys)?
        .into_iter()
        .map(|(k, id, st)| (k, (id, st)))
        .collect();
    let mut skipped = Vec::new();
    let mut to_submit = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in planned {
        let Some(k) = p.spec.unique_key.clone() else {
            to_submit.push(p);
            continue;
        };
        if !seen.insert(k.clone()) {
            let why = "the same key appears earlier in this run".to_string();
            skipped.push(Skipped {
                row: p,
                existing: None,
                why,
            });
            continue;
        }
        match existing.get(&k) {
            Some((id, st)) if !(force && *st == JobState::Succeeded) => {
                let why = format!("job {id} with key {k:?} is already {st}");
                skipped.push(Skipped {
                    row: p,
                    existing: Some(*id),
                    why,
                });
            }
            _ => to_submit.push(p),
        }
    }
    Ok((to_submit, skipped))
}

/// `--dry-run`: the exact argv of each job that would be submitted, and the rows skipped.
fn print_dry_run(ctx: &Context, a: &Args, to_submit: &[Planned], skipped: &[Skipped]) {
    if ctx.json {
        let jobs: Vec<_> = to_submit
            .iter()
            .map(|p| json!({"argv": p.spec.argv, "params": p.values, "unique_key": p.spec.unique_key, "cwd": p.spec.cwd}))
            .collect();
        let sk: Vec<_> = skipped
            .iter()
            .map(|s| json!({"params": s.row.values, "existing_id": s.existing, "reason": s.why}))
            .collect();
        println!("{}", json!({"would_submit": jobs, "skipped": sk}));
        return;
    }
    for p in to_submit {
        let argv: Vec<String> = p.spec.argv.iter().map(|s| quote(s)).collect();
        println!("{}", argv.join(" "));
    }
    report_skips(ctx, skipped, a.force);
    if !ctx.quiet {
        eprintln!(
            "workq: dry run: {} job(s) would be submitted to queue {}; nothing was submitted",
            to_submit.len(),
            a.queue
        );
    }
}

/// Submits the rows in one transaction and shows what became of each.
fn submit(
    ctx: &Context,
    client: &workq::Client,
    a: &Args,
    needed: &[String],
    to_submit: &[Planned],
    skipped: &[Skipped],
) -> Result<Submission, CliError> {
    let specs: Vec<JobSpec> = to_submit.iter().map(|p| p.spec.clone()).collect();
    let results = if specs.is_empty() {
        Vec::new()
    } else {
        client.submit_many(&specs)?
    };
    let header: Vec<String> = ["ID".to_string()]
        .into_iter()
        .chain(needed.iter().map(|s| s.to_uppercase()))
        .chain(["STATE".to_string()])
        .collect();
    let mut t = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    let mut ids = Vec::new();
    let mut submitted_json = Vec::new();
    for (p, r) in to_submit.iter().zip(&results) {
        let (id, state) = match r {
            Submitted::Created(id) => (*id, "queued"),
            Submitted::Existing(id) => (*id, "existing"),
            Submitted::Duplicate(id) => (*id, "duplicate"),
        };
        if matches!(r, Submitted::Created(_)) {
            ids.push(id);
        }
        let mut row = vec![id.to_string()];
        row.extend(
            needed
                .iter()
                .map(|k| p.values.get(k).cloned().unwrap_or_default()),
        );
        row.push(state.to_string());
        t.row(row);
        submitted_json.push(
            json!({"id": id, "queue": a.queue, "state": state, "params": p.values, "line": p.line}),
        );
    }
    let skipped_json = skipped
        .iter()
        .map(|s| json!({"params": s.row.values, "existing_id": s.existing, "reason": s.why, "line": s.row.line}))
        .collect();
    if !ctx.json && !ctx.quiet {
        if !t.is_empty() {
            t.print(ctx.tty);
        }
        eprintln!("workq: submitted {} job(s) to queue {}", ids.len(), a.queue);
        report_skips(ctx, skipped, a.force);
    }
    Ok(Submission {
        ids,
        submitted_json,
        skipped_json,
    })
}

/// `--wait`: runs the jobs to the end on the workers that serve the queue, or on its pool
/// started for the duration; exits 1 if any failed.
fn wait_for_all(
    ctx: &Context,
    client: &workq::Client,
    a: &Args,
    needed: &[String],
    submission: &Submission,
    interrupts: &Interrupts,
) -> CmdResult {
    let pool = pool_if_needed(ctx, client, a)?;
    let end = wait_jobs(ctx, client, &submission.ids, None, interrupts)?;
    // Stop the pool before reporting: on Ctrl-C its jobs go back to the queue.
    drop(pool);
    let (WaitEnd::Done(jobs) | WaitEnd::TimedOut(jobs)) = end else {
        if !ctx.quiet {
            eprintln!(
                "workq: interrupted; unfinished jobs stay queued (workq list -Q {0} --state queued; cancel with workq cancel ID)",
                a.queue
            );
        }
        return Ok(code::INTERRUPTED);
    };
    let failed = jobs
        .iter()
        .filter(|j| j.state != JobState::Succeeded)
        .count();
    if ctx.json {
        let now = Timestamp::now();
        println!(
            "{}",
            json!({
                "submitted": submission.submitted_json, "skipped": submission.skipped_json,
                "results": jobs.iter().map(|j| render::json::job(j, now)).collect::<Vec<_>>(),
            })
        );
    } else if !ctx.quiet {
        results_table(ctx, &jobs, needed);
        eprintln!(
            "workq: {} succeeded, {failed} failed or cancelled",
            jobs.len() - failed
        );
    }
    Ok(if failed > 0 { code::JOB_FAILED } else { 0 })
}

/// Healthy workers that serve the queue are reused; without any, the queue's pool is started
/// for the duration of the command (unless `--no-start-workers`).
fn pool_if_needed(
    ctx: &Context,
    client: &workq::Client,
    a: &Args,
) -> Result<Option<workq_runtime::ephemeral::EphemeralWorker>, CliError> {
    client.clean_up_dead_workers()?;
    let serving = client.live_workers_serving(&a.queue)?;
    if !serving.is_empty() {
        if !ctx.quiet && !ctx.json {
            let names: Vec<String> = serving
                .iter()
                .map(|w| format!("{} (pid {})", w.name, w.pid))
                .collect();
            eprintln!("workq: using running worker(s): {}", names.join(", "));
        }
        return Ok(None);
    }
    let slots = ctx
        .config
        .int(&format!("queues.{}.workers", a.queue))
        .unwrap_or(1)
        .max(1);
    if a.no_start_workers {
        return Err(CliError::unavailable(format!(
            "no worker serves queue {}; the jobs are queued",
            a.queue
        ))
        .with_hint(format!(
            "start its pool: workq up {0}   (or: workq worker start {0} -d -Q {0} -w {slots})",
            a.queue
        )));
    }
    let pool = start_pool(ctx, &a.queue, slots)?;
    if !ctx.quiet && !ctx.json {
        eprintln!(
            "workq: started a temporary pool of {slots} slot(s) for queue {}; it stops when this command ends",
            a.queue
        );
    }
    Ok(Some(pool))
}

fn start_pool(
    ctx: &Context,
    queue: &str,
    slots: i64,
) -> Result<workq_runtime::ephemeral::EphemeralWorker, CliError> {
    let exe = std::env::current_exe().map_err(CliError::current_exe)?;
    let mut args = vec![
        "--state-dir".to_string(),
        ctx.state_dir.display().to_string(),
    ];
    args.extend(ctx.store_args());
    if let Some(f) = ctx.config.files.last() {
        args.extend(["--config".to_string(), f.display().to_string()]);
    }
    args.extend([
        "-q".to_string(),
        "worker".to_string(),
        "start".to_string(),
        format!("run-{}", std::process::id()),
        "--temporary".to_string(),
        "-Q".to_string(),
        queue.to_string(),
        "-w".to_string(),
        slots.to_string(),
        "--stop-timeout".to_string(),
        "0s".to_string(),
    ]);
    workq_runtime::ephemeral::EphemeralWorker::start(&exe, &args)
        .map_err(|e| CliError::unavailable(format!("cannot start a worker pool: {e}")))
}

fn report_skips(ctx: &Context, skipped: &[Skipped], force: bool) {
    if skipped.is_empty() || ctx.quiet {
        return;
    }
    eprintln!(
        "workq: skipped {} row(s) whose unique key already has a job{}:",
        skipped.len(),
        if force {
            ""
        } else {
            " (--force re-runs succeeded ones)"
        }
    );
    for s in skipped.iter().take(20) {
        let at = s
            .row
            .line
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        eprintln!("  {at}{}", s.why);
    }
    if skipped.len() > 20 {
        eprintln!("  … and {} more", skipped.len() - 20);
    }
}

fn results_table(ctx: &Context, jobs: &[workq::Job], shown: &[String]) {
    let now = Timestamp::now();
    let header: Vec<String> = ["ID".to_string()]
        .into_iter()
        .chain(shown.iter().map(|s| s.to_uppercase()))
        .chain(["STATE", "EXIT", "DURATION", "ERROR"].map(String::from))
        .collect();
    let mut t = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for j in jobs {
        let state = j.display_state(now);
        let mut row = vec![j.id.to_string()];
        row.extend(
            shown
                .iter()
                .map(|k| j.spec.labels.get(k).cloned().unwrap_or_default()),
        );
        row.push(ctx.paint(state, render::state_color(state)));
        row.push(
            j.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        row.push(render::job_duration(j, now));
        row.push(j.last_error.clone().unwrap_or_default());
        t.row(row);
    }
    t.print(ctx.tty);
}
