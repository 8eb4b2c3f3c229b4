//! Layered configuration with provenance (ARCHITECTURE.md §6): built-in defaults < /etc/workq/config.toml
//! < user file < project file < `WORKQ_<SECTION>__<KEY>` variables < command-line flags. Every
//! value remembers where it came from, for `config show --sources` and the worker's start line.

pub mod schema;
mod values;

use values::check;
pub use values::{parse_size, render_value, to_json};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schema::Kind;
use serde::Deserialize as _;
use workq_core::parse_duration;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built in.
    Default,
    /// A config file, at a line.
    File(PathBuf, usize),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p, line) => write!(f, "{}:{line}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(fl) => write!(f, "flag {fl}"),
        }
    }
}

/// A config error: which file, where, which key, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file or variable.
    pub origin: String,
    /// 1-based line and column, when known.
    pub at: Option<(usize, usize)>,
    /// The key, when known.
    pub key: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((l, c)) = self.at {
            write!(f, ":{l}:{c}")?;
        }
        f.write_str(": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One effective setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Its value.
    pub value: toml::Value,
    /// Where it came from.
    pub source: Source,
}

/// The effective configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: BTreeMap<String, Setting>,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
}

/// Where to look for files.
pub struct Paths {
    /// `/etc/workq/config.toml`.
    pub system: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/workq/config.toml` or `~/.config/workq/config.toml`.
    pub user: Option<PathBuf>,
    /// `--config FILE`, else `.workq/config.toml` or `workq.toml` beside the state dir.
    pub project: Vec<PathBuf>,
    /// True if the project file was named explicitly (it must exist).
    pub explicit: bool,
}

impl Paths {
    /// The standard places for a project whose state dir is `state_dir`.
    pub fn standard(state_dir: &Path, explicit: Option<PathBuf>) -> Paths {
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("workq").join("config.toml"));
        let (project, explicit_given) = match explicit {
            Some(p) => (vec![p], true),
            None => {
                let mut v = vec![state_dir.join("config.toml")];
                if let Some(root) = state_dir.parent() {
                    v.push(root.join("workq.toml"));
                }
                (v, false)
            }
        };
        // WORKQ_SYSTEM_CONFIG moves the system file (packaging, tests).
        let system = std::env::var_os("WORKQ_SYSTEM_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/workq/config.toml"));
        Paths {
            system: Some(system),
            user,
            project,
            explicit: explicit_given,
        }
    }
}

fn default_value(text: &str) -> toml::Value {
    // Built-in defaults are literals in schema.rs; a bad one would be a bug caught by tests.
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or(toml::Value::String(String::new()))
}

/// Where each key is written, as a byte offset: the key's name in `key = value`, or its name in
/// the `[table]` header for a table. Keys are dotted, as `flatten` makes them.
fn key_offsets(prefix: &str, table: &toml::de::DeTable<'_>, out: &mut BTreeMap<String, usize>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            key_offsets(&key, t, out);
        }
        out.insert(key, k.span().start);
    }
}

/// The offset of `key`, or of the nearest table above it (a key `flatten` made up, such as an
/// empty `[queues.x]`'s `workers`, points at that table's header).
fn key_offset(offsets: &BTreeMap<String, usize>, key: &str) -> Option<usize> {
    let mut k = key;
    loop {
        if let Some(o) = offsets.get(k) {
            return Some(*o);
        }
        k = &k[..k.rfind('.')?];
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn offset_to_line_col(text: &str, offset: usize) -> (usize, usize) {
    // Bytes, not a `&str` slice: an offset inside a character must not panic.
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let is_char_start = |b: &&u8| (**b & 0xC0) != 0x80;
    let col = before[line_start..].iter().filter(is_char_start).count() + 1;
    (line, col)
}

/// Flattens a TOML table into dotted keys; `env` tables stay whole.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) if !key.ends_with(".env") && schema::lookup(&key).is_none() => {
                if t.is_empty() && key.starts_with("queues.") && key.matches('.').count() == 1 {
                    // `[queues.x]` with nothing in it still defines the queue.
                    out.push((format!("{key}.workers"), toml::Value::Integer(1)));
                }
                flatten(&key, t, out);
            }
            other => out.push((key, other.clone())),
        }
    }
}

impl Config {
    /// Built-in defaults only.
    pub fn defaults() -> Config {
        let mut entries = BTreeMap::new();
        for k in schema::KEYS {
            if let (Some(d), false) = (k.default, k.name.contains('*')) {
                entries.insert(
                    k.name.to_string(),
                    Setting {
                        value: default_value(d),
                        source: Source::Default,
                    },
                );
            }
        }
        Config {
            entries,
            files: Vec::new(),
        }
    }

    /// Loads every layer: files in `paths`, then `env` (pairs of name and value).
    pub fn load(
        paths: &Paths,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::defaults();
        let mut files: Vec<(PathBuf, bool)> = Vec::new();
        files.extend(paths.system.clone().map(|p| (p, false)));
        files.extend(paths.user.clone().map(|p| (p, false)));
        if paths.explicit {
            files.extend(paths.project.iter().cloned().map(|p| (p, true)));
        } else if let Some(p) = paths.project.iter().find(|p| p.is_file()) {
            files.push((p.clone(), false));
        }
        for (path, required) in files {
            c.load_file(&path, required)?;
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("WORKQ_") && k.contains("__"))
            .collect();
        env.sort();
        for (name, raw) in env {
            c.load_env(&name, &raw)?;
        }
        Ok(c)
    }

    fn load_file(&mut self, path: &Path, required: bool) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
            Err(e) => {
                return Err(ConfigError {
                    origin,
                    at: None,
                    key: None,
                    message: format!("cannot read the config file: {e}"),
                })
            }
        };
        let not_toml = |e: toml::de::Error| {
            let mut message = e.message().trim().to_string();
            // toml 1.x no longer names the key here; its span does.
            if message == "duplicate key" {
                if let Some(k) = e.span().and_then(|s| text.get(s)) {
                    message = format!("{message} {k} (set it once; remove the other)");
                }
            }
            ConfigError {
                origin: origin.clone(),
                at: e.span().map(|s| offset_to_line_col(&text, s.start)),
                key: None,
                message: format!("not valid TOML: {message}"),
            }
        };
        // One parse gives both the spans and, deserialized from it, the values.
        let doc = toml::de::DeTable::parse(&text).map_err(not_toml)?;
        let mut offsets = BTreeMap::new();
        key_offsets("", doc.get_ref(), &mut offsets);
        let table =
            toml::Table::deserialize(toml::de::Deserializer::from(doc)).map_err(not_toml)?;
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        for (key, value) in flat {
            let at = key_offset(&offsets, &key).map(|o| offset_to_line_col(&text, o));
            check(&key, &value).map_err(|message| ConfigError {
                origin: origin.clone(),
                at,
                key: Some(key.clone()),
                message,
            })?;
            self.entries.insert(
                key,
                Setting {
                    value,
                    source: Source::File(path.to_path_buf(), at.map(|a| a.0).unwrap_or(0)),
                },
            );
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn load_env(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let rest = &name["WORKQ_".len()..];
        let key = rest
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".");
        let err = |message: String| ConfigError {
            origin: format!("environment variable {name}"),
            at: None,
            key: Some(key.clone()),
            message,
        };
        let Some(k) = schema::lookup(&key) else {
            let hint = schema::nearest(&key)
                .map(|n| {
                    format!(
                        "; did you mean WORKQ_{}?",
                        n.to_ascii_uppercase().replace('.', "__")
                    )
                })
                .unwrap_or_default();
            return Err(err(format!("unknown key{hint}")));
        };
        let value = match k.kind {
            Kind::UInt | Kind::Int | Kind::Size => match raw.trim().parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => toml::Value::String(raw.to_string()),
            },
            Kind::Env => {
                return Err(err(
                    "set environment tables in a config file, not a variable".into(),
                ))
            }
            Kind::StrList => return Err(err("set lists in a config file, not a variable".into())),
            Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => toml::Value::String(raw.to_string()),
            },
            _ => toml::Value::String(raw.to_string()),
        };
        check(&key, &value).map_err(err)?;
        self.entries.insert(
            key,
            Setting {
                value,
                source: Source::Env(name.to_string()),
            },
        );
        Ok(())
    }

    /// Sets `key` from `source`.
    pub fn set_source(&mut self, key: &str, value: toml::Value, source: Source) {
        self.entries
            .insert(key.to_string(), Setting { value, source });
    }

    /// Every effective setting, sorted by key.
    pub fn entries(&self) -> &BTreeMap<String, Setting> {
        &self.entries
    }

    /// One setting.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.entries.get(key)
    }

    /// Where `key` came from (`default` when unset).
    pub fn source(&self, key: &str) -> String {
        self.entries
            .get(key)
            .map(|s| s.source.to_string())
            .unwrap_or_else(|| "default".into())
    }

    /// A string setting.
    pub fn str(&self, key: &str) -> Option<String> {
        self.get(key)?.value.as_str().map(str::to_string)
    }

    /// A setting that is an array of strings.
    pub fn str_list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key)?
            .value
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// A `true`/`false` setting.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.value.as_bool()
    }

    /// A whole-number setting.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key)?.value.as_integer()
    }

    /// A duration setting; `Some(None)` for `none`.
    pub fn dur(&self, key: &str) -> Option<Option<Duration>> {
        let s = self.get(key)?.value.as_str()?;
        if s == "none" {
            return Some(None);
        }
        parse_duration(s).ok().map(Some)
    }

    /// A size setting in bytes.
    pub fn size(&self, key: &str) -> Option<u64> {
        match &self.get(key)?.value {
            toml::Value::Integer(n) => Some((*n).max(0) as u64),
            toml::Value::String(s) => parse_size(s).ok(),
            _ => None,
        }
    }

    /// Names of the queues the configuration defines, sorted.
    pub fn queue_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .keys()
            .filter_map(|k| {
                k.strip_prefix("queues.")?
                    .split_once('.')
                    .map(|(q, _)| q.to_string())
            })
            .collect();
        v.dedup();
        v
    }

    /// A queue setting, falling back to `defaults.<field>`; with the key it came from.
    pub fn queue_key(&self, queue: &str, field: &str) -> String {
        let own = format!("queues.{queue}.{field}");
        if self.entries.contains_key(&own) {
            own
        } else {
            format!("defaults.{field}")
        }
    }
}

/// Fills a job's retry policy, limits and priority from the queue's config, else `[defaults]`;
/// plus the queue's `env` and `cwd`.
pub fn apply_job_defaults(cfg: &Config, queue: &str, spec: &mut workq_core::JobSpec) {
    if let Some(n) = cfg.int(&cfg.queue_key(queue, "retries")) {
        spec.retries = n.clamp(0, u32::MAX as i64) as u32;
    }
    if let Some(Some(d)) = cfg.dur(&cfg.queue_key(queue, "backoff")) {
        spec.backoff = d;
    }
    if let Some(t) = cfg.dur(&cfg.queue_key(queue, "timeout")) {
        spec.timeout = t;
    }
    if let Some(Some(d)) = cfg.dur(&cfg.queue_key(queue, "kill_grace")) {
        spec.kill_grace = d;
    }
    if let Some(p) = cfg.int(&cfg.queue_key(queue, "priority")) {
        spec.priority = p.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    }
    if let Some(toml::Value::Table(env)) = cfg.get(&format!("queues.{queue}.env")).map(|s| &s.value)
    {
        for (k, v) in env {
            if let Some(v) = v.as_str() {
                spec.env.insert(k.clone(), v.to_string());
            }
        }
    }
    if let Some(cwd) = cfg.str(&format!("queues.{queue}.cwd")) {
        spec.cwd = Some(cwd);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(
            &Paths {
                system: None,
                user: None,
                project: vec![p],
                explicit: true,
            },
            Vec::new(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_text_loads_or_fails_cleanly(text in "\\PC{0,300}") {
            let _ = load_text(&text);
        }

        #[test]
        fn toml_shaped_text_loads_or_names_the_key(
            section in "(store|defaults|worker|container|queues\\.[a-z]{1,5}|x)",
            key in "[a-z_]{1,14}",
            value in "(\"[^\"\\\\]{0,12}\"|-?[0-9]{1,12}|true|\\[\"a\", 1\\]|\\{ A = \"b\" \\})",
        ) {
            let text = format!("[{section}]\n{key} = {value}\n");
            if let Err(e) = load_text(&text) {
                prop_assert!(e.key.is_some() || e.at.is_some(), "{e}");
            }
        }

        #[test]
        fn any_env_value_is_checked(key in "WORKQ_[A-Z_]{1,20}__[A-Z_]{1,12}", value in "\\PC{0,40}") {
            let d = tempfile::tempdir().unwrap();
            let _ = Config::load(
                &Paths { system: None, user: None, project: vec![d.path().join("none.toml")], explicit: false },
                vec![(key, value)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            system: Some(dir.join("system.toml")),
            user: Some(dir.join("user.toml")),
            project: vec![dir.join("project.toml")],
            explicit: false,
        }
    }

    #[test]
    fn layers_override_in_order_with_sources() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("system.toml"),
            "[defaults]\nretries = 1\nbackoff = \"1s\"\ntimeout = \"1h\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("user.toml"),
            "[defaults]\nretries = 2\nbackoff = \"2s\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("project.toml"),
            "# c\n[defaults]\nretries = 3\n\n[queues.q]\ncommand = \"echo {x}\"\n",
        )
        .unwrap();
        let env = vec![("WORKQ_DEFAULTS__RETRIES".to_string(), "4".to_string())];
        let c = Config::load(&paths(d.path()), env).unwrap();
        assert_eq!(c.int("defaults.retries"), Some(4));
        assert_eq!(c.source("defaults.retries"), "env WORKQ_DEFAULTS__RETRIES");
        assert_eq!(
            c.dur("defaults.backoff"),
            Some(Some(Duration::from_secs(2)))
        );
        assert!(c.source("defaults.backoff").ends_with("user.toml:3"));
        assert!(c.source("defaults.timeout").ends_with("system.toml:4"));
        assert_eq!(c.source("defaults.kill_grace"), "default");
        assert!(c.source("queues.q.command").ends_with("project.toml:6"));
        assert_eq!(c.queue_names(), vec!["q"]);
        assert_eq!(c.queue_key("q", "retries"), "defaults.retries");
    }

    #[test]
    fn errors_and_sources_point_at_the_key_however_it_is_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("project.toml");
        for (text, want) in [
            (
                "[queues]\nq.retries = -1\n",
                "project.toml:2:3: queues.q.retries:",
            ),
            (
                "[queues.q]\nenv = { A = 1 }\n",
                "project.toml:2:1: queues.q.env:",
            ),
            (
                "[queues.q.env]\nA = 1\n",
                "project.toml:1:11: queues.q.env:",
            ),
            (
                "[defaults]\n\"retry\" = 2\n",
                "project.toml:2:1: defaults.retry:",
            ),
            (
                "[queues]\n\"é\" = { retries = -1 }\n",
                "project.toml:2:9: queues.é.retries:",
            ),
            (
                "[defaults]\nretries = 99999999999999999999\n",
                "project.toml:2:",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(&paths(d.path()), Vec::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        std::fs::write(&p, "[store]\n\n[queues.x]\n").unwrap();
        let c = Config::load(&paths(d.path()), Vec::new()).unwrap();
        assert!(c.source("queues.x.workers").ends_with("project.toml:3"));
    }

    #[test]
    fn errors_name_file_line_column_key_and_what_is_allowed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("project.toml");
        for (text, want) in [
            ("[defaults]\nretry = 2\n", "project.toml:2:1: defaults.retry: unknown key; did you mean defaults.retries?"),
            ("[defaults]\nretries = -1\n", "project.toml:2:1: defaults.retries: expected a whole number (0 or more), got -1"),
            ("[store]\n  journal_mode = \"fast\"\n", "project.toml:2:3: store.journal_mode: expected one of auto, wal, delete, got \"fast\""),
            ("[queues.q]\ncommand = \"run {\"\n", "queues.q.command: unclosed"),
            ("[queues.q]\nworkerz = 2\n", "did you mean queues.q.workers?"),
            ("[defaults\n", "project.toml:1:"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Config::load(&paths(d.path()), Vec::new()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = Config::load(
            &paths(d.path()),
            vec![("WORKQ_DEFAULTS__TIMEOUTT".into(), "1h".into())],
        );
        std::fs::remove_file(&p).unwrap();
        let e2 = Config::load(
            &paths(d.path()),
            vec![("WORKQ_DEFAULTS__TIMEOUTT".into(), "1h".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.is_err());
        assert!(e2.contains("did you mean WORKQ_DEFAULTS__TIMEOUT?"), "{e2}");
        assert!(
            Config::load(&paths(d.path()), Vec::new()).is_ok(),
            "no files at all is fine"
        );
    }
}
