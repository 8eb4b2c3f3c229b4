//! What a new user tripped over (issue 12): store URLs and where they came from, the help
//! texts, worker names, container engine failures, `status --watch`, `doctor` per backend and
//! temporary workers in `workers list`.

use super::{state_of, Project};

fn write(p: &Project, rel: &str, text: &str) {
    let path = p.path().join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A bad store URL names the setting it came from, and a host that cannot be resolved says so,
/// with the fix for that setting (`unset WORKQ_STORE` when it came from the environment).
#[test]
fn store_url_errors_name_where_the_url_came_from() {
    let p = Project::new();
    // `.invalid` never resolves (RFC 2606).
    let host = "postgres://workq:s3cret@db.example.invalid:5432/workq";
    let out = p
        .cmd()
        .env("WORKQ_STORE", host)
        .args(["list"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("db.example.invalid cannot be resolved") && err.contains("unset WORKQ_STORE"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let out = p.run(&["--store", host, "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("came from --store") && !err.contains("unset"),
        "{err}"
    );

    // An unknown scheme is a usage error naming the flag, or the config key with file and line.
    let out = p.run(&["--store", "mysql://x/y", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--store \"mysql://x/y\""),
        "{}",
        stderr(&out)
    );
    write(
        &p,
        ".workq/config.toml",
        "[store]\nurl = \"mysql://me:pw@x/y\"\n",
    );
    let out = p.run(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("store.url (") && err.contains("config.toml:2") && !err.contains("--store"),
        "{err}"
    );
    assert!(!err.contains("pw@"), "{err}");

    // A postgres:// URL in the config is used like --store: here it cannot be resolved, and the
    // hint points at the config file.
    write(
        &p,
        ".workq/config.toml",
        &format!("[store]\nurl = \"{host}\"\n"),
    );
    let out = p.run(&["list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("cannot be resolved")
            && err.contains("[store]")
            && err.contains("config.toml"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// `[store] url = "postgres://…"` in the config works like `--store` and `WORKQ_STORE`, for the
/// command and for the workers it starts.
#[test]
fn a_postgres_url_in_the_config_is_the_store() {
    let Some(url) = super::pg::fresh_db("cfgurl") else {
        return;
    };
    let p = Project::new();
    write(
        &p,
        ".workq/config.toml",
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    let out = p.ok(&["submit", "--wait", "--", "echo", "from the config's store"]);
    assert_eq!(out, "from the config's store\n");
    assert!(
        !p.state().join("workq.db").exists(),
        "no SQLite store was made"
    );
    let pg = Project::with_store(&url);
    let jobs = pg.json(&["list"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
    assert_eq!(state_of(&jobs[0]), "succeeded");
    let v = p.json(&["config", "show", "--sources"]);
    let source = v["settings"]["store.url"]["source"].as_str().unwrap_or("");
    assert!(source.contains("config.toml:2"), "{v}");
}
