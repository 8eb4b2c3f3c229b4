//! Checking and showing config values: each key's kind from the schema, sizes, and the TOML
//! and JSON forms `config show` prints.

use workq_core::{parse_duration, Template};

use super::schema::{self, Kind};

/// The keys that set a job's time limit.
const JOB_TIMEOUTS: [&str; 2] = ["defaults.timeout", "queues.*.timeout"];

/// Checks `value` against the kind of `key`.
pub(super) fn check(key: &str, value: &toml::Value) -> Result<(), String> {
    let Some(k) = schema::lookup(key) else {
        return Err(match schema::nearest(key) {
            Some(n) => format!("unknown key; did you mean {n}?"),
            None => "unknown key".into(),
        });
    };
    let bad = || {
        Err(format!(
            "expected {}, got {}",
            k.kind.allowed(),
            render_value(value)
        ))
    };
    match (k.kind, value) {
        (Kind::Str, toml::Value::String(_)) => Ok(()),
        (Kind::UInt, toml::Value::Integer(n)) if *n >= 0 && *n <= u32::MAX as i64 => Ok(()),
        (Kind::Int, toml::Value::Integer(n)) if i32::try_from(*n).is_ok() => Ok(()),
        (Kind::Dur, toml::Value::String(s)) => {
            parse_duration(s).map(|_| ()).map_err(|e| e.to_string())
        }
        (Kind::DurOrNone, toml::Value::String(s)) if s == "none" => Ok(()),
        (Kind::DurOrNone, toml::Value::String(s)) => match parse_duration(s) {
            // As `--timeout 0` (flag_values::ZERO_TIMEOUT): zero is not a way to say no limit.
            Ok(d) if d.as_millis() == 0 && JOB_TIMEOUTS.contains(&k.name) => Err(format!(
                "{s:?} would stop every job at once; use \"none\" for no limit"
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e} (or \"none\")")),
        },
        (Kind::Size, toml::Value::Integer(n)) if *n >= 0 => Ok(()),
        (Kind::Size, toml::Value::String(s)) => parse_size(s).map(|_| ()),
        (Kind::Enum(words), toml::Value::String(s)) if words.contains(&s.as_str()) => Ok(()),
        (Kind::Command, toml::Value::String(s)) => {
            Template::parse(s).map(|_| ()).map_err(|e| e.to_string())
        }
        (Kind::Command, toml::Value::Array(items)) => {
            let words: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            match words {
                Some(w) => Template::from_argv(&w)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => bad(),
            }
        }
        (Kind::Env, toml::Value::Table(t)) if t.values().all(|v| v.is_str()) => Ok(()),
        (Kind::StrList, toml::Value::Array(items)) if items.iter().all(|v| v.is_str()) => Ok(()),
        (Kind::Bool, toml::Value::Boolean(_)) => Ok(()),
        _ => bad(),
    }
}

/// A value as TOML-like text (strings quoted), for messages and `config show`.
pub fn render_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(render_value).collect::<Vec<_>>().join(", ")
        ),
        toml::Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A value as JSON.
pub fn to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(n) => serde_json::json!(n),
        toml::Value::Float(f) => serde_json::json!(f),
        toml::Value::Boolean(b) => serde_json::json!(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// Parses `10MiB`, `512k`, `1G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 10MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
            ))
        }
    };
    if !(0.0..1e18).contains(&(n * mult)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok((n * mult) as u64)
}
