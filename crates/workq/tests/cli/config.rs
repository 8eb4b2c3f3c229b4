//! Layered configuration, typed queues and batch runs, end to end.

use serde_json::Value;

use super::{state_of, Project};

impl Project {
    fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    fn setting(&self, extra_env: &[(&str, &str)], args: &[&str], key: &str) -> (Value, String) {
        let mut c = self.cmd();
        c.args(["--json", "config", "show", "--sources"]).args(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["settings"][key];
        (
            s["value"].clone(),
            s["source"].as_str().unwrap_or("").to_string(),
        )
    }
}

#[test]
fn each_layer_overrides_the_one_below_and_says_so() {
    let p = Project::new();
    let key = "defaults.timeout";
    assert_eq!(
        p.setting(&[], &[], key),
        (Value::from("none"), "default".into())
    );
    p.write("etc-workq.toml", "[defaults]\ntimeout = \"1h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "1h");
    assert!(src.ends_with("etc-workq.toml:2"), "{src}");
    p.write("xdg/workq/config.toml", "\n[defaults]\ntimeout = \"2h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "2h");
    assert!(src.ends_with("xdg/workq/config.toml:3"), "{src}");
    p.write("workq.toml", "[defaults]\n\ntimeout = \"3h\"\n");
    std::fs::create_dir_all(p.state()).unwrap();
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "3h");
    assert!(src.ends_with("workq.toml:3"), "{src}");
    p.write(".workq/config.toml", "[defaults]\ntimeout = \"4h\"\n");
    let (v, src) = p.setting(&[], &[], key);
    assert_eq!(v, "4h");
    assert!(src.ends_with(".workq/config.toml:2"), "{src}");
    let (v, src) = p.setting(&[("WORKQ_DEFAULTS__TIMEOUT", "5h")], &[], key);
    assert_eq!(
        (v, src.as_str()),
        (Value::from("5h"), "env WORKQ_DEFAULTS__TIMEOUT")
    );
    p.write("other.toml", "[defaults]\ntimeout = \"6h\"\n");
    let (v, src) = p.setting(&[], &["--config", "other.toml"], key);
    assert_eq!(v, "6h");
    assert!(src.ends_with("other.toml:2"), "{src}");

    // The effective value reaches the jobs; a flag beats everything.
    let id = p.submit(&["--", "true"]);
    assert_eq!(
        p.job(id)["timeout_secs"].as_f64(),
        Some(4.0 * 3600.0),
        "project file applies to submit"
    );
    let id = p.submit(&["--timeout", "7h", "--", "true"]);
    assert_eq!(p.job(id)["timeout_secs"].as_f64(), Some(7.0 * 3600.0));
    // Workers log where their settings came from.
    p.write(
        ".workq/config.toml",
        "[worker]\nslots = 3\nstop_timeout = \"2s\"\n",
    );
    let mut w = p.worker_with("cfg", &["--stop-timeout", "1s"]);
    w.signal(libc::SIGTERM);
    w.wait_exit();
    let log = std::fs::read_to_string(p.state().join("logs/worker-cfg.log")).unwrap();
    assert!(
        log.contains("slots=3 (") && log.contains(".workq/config.toml:2)"),
        "{log}"
    );
    assert!(
        log.contains("stop_timeout=1.0s (flag --stop-timeout)"),
        "{log}"
    );
}

#[test]
fn config_errors_name_file_line_key_and_the_fix() {
    let p = Project::new();
    p.write(
        ".workq/config.toml",
        "[defaults]\nretries = 1\n[queues.a]\nworkerz = 2\n",
    );
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            ".workq/config.toml:4:1: queues.a.workerz: unknown key; did you mean queues.a.workers?"
        ),
        "{err}"
    );
    p.write(".workq/config.toml", "[defaults]\ntimeout = \"soon\"\n");
    let err = String::from_utf8_lossy(&p.run(&["list"]).stderr).into_owned();
    assert!(err.contains("config.toml:2:1: defaults.timeout:"), "{err}");
    let out = p
        .cmd()
        .env("WORKQ_QUEUES__A__WORKERS", "many")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    p.write(".workq/config.toml", "");
    p.ok(&["list"]);
    // `init` writes a config that documents every setting and loads as is.
    std::fs::remove_file(p.state().join("config.toml")).unwrap();
    p.ok(&["init"]);
    let text = std::fs::read_to_string(p.state().join("config.toml")).unwrap();
    for key in [
        "journal_mode",
        "kill_grace",
        "hung_after",
        "log_max_size",
        "runtime",
        "unique",
    ] {
        assert!(text.contains(key), "init's config lacks {key}");
    }
    let _ = state_of(&Value::Null);
    p.ok(&["config", "show"]);
}
