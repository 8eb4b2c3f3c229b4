//! Jobs, attempts and their states.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::time::Timestamp;

/// A job's id: a small integer people type (`workq show 42`).
pub type JobId = i64;
/// A worker's id in the registry.
pub type WorkerId = i64;

/// The lifecycle state of a job. `scheduled` is `queued` with `run_at` in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to be claimed (possibly scheduled for later, or waiting on a dependency).
    Queued,
    /// Claimed by a worker; an attempt is executing.
    Running,
    /// Finished with exit status 0.
    Succeeded,
    /// Finished unsuccessfully with no retries left (or lost too often).
    Failed,
    /// Stopped on request, or because a dependency did not succeed.
    Cancelled,
}

impl JobState {
    /// All states, in display order.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once the job will not run again unless retried by hand.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" | "scheduled" | "waiting" => Ok(JobState::Queued),
            "running" => Ok(JobState::Running),
            "succeeded" => Ok(JobState::Succeeded),
            "failed" => Ok(JobState::Failed),
            "cancelled" | "canceled" => Ok(JobState::Cancelled),
            other => Err(format!(
                "unknown job state {other:?}: use queued, waiting, scheduled, running, succeeded, failed or cancelled"
            )),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit or killed by a signal the worker did not send.
    Failed,
    /// Killed by the worker after the job's timeout.
    Timeout,
    /// Killed on a cancel request.
    Cancelled,
    /// Its worker died; the job was rescued.
    Lost,
    /// Its worker was stopped; the job went back to the queue without counting as a failure.
    Interrupted,
    /// Reserved: no attempt is ended with it today. A finish that arrives after the lease moved
    /// on changes nothing and is recorded only as an `events` row of kind `stale`
    /// (ARCHITECTURE.md §4.2).
    Stale,
    /// The command could not be started (not found, not executable, bad cwd).
    SpawnError,
}

impl Outcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Lost => "lost",
            Outcome::Interrupted => "interrupted",
            Outcome::Stale => "stale",
            Outcome::SpawnError => "spawn_error",
        }
    }

    /// True for outcomes that count against the job's retries.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed | Outcome::Timeout | Outcome::SpawnError
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            "timeout" => Outcome::Timeout,
            "cancelled" => Outcome::Cancelled,
            "lost" => Outcome::Lost,
            "interrupted" => Outcome::Interrupted,
            "stale" => Outcome::Stale,
            "spawn_error" => Outcome::SpawnError,
            other => return Err(format!("unknown attempt outcome {other:?}")),
        })
    }
}

/// Everything needed to queue a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Queue name (`default` unless given).
    pub queue: String,
    /// The program and its arguments; with `shell` the first element is run by `sh -c`.
    pub argv: Vec<String>,
    /// Extra environment for the job.
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute); `None` runs in the worker's directory.
    pub cwd: Option<String>,
    /// Free-form labels for filtering.
    pub labels: BTreeMap<String, String>,
    /// Higher runs first.
    pub priority: i32,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// First retry delay; doubles each further failure.
    pub backoff: Duration,
    /// Kill the attempt after this long.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when stopping the job.
    pub kill_grace: Duration,
    /// Not before this instant (None = now).
    pub run_at: Option<Timestamp>,
    /// Jobs that must succeed first.
    pub after: Vec<JobId>,
    /// At most one queued-or-running job per key.
    pub unique_key: Option<String>,
    /// A retried submit with the same key returns the same job.
    pub idempotency_key: Option<String>,
    /// How many times a lost job is rescued before it fails.
    pub max_rescues: u32,
    /// Run the command inside a container instead of directly.
    pub container: Option<Container>,
}

/// Container execution of a job: `runtime run … image argv…`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// `docker` or `podman` (a name looked up on the worker's PATH, or a path).
    pub runtime: String,
    /// The image.
    pub image: String,
    /// `--user` of the container (`uid:gid` or a name); `None` keeps the image's own user.
    /// Jobs written before it existed have none, and ran as the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extra `run` flags (the queue's `container_args`), after workq's own and before the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

impl Container {
    /// The container's name for one attempt: unique per store, job and attempt.
    pub fn name(store_id: &str, job: JobId, attempt: u32) -> String {
        let short: String = store_id.chars().take(8).collect();
        format!("workq-{short}-{job}-{attempt}")
    }

    /// The full invocation of the runtime for `argv` in `cwd` with `env`.
    pub fn argv(
        &self,
        name: &str,
        cwd: &str,
        env: &BTreeMap<String, String>,
        argv: &[String],
    ) -> Vec<String> {
        let mut out = vec![
            self.runtime.clone(),
            "run".into(),
            "--rm".into(),
            "--init".into(),
            "--name".into(),
            name.to_string(),
            "-v".into(),
            format!("{cwd}:{cwd}"),
            "-w".into(),
            cwd.to_string(),
        ];
        if let Some(user) = &self.user {
            out.push("--user".into());
            out.push(user.clone());
        }
        for (k, v) in env {
            out.push("-e".into());
            out.push(format!("{k}={v}"));
        }
        // The queue's own flags come last so that they can add to (or, where the engine lets
        // the last flag win, override) workq's.
        out.extend(self.args.iter().cloned());
        out.push(self.image.clone());
        out.extend(argv.iter().cloned());
        out
    }
}

