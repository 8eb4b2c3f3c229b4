//! Every configuration key workq knows, its kind, its default and what it allows.

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Str,
    /// A whole number >= 0.
    UInt,
    /// A whole number.
    Int,
    /// A duration such as `10s`, `1h30m`.
    Dur,
    /// A duration or `none`.
    DurOrNone,
    /// A size such as `10MiB`.
    Size,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// A command: a string (split like a shell) or an array of strings.
    Command,
    /// A table of environment variables (string values).
    Env,
    /// An array of strings, each passed on as one argument.
    StrList,
    /// `true` or `false`.
    Bool,
}

impl Kind {
    /// What is allowed, for error messages.
    pub fn allowed(self) -> String {
        match self {
            Kind::Str => "a string".into(),
            Kind::UInt => "a whole number (0 or more)".into(),
            Kind::Int => "a whole number".into(),
            Kind::Dur => "a duration such as \"30s\", \"10m\", \"1h30m\"".into(),
            Kind::DurOrNone => "a duration such as \"12h\", or \"none\"".into(),
            Kind::Size => "a size such as \"10MiB\" or a number of bytes".into(),
            Kind::Enum(words) => format!("one of {}", words.join(", ")),
            Kind::Command => {
                "a command string (\"prog {param} --flag\") or an array of strings".into()
            }
            Kind::Env => "a table of strings, e.g. { HOME = \"/data\" }".into(),
            Kind::StrList => "an array of strings, e.g. [\"--gpus\", \"all\"]".into(),
            Kind::Bool => "true or false".into(),
        }
    }
}

/// One known key; `queues.*.x` stands for every queue.
pub struct Key {
    /// Dotted name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Built-in default as TOML text, if it has one.
    pub default: Option<&'static str>,
    /// One line of documentation.
    pub doc: &'static str,
}

const RUNTIMES: &[&str] = &["auto", "docker", "podman"];

