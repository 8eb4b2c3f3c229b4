//! `workq init`: create the state directory with a commented config file.

use crate::context::Context;
use crate::error::{CliError, CmdResult};

/// Create .workq/ with a commented config.toml
#[derive(clap::Args, Debug)]
pub struct Args {}

/// A commented config file documenting every setting, generated from the schema so it can never
/// fall out of step with what workq reads.
fn config_text() -> String {
    use crate::config::schema::KEYS;
    let mut out = String::from(
        "# workq configuration for this project.\n\
         #\n\
         # Layering (lowest to highest): built-in defaults < /etc/workq/config.toml <\n\
         # ~/.config/workq/config.toml < this file (or workq.toml beside .workq/) <\n\
         # WORKQ_<SECTION>__<KEY> environment variables < command-line flags.\n\
         # `workq config show --sources` prints every effective setting and where it came from.\n\
         # Every line below is commented out and shows the built-in default.\n",
    );
    let mut section = "";
    for k in KEYS.iter().filter(|k| !k.name.starts_with("queues.")) {
        let (sec, key) = k.name.split_once('.').unwrap_or(("", k.name));
        if sec != section {
            out.push_str(&format!("\n# [{sec}]\n"));
            section = sec;
        }
        let value = k.default.unwrap_or("\"\"");
        out.push_str(&format!(
            "# {:<34} # {}\n",
            format!("{key} = {value}"),
            k.doc
        ));
    }
    out.push_str(
        "\n# A typed queue: `workq run example --param input=a.txt --param output=b.txt`,\n\
         # or one job per row of a CSV/JSONL file with --params FILE.\n\
         # [queues.example]\n",
    );
    let examples = [
        ("command", "\"process {input} --out {output}\""),
        ("workers", "2"),
        ("retries", "2"),
        ("backoff", "\"30s\""),
        ("timeout", "\"12h\""),
        ("kill_grace", "\"10s\""),
        ("priority", "0"),
        ("unique", "\"{input}\""),
        ("env", "{ TMPDIR = \"/scratch\" }"),
        ("cwd", "\"/data/project\""),
        ("mode", "\"direct\""),
        ("image", "\"example/tool:1.0\""),
        ("runtime", "\"auto\""),
        ("container_user", "\"1000:1000\""),
        ("container_args", "[\"--gpus\", \"all\"]"),
    ];
    for (field, example) in examples {
        let doc = KEYS
            .iter()
            .find(|k| k.name == format!("queues.*.{field}"))
            .map(|k| k.doc)
            .unwrap_or("");
        out.push_str(&format!(
            "# {:<34} # {doc}\n",
            format!("{field} = {example}")
        ));
    }
    out
}

/// Runs `workq init`; returns its exit code.
pub fn run(ctx: &Context, _a: Args) -> CmdResult {
    let dir = if ctx.found {
        ctx.state_dir.clone()
    } else {
        std::env::current_dir()
            .map_err(CliError::current_dir)?
            .join(".workq")
    };
    let existed = dir.join("workq.db").exists();
    let client = match &ctx.pg_url {
        Some(url) => workq::Client::open_postgres(&dir, url).map_err(|e| ctx.store_error(e))?,
        None => workq::Client::open_at(&dir, &ctx.db_path)?,
    };
    let config = dir.join("config.toml");
    if !config.exists() {
        std::fs::write(&config, config_text()).map_err(|e| {
            CliError::unavailable(format!("cannot write {}: {e}", config.display()))
        })?;
    }
    drop(client);
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"state_dir": dir, "created": !existed})
        );
    } else if !ctx.quiet {
        if existed {
            println!("{} is already initialized", dir.display());
        } else {
            println!("initialized {}", dir.display());
            println!("next: workq worker start &   then   workq submit -- echo hello");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generated_config_parses_and_uncommented_it_is_valid() {
        let text = super::config_text();
        assert!(text.parse::<toml::Table>().is_ok());
        // Uncomment every setting line: the result must load without error.
        let uncommented: String = text
            .lines()
            .filter(|l| l.starts_with("# [") || l.contains(" = "))
            .map(|l| {
                l.trim_start_matches("# ")
                    .split(" # ")
                    .next()
                    .unwrap_or("")
                    .to_string()
                    + "\n"
            })
            .collect();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, &uncommented).unwrap();
        let paths = crate::config::Paths {
            system: None,
            user: None,
            project: vec![p],
            explicit: true,
        };
        let c = crate::config::Config::load(&paths, Vec::new());
        assert!(c.is_ok(), "{uncommented}\n{:?}", c.err());
    }
}