impl JobSpec {
    /// A spec with the defaults for `argv` on `queue`.
    pub fn new(queue: impl Into<String>, argv: Vec<String>) -> Self {
        JobSpec {
            queue: queue.into(),
            argv,
            env: BTreeMap::new(),
            cwd: None,
            labels: BTreeMap::new(),
            priority: 0,
            retries: 0,
            backoff: Duration::from_secs(10),
            timeout: None,
            kill_grace: Duration::from_secs(10),
            run_at: None,
            after: Vec::new(),
            unique_key: None,
            idempotency_key: None,
            max_rescues: 3,
            container: None,
        }
    }

    /// The command as one line for display, quoting arguments that need it.
    pub fn command_line(&self) -> String {
        command_line(&self.argv)
    }
}

/// Joins argv for display, single-quoting arguments with spaces or shell metacharacters.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A job as stored, with its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// Current state.
    pub state: JobState,
    /// What was submitted.
    pub spec: JobSpec,
    /// When it becomes claimable.
    pub run_at: Timestamp,
    /// Dependencies not yet succeeded.
    pub deps_pending: u32,
    /// Executions started so far.
    pub attempt: u32,
    /// Attempts that counted as failures.
    pub failures: u32,
    /// Times it was rescued from a dead worker.
    pub rescues: u32,
    /// Worker running (or that last ran) it.
    pub worker_id: Option<WorkerId>,
    /// Name of that worker, when known.
    pub worker_name: Option<String>,
    /// A cancel was asked while it ran.
    pub cancel_requested: bool,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// Why the last attempt did not succeed.
    pub last_error: Option<String>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When the last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

impl Job {
    /// The state to show people: `scheduled` and `waiting` are kinds of `queued`.
    pub fn display_state(&self, now: Timestamp) -> &'static str {
        match self.state {
            JobState::Queued if self.deps_pending > 0 => "waiting",
            JobState::Queued if self.run_at > now => "scheduled",
            s => s.as_str(),
        }
    }

    /// Total attempts allowed by the retry policy.
    pub fn max_attempts(&self) -> u32 {
        self.spec.retries.saturating_add(1)
    }
}

/// One execution of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The job.
    pub job_id: JobId,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Worker that ran it.
    pub worker_id: Option<WorkerId>,
    /// That worker's name.
    pub worker_name: Option<String>,
    /// Host it ran on.
    pub host: Option<String>,
    /// Process id of the job's leader process.
    pub pid: Option<i32>,
    /// Process group of the job.
    pub pgid: Option<i32>,
    /// Kernel start time of `pid` (clock ticks since boot). Workers record 0 (unknown): reading
    /// it mid-exec cost too much per job, and a job's processes are found by the marker in their
    /// environment instead (ARCHITECTURE.md §4.5).
    pub pid_start_time: Option<u64>,
    /// When it was claimed.
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// How it ended (None while running).
    pub outcome: Option<Outcome>,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal number, if it was killed by one.
    pub signal: Option<i32>,
    /// Error text for unsuccessful outcomes.
    pub error: Option<String>,
    /// Combined stdout/stderr log file.
    pub log_path: Option<String>,
    /// The attempt's fencing lease, also in the job's environment as `WORKQ_LEASE`, which makes
    /// the process marker unique across every store on the host.
    pub lease: i64,
}

/// A job handed to a worker by a claim, with the fencing lease every later write must present.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The job's id.
    pub id: JobId,
    /// Fencing token for this attempt.
    pub lease: i64,
    /// 1-based attempt number of this execution.
    pub attempt: u32,
    /// What to run.
    pub spec: JobSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_container_invocation_puts_user_env_and_queue_flags_before_the_image() {
        let c = Container {
            runtime: "docker".into(),
            image: "img:1".into(),
            user: Some("1000:1000".into()),
            args: strings(&["--gpus", "all"]),
        };
        let env = BTreeMap::from([("A".to_string(), "b c".to_string())]);
        assert_eq!(
            c.argv("n", "/p", &env, &strings(&["echo", "hi"])),
            strings(&[
                "docker",
                "run",
                "--rm",
                "--init",
                "--name",
                "n",
                "-v",
                "/p:/p",
                "-w",
                "/p",
                "--user",
                "1000:1000",
                "-e",
                "A=b c",
                "--gpus",
                "all",
                "img:1",
                "echo",
                "hi"
            ])
        );
        // No user: the image's own.
        let c = Container {
            user: None,
            args: Vec::new(),
            ..c
        };
        assert_eq!(
            c.argv("n", "/p", &BTreeMap::new(), &strings(&["true"])),
            strings(&[
                "docker", "run", "--rm", "--init", "--name", "n", "-v", "/p:/p", "-w", "/p",
                "img:1", "true"
            ])
        );
    }

    #[test]
    fn a_container_spec_written_before_user_and_args_existed_still_loads() {
        let old: Container = serde_json::from_str(r#"{"runtime":"podman","image":"x:1"}"#).unwrap();
        assert_eq!((old.user, old.args), (None, Vec::new()));
        // And one without them is written as before, for older readers.
        let plain = Container {
            runtime: "docker".into(),
            image: "x:1".into(),
            user: None,
            args: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"runtime":"docker","image":"x:1"}"#
        );
    }
}