/// Every key, in the order `config show` prints them.
pub const KEYS: &[Key] = &[
    Key { name: "store.url", kind: Kind::Str, default: Some("\"sqlite://.workq/workq.db\""), doc: "where state lives: sqlite://PATH (relative to the project) or postgres://USER@HOST:PORT/DATABASE; --store and WORKQ_STORE override it" },
    Key { name: "store.journal_mode", kind: Kind::Enum(&["auto", "wal", "delete"]), default: Some("\"auto\""), doc: "SQLite journal: auto picks wal on local disks, delete on network or virtual filesystems" },
    Key { name: "store.retention", kind: Kind::DurOrNone, default: Some("\"none\""), doc: "workers delete jobs that finished longer ago than this, with their logs (none: keep all)" },
    Key { name: "defaults.retries", kind: Kind::UInt, default: Some("0"), doc: "retries after a failed attempt" },
    Key { name: "defaults.backoff", kind: Kind::Dur, default: Some("\"10s\""), doc: "first retry delay; doubles each time, capped at 1h, plus jitter" },
    Key { name: "defaults.timeout", kind: Kind::DurOrNone, default: Some("\"none\""), doc: "a job running longer is stopped (SIGTERM, then SIGKILL)" },
    Key { name: "defaults.kill_grace", kind: Kind::Dur, default: Some("\"10s\""), doc: "between SIGTERM and SIGKILL" },
    Key { name: "defaults.priority", kind: Kind::Int, default: Some("0"), doc: "higher runs first" },
    Key { name: "worker.slots", kind: Kind::UInt, default: Some("1"), doc: "jobs a worker runs at once (worker start -w)" },
    Key { name: "worker.stop_timeout", kind: Kind::Dur, default: Some("\"10s\""), doc: "on stop, how long running jobs may finish before they are requeued" },
    Key { name: "worker.heartbeat", kind: Kind::Dur, default: Some("\"5s\""), doc: "between heartbeats" },
    Key { name: "worker.hung_after", kind: Kind::Dur, default: Some("\"60s\""), doc: "a daemon without a heartbeat this long is killed and restarted" },
    Key { name: "worker.max_restarts", kind: Kind::UInt, default: Some("3"), doc: "restarts per restart_window before a daemon counts as crash-looping" },
    Key { name: "worker.restart_window", kind: Kind::Dur, default: Some("\"1h\""), doc: "window for max_restarts" },
    Key { name: "worker.log_max_size", kind: Kind::Size, default: Some("\"10MiB\""), doc: "rotate a worker's log past this size" },
    Key { name: "worker.log_keep", kind: Kind::UInt, default: Some("3"), doc: "old worker logs kept" },
    Key { name: "container.runtime", kind: Kind::Enum(RUNTIMES), default: Some("\"auto\""), doc: "container engine for mode = \"container\": docker or podman (auto: the first found)" },
    Key { name: "serve.listen", kind: Kind::Str, default: Some("\"127.0.0.1:7878\""), doc: "address and port of `workq serve`; a non-loopback address needs a token" },
    Key { name: "serve.token_file", kind: Kind::Str, default: None, doc: "file holding the API token (at least 32 bytes; WORKQ_TOKEN also works); relative to the project" },
    Key { name: "serve.read_only", kind: Kind::Bool, default: Some("false"), doc: "refuse every change through the API and dashboard (403)" },
    Key { name: "queues.*.command", kind: Kind::Command, default: None, doc: "command template; {name} is a parameter" },
    Key { name: "queues.*.workers", kind: Kind::UInt, default: Some("1"), doc: "slots of this queue's pool (workq up, run --wait)" },
    Key { name: "queues.*.retries", kind: Kind::UInt, default: None, doc: "as defaults.retries" },
    Key { name: "queues.*.backoff", kind: Kind::Dur, default: None, doc: "as defaults.backoff" },
    Key { name: "queues.*.timeout", kind: Kind::DurOrNone, default: None, doc: "as defaults.timeout" },
    Key { name: "queues.*.kill_grace", kind: Kind::Dur, default: None, doc: "as defaults.kill_grace" },
    Key { name: "queues.*.priority", kind: Kind::Int, default: None, doc: "as defaults.priority" },
    Key { name: "queues.*.unique", kind: Kind::Str, default: None, doc: "unique-key template, e.g. \"{participant}/{session}\"" },
    Key { name: "queues.*.env", kind: Kind::Env, default: None, doc: "extra environment of each job" },
    Key { name: "queues.*.cwd", kind: Kind::Str, default: None, doc: "working directory of each job (default: where run is called)" },
    Key { name: "queues.*.mode", kind: Kind::Enum(&["direct", "container"]), default: Some("\"direct\""), doc: "direct, or container (runs image with the container runtime)" },
    Key { name: "queues.*.image", kind: Kind::Str, default: None, doc: "container image (mode = \"container\")" },
    Key { name: "queues.*.runtime", kind: Kind::Enum(RUNTIMES), default: None, doc: "as container.runtime, for this queue" },
    Key { name: "queues.*.container_user", kind: Kind::Str, default: None, doc: "--user of the container, \"uid:gid\" or a name (default: the submitter's uid:gid; \"\": the image's own user)" },
    Key { name: "queues.*.container_args", kind: Kind::StrList, default: None, doc: "extra run flags, e.g. [\"--gpus\", \"all\"], placed before the image" },
];

/// The schema entry of a concrete key (`queues.qsiprep.workers` matches `queues.*.workers`).
pub fn lookup(key: &str) -> Option<&'static Key> {
    let pattern = match key.strip_prefix("queues.") {
        Some(rest) => match rest.split_once('.') {
            Some((_, field)) => format!("queues.*.{field}"),
            None => return None,
        },
        None => key.to_string(),
    };
    KEYS.iter().find(|k| k.name == pattern)
}

/// The known key closest to `key`, for "did you mean".
pub fn nearest(key: &str) -> Option<String> {
    // A queue key is compared with the same queue's known fields, so the queue name never counts.
    let candidates: Vec<String> = match key
        .strip_prefix("queues.")
        .and_then(|rest| rest.split_once('.'))
    {
        Some((q, _)) => KEYS
            .iter()
            .filter_map(|k| k.name.strip_prefix("queues.*."))
            .map(|f| format!("queues.{q}.{f}"))
            .collect(),
        None => KEYS
            .iter()
            .filter(|k| !k.name.starts_with("queues."))
            .map(|k| k.name.to_string())
            .collect(),
    };
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(key, &c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_suggestions() {
        assert_eq!(
            lookup("queues.q1.workers").map(|k| k.name),
            Some("queues.*.workers")
        );
        assert!(lookup("queues.q1").is_none());
        assert!(lookup("defaults.retry").is_none());
        assert_eq!(
            nearest("defaults.retry").as_deref(),
            Some("defaults.retries")
        );
        assert_eq!(
            nearest("queues.q.worker").as_deref(),
            Some("queues.q.workers")
        );
        assert_eq!(nearest("zzzzzzzzzz.qqqqqqqq"), None);
    }
}
