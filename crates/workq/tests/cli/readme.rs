//! The README's tour, run as written: its shell blocks are read from README.md itself and run in
//! a temporary project, so the README cannot drift from the program. A line that ends in
//! `echo "exit $?"` with an `exit N` comment must exit N; every other line must succeed.

use std::path::Path;
use std::process::Command;

use super::Project;

/// The README at the root of the repository.
pub(super) fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of language `lang` in the section whose heading is `heading` (up to the
/// next heading of any level), in order.
pub(super) fn blocks(text: &str, heading: &str, lang: &str) -> Vec<String> {
    let mut inside = false;
    let mut fence: Option<String> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(body) = fence.as_mut() {
            if line.trim_start().starts_with("```") {
                out.push(std::mem::take(body));
                fence = None;
            } else {
                body.push_str(line.trim_start_matches("  "));
                body.push('\n');
            }
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            if line.trim() == heading {
                inside = true;
            } else if inside {
                break;
            }
            continue;
        }
        if inside && line.trim_start() == format!("```{lang}") {
            fence = Some(String::new());
        }
    }
    assert!(
        !out.is_empty(),
        "README.md has no ```{lang} block under {heading:?}"
    );
    out
}

/// Turns a README block into a checked script: each line that reports its exit status must
/// match the `# exit N` it documents.
pub(super) fn checked(block: &str, bin_dir: &Path) -> String {
    let mut script = String::new();
    for (n, line) in block.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("export PATH=") {
            // The tour puts the release build on PATH; the test runs the build under test.
            script.push_str(&format!("export PATH=\"{}:$PATH\"\n", bin_dir.display()));
            continue;
        }
        let Some((command, rest)) = line.split_once("; echo \"exit $?\"") else {
            script.push_str(line);
            script.push('\n');
            continue;
        };
        let expected = rest
            .split_once('#')
            .and_then(|(_, comment)| exit_in(comment))
            .unwrap_or_else(|| {
                panic!("README line {line:?} reports its exit status without an `exit N` comment")
            });
        script.push_str(&format!(
            "set +e; {command}; rc=$?; set -e; echo \"exit $rc\"\n\
             [ \"$rc\" = {expected} ] || {{ echo \"README tour, line {}: {command} exited $rc, not {expected}\" >&2; exit 90; }}\n",
            n + 1
        ));
    }
    script
}

/// The first `exit N` in a comment.
fn exit_in(comment: &str) -> Option<String> {
    comment.match_indices("exit ").find_map(|(i, _)| {
        let digits: String = comment[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!digits.is_empty()).then_some(digits)
    })
}

#[test]
fn the_readme_tour_runs_as_written() {
    let text = readme();
    let p = Project::new();
    let bin = super::bin();
    let bin_dir = bin.parent().expect("the binary's directory");
    let mut script = String::from(
        "set -eu -o pipefail\n\
         # Whatever happens, stop every worker the tour started.\n\
         trap 'workq worker stop --all -t 20 >/dev/null 2>&1 || true; workq down >/dev/null 2>&1 || true; kill ${wpid:-} 2>/dev/null || true; wait' EXIT\n",
    );
    for block in blocks(&text, "## Tour", "sh")
        .iter()
        .chain(&blocks(&text, "## Workers", "sh"))
        .chain(&blocks(&text, "### Submit options", "sh"))
    {
        script.push_str(&checked(block, bin_dir));
    }
    // The worked example runs on the config shown above it (and only the example: the tour
    // before it runs on the defaults).
    let config = blocks(&text, "## Configuration and typed queues", "toml");
    script.push_str(&format!(
        "mkdir -p .workq\ncat > .workq/config.toml <<'WORKQ_README_TOML'\n{}WORKQ_README_TOML\n",
        config[0]
    ));
    for block in blocks(
        &text,
        "### Worked example: one pipeline run per participant and session",
        "sh",
    ) {
        script.push_str(&checked(&block, bin_dir));
    }
    let out = run_script(&p, "tour.sh", &script, 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README tour failed ({:?})\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // What the tour promises, beyond exit statuses.
    for expected in ["tick 3", "runs after", "hi from /tmp", "urgent"] {
        assert!(stdout.contains(expected), "no {expected:?} in\n{stdout}");
    }
}

/// Runs `script` with bash in project `p`, in the environment every test's commands get, killed
/// after `secs` seconds so that a command that never returns fails the test instead of hanging.
fn run_script(p: &Project, name: &str, script: &str, secs: u32) -> std::process::Output {
    let path = p.path().join(name);
    std::fs::write(&path, script).expect("write the script");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", &secs.to_string(), "bash"])
        .arg(&path)
        .current_dir(p.path());
    for (k, v) in p.cmd().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run bash")
}

/// The `workq serve` section's blocks run as written (they need curl, as a reader would).
#[test]
fn the_readmes_serve_examples_run() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "curl is needed for the README's serve examples under CI=true"
        );
        eprintln!("SKIPPING the README's serve examples: curl is not installed");
        return;
    }
    let text = readme();
    let p = Project::new();
    let bin = super::bin();
    let bin_dir = bin.parent().expect("the binary's directory");
    // Port 7878 is the README's: one test only uses it.
    let mut script =
        format!(
            "set -eu -o pipefail\nexport PATH=\"{}:$PATH\"\ntrap 'kill ${{spid:-}} 2>/dev/null || true; wait' EXIT\n",
            bin_dir.display()
        );
    for block in blocks(
        &text,
        "## Dashboard, HTTP API and metrics: `workq serve`",
        "sh",
    ) {
        script.push_str(&checked(&block, bin_dir));
    }
    let out = run_script(&p, "serve.sh", &script, 120);
    assert!(
        out.status.success(),
        "the serve examples failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
