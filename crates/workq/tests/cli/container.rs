//! Container mode on real engines: docker (required under CI=true) and podman (where it can run
//! a container on this machine). No image can be pulled here, so the tests build their own once
//! per test process from busybox-static's `/bin/busybox` (`IMAGE import`), under a tag derived
//! from its content so that parallel test binaries agree on it. Every container a test starts is
//! removed when it ends, even on panic; names carry the project's store id, so tests running in
//! parallel never see each other's containers.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{state_of, Project};

/// A container engine these tests can use, with its copy of the test image.
struct Engine {
    /// `docker` or `podman`, as the queues' `runtime`.
    name: &'static str,
    /// The test image's tag in this engine.
    image: String,
    /// Environment the engine needs in every command (podman's test-only config, if any).
    env: Vec<(String, String)>,
}

impl Engine {
    /// The engine's client with its environment.
    fn cmd(&self) -> Command {
        let mut c = Command::new(self.name);
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Names of every container, running or not.
    fn names(&self) -> Vec<String> {
        let out = self
            .cmd()
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .output()
            .expect("list containers");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// Busybox applets the image links: what the tests' jobs use.
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "id", "pwd", "env", "true", "false", "ls", "touch", "kill",
    "printf", "test", "[",
];

/// Bumped when the image's layout changes, so an old image under the same tag is not reused.
const IMAGE_LAYOUT: u32 = 1;

/// Podman's defaults ask runc for rlimits (nofile 1048576) above what some machines (this
/// sandbox among them) let a process set; runc then fails with "error setting rlimits". Used
/// only when podman cannot run the image without it, and only through `CONTAINERS_CONF`.
const PODMAN_CONF: &str = "# Written by workq's tests (crates/workq/tests/cli/container.rs).
[containers]
default_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]
";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn last_line(b: &[u8]) -> String {
    text(b)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The engines to test against. A docker that is missing or does not answer skips loudly,
/// and fails under CI=true; podman only ever skips loudly (it is optional in CI).
fn engines() -> Vec<&'static Engine> {
    static DOCKER: OnceLock<Result<Engine, String>> = OnceLock::new();
    static PODMAN: OnceLock<Result<Engine, String>> = OnceLock::new();
    let mut out = Vec::new();
    match DOCKER.get_or_init(|| prepare("docker")) {
        Ok(e) => out.push(e),
        Err(why) => {
            assert!(
                !under_ci(),
                "the docker container tests cannot be skipped under CI=true: {why}"
            );
            eprintln!("\n!!!!! SKIPPING container tests on docker: {why} !!!!!\n");
        }
    }
    match PODMAN.get_or_init(|| prepare("podman")) {
        Ok(e) => out.push(e),
        Err(why) => eprintln!("\n!!!!! SKIPPING container tests on podman: {why} !!!!!\n"),
    }
    out
}

/// Checks that `name` answers, imports the test image into it (unless a test process already
/// did) and runs it once, as workq will.
fn prepare(name: &'static str) -> Result<Engine, String> {
    let mut engine = Engine {
        name,
        image: String::new(),
        env: Vec::new(),
    };
    match engine.cmd().arg("info").output() {
        Err(e) => return Err(format!("cannot run `{name}`: {e}")),
        Ok(o) if !o.status.success() => {
            return Err(format!(
                "`{name} info` failed ({}): {}",
                o.status,
                last_line(&o.stderr)
            ))
        }
        Ok(_) => {}
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no /bin/busybox to build the test image from: install busybox-static")?;
    let bytes = std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    engine.image = format!("workq-test/busybox:{}", image_tag(&bytes));
    let present = engine
        .cmd()
        .args(["image", "inspect", &engine.image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        import(&engine, &bytes)?;
    }
    let smoke = |e: &Engine| {
        e.cmd()
            .args(["run", "--rm", "--init", &e.image, "true"])
            .output()
            .map_err(|err| err.to_string())
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(format!("{}: {}", o.status, last_line(&o.stderr)))
                }
            })
    };
    match smoke(&engine) {
        Ok(()) => Ok(engine),
        Err(plain) if name == "podman" => {
            engine.env = podman_env()?;
            smoke(&engine).map_err(|with| {
                format!("`podman run` fails: {plain}; with lower rlimits too: {with}")
            })?;
            eprintln!(
                "note: podman runs the test image only with the rlimits of {} (without: {plain})",
                engine.env[0].1
            );
            Ok(engine)
        }
        Err(e) => Err(format!("`{name} run --init {}` fails: {e}", engine.image)),
    }
}

/// A tag from the busybox binary, the applets and the layout.
fn image_tag(busybox: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same in every test process built by this compiler.
    let mut h = std::hash::DefaultHasher::new();
    busybox.hash(&mut h);
    APPLETS.hash(&mut h);
    IMAGE_LAYOUT.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Builds the image's root filesystem (busybox and its applet links, /tmp) and imports it.
fn import(engine: &Engine, busybox: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(root.path().join("tmp")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        root.path().join("tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(bin.join("busybox"), busybox).map_err(|e| e.to_string())?;
    std::fs::set_permissions(bin.join("busybox"), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).map_err(|e| e.to_string())?;
    }
    let out = Command::new("sh")
        .args(["-c", "tar -C \"$1\" -c . | \"$2\" import - \"$3\""])
        .args(["sh"])
        .arg(root.path())
        .args([engine.name, &engine.image])
        .envs(engine.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} import` of the test image failed: {}",
            engine.name,
            last_line(&out.stderr)
        ))
    }
}

/// `CONTAINERS_CONF` naming [`PODMAN_CONF`], written once per machine (atomically, as test
/// processes run in parallel).
fn podman_env() -> Result<Vec<(String, String)>, String> {
    let dir = std::env::temp_dir().join("workq-test-podman");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let conf = dir.join("containers.conf");
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(PODMAN_CONF) {
        let tmp = dir.join(format!("containers.conf.{}", std::process::id()));
        std::fs::write(&tmp, PODMAN_CONF).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &conf).map_err(|e| e.to_string())?;
    }
    Ok(vec![("CONTAINERS_CONF".into(), conf.display().to_string())])
}

/// A project whose queues run in `engine`; every container of its store is removed on drop.
struct Boxed {
    p: Project,
    engine: &'static Engine,
}

impl Deref for Boxed {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.p
    }
}

impl Boxed {
    /// A project with `queues` as its config, `{image}` and `{runtime}` filled in.
    fn new(engine: &'static Engine, queues: &str) -> Boxed {
        let mut p = Project::new();
        p.env.extend(engine.env.iter().cloned());
        let config = queues
            .replace("{image}", &engine.image)
            .replace("{runtime}", engine.name);
        std::fs::create_dir_all(p.state()).unwrap();
        std::fs::write(p.state().join("config.toml"), config).unwrap();
        Boxed { p, engine }
    }

    /// `workq-STOREID8-`, the start of every container name of this project's store.
    fn prefix(&self) -> Option<String> {
        let db = self.state().join("workq.db");
        if !db.exists() {
            return None;
        }
        let c =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        c.busy_timeout(Duration::from_secs(10)).ok()?;
        let id: String = c
            .query_row(
                "SELECT value FROM store_info WHERE key = 'store_id'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        Some(format!("workq-{}-", id.chars().take(8).collect::<String>()))
    }

    /// The container name of `job`'s `attempt`.
    fn name(&self, job: i64, attempt: u32) -> String {
        format!(
            "{}{job}-{attempt}",
            self.prefix().expect("the store exists")
        )
    }

    /// This project's containers, running or not.
    fn containers(&self) -> Vec<String> {
        let Some(prefix) = self.prefix() else {
            return Vec::new();
        };
        self.engine
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Waits until the container of `job`'s `attempt` exists (`true`) or is gone (`false`).
    fn wait_container(&self, job: i64, attempt: u32, exists: bool) {
        let name = self.name(job, attempt);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.engine.names().contains(&name) != exists {
            assert!(
                Instant::now() < deadline,
                "{} container {name} {} ({:?})",
                self.engine.name,
                if exists {
                    "never appeared"
                } else {
                    "is still there"
                },
                self.engine.names()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `workq` with the environment the engine needs and `args`.
    fn out(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run workq")
    }
}

impl Drop for Boxed {
    /// Removes every container of this store, whatever the test left (it may have panicked).
    fn drop(&mut self) {
        let names = self.containers();
        if !names.is_empty() {
            let _ = self
                .engine
                .cmd()
                .args(["rm", "-f"])
                .args(&names)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().expect("job id")
}

/// The uid:gid of this test process, which submits the jobs.
fn me() -> String {
    // SAFETY: no memory is touched.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    format!("{uid}:{gid}")
}

fn owner(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{}:{}", m.uid(), m.gid())
}

const RUNS: &str = r#"[queues.box]
mode = "container"
image = "{image}"
runtime = "{runtime}"
env = { FOO = "bar baz" }
container_args = ["--env", "EXTRA=from container_args", "--network", "none"]

[queues.as1000]
mode = "container"
image = "{image}"
runtime = "{runtime}"
container_user = "1000:1000"

[queues.imageuser]
mode = "container"
image = "{image}"
runtime = "{runtime}"
container_user = ""
"#;

/// What a job sees in its container, one `key=value` a line.
const PROBE: &str = "echo \"pwd=$(pwd)\"; echo \"user=$(id -u):$(id -g)\"; \
     echo \"env=$FOO|$EXTRA|$WORKQ_JOB_ID|$WORKQ_ATTEMPT|$WORKQ_QUEUE\"; \
     touch \"written-by-$WORKQ_JOB_ID\"; echo 'to stderr' >&2; exit 3";

/// A job runs in its container with the project directory mounted at the same path and as its
/// working directory, the job's and workq's environment, the queue's extra flags and the
/// submitter's uid:gid (or the queue's `container_user`, or with `""` the image's own user); its
/// output is its log, its exit status is the job's, and the container is gone after it.
#[test]
fn a_job_runs_in_its_container_with_the_projects_dir_env_user_and_exit_status() {
    for engine in engines() {
        let started = Instant::now();
        let p = Boxed::new(engine, RUNS);
        let dir = p.path().display().to_string();
        let out = p.out(&["submit", "-Q", "box", "--wait", "--shell", "--", PROBE]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
        let expect = format!(
            "pwd={dir}\nuser={}\nenv=bar baz|from container_args|1|1|box\n",
            me()
        );
        // The engine carries stdout and stderr apart, so their lines may interleave either way.
        let all = format!("{expect}to stderr\n");
        assert_eq!(
            sorted_lines(&stdout),
            sorted_lines(&all),
            "{}: {stdout}",
            engine.name
        );
        assert_eq!(
            sorted_lines(&p.ok(&["logs", "1"])),
            sorted_lines(&all),
            "{}",
            engine.name
        );
        let j = p.job(1);
        assert_eq!(
            (
                j["exit_code"].as_i64(),
                j["attempts"][0]["outcome"].as_str()
            ),
            (Some(3), Some("failed")),
            "{j}"
        );
        assert_eq!(
            j["container"],
            serde_json::json!({"runtime": engine.name, "image": engine.image, "user": me(),
                "args": ["--env", "EXTRA=from container_args", "--network", "none"]}),
            "{j}"
        );
        let show = p.ok(&["show", "1"]);
        assert!(
            show.contains(&format!(
                "{} ({}, user {}), --env 'EXTRA=from container_args' --network none",
                engine.image,
                engine.name,
                me()
            )),
            "{show}"
        );
        assert_eq!(owner(&p.path().join("written-by-1")), me());
        p.wait_container(1, 1, false);

        // A queue's own user; the directory must let it in and write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = p.out(&["submit", "-Q", "as1000", "--wait", "--shell", "--", PROBE]);
        assert!(
            text(&out.stdout).contains("user=1000:1000\n"),
            "{}: {}{}",
            engine.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(owner(&p.path().join("written-by-2")), "1000:1000");
        assert_eq!(p.job(2)["container"]["user"], "1000:1000");

        // `container_user = ""`: no --user, so the image's own (root in this image).
        let out = p.out(&[
            "submit",
            "-Q",
            "imageuser",
            "--wait",
            "--shell",
            "--",
            PROBE,
        ]);
        assert!(
            text(&out.stdout).contains("user=0:0\n"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(p.job(3)["container"]["user"], Value::Null);
        assert!(p.containers().is_empty(), "{:?}", p.containers());
        eprintln!(
            "{}: runs in its container: {:.1}s",
            engine.name,
            started.elapsed().as_secs_f64()
        );
    }
}

/// The default user is the submitter's, not the worker's: a job submitted by uid 1000 and run
/// by a root worker writes files owned by uid 1000 in the mount.
#[test]
fn the_default_container_user_is_the_submitters_not_the_workers() {
    // SAFETY: no memory is touched.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n!!!!! SKIPPING the other-submitter container test: it needs root !!!!!\n");
        return;
    }
    for engine in engines() {
        use std::os::unix::process::CommandExt;
        let p = Boxed::new(engine, RUNS);
        // The submitter owns the project (and so creates the store); the worker is root.
        let chown = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(p.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let out = p
            .cmd()
            .uid(1000)
            .gid(1000)
            .args(["--json", "submit", "-Q", "box", "--shell", "--", PROBE])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id = id_of(&serde_json::from_slice(&out.stdout).unwrap());
        let _w = p.worker_env("root", &["-Q", "box"], &[]);
        p.wait_job(id, "failed", |j| state_of(j) == "failed");
        assert!(
            p.ok(&["logs", &id.to_string()])
                .contains("user=1000:1000\n"),
            "{}",
            engine.name
        );
        assert_eq!(
            owner(&p.path().join(format!("written-by-{id}"))),
            "1000:1000"
        );
        assert_eq!(p.job(id)["container"]["user"], "1000:1000");
    }
}

const STOPS: &str = r#"[queues.box]
mode = "container"
image = "{image}"
runtime = "{runtime}"
kill_grace = "2s"

[queues.boxt]
mode = "container"
image = "{image}"
runtime = "{runtime}"
timeout = "1s"
kill_grace = "2s"
"#;

/// Ignores SIGTERM (saying so in its log and in a file of the mounted directory) until killed.
const STUBBORN: &str = "trap 'echo got TERM; echo >> terms-$WORKQ_ATTEMPT' TERM; echo started; \
     while :; do sleep 0.2; done";
/// Exits 0 on SIGTERM, saying so.
const POLITE: &str = "trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.2; done";

/// Waits until the job's log says it started, so that its container runs its command.
fn wait_started(p: &Boxed, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p
        .out(&["logs", &id.to_string()])
        .stdout
        .starts_with(b"started")
    {
        assert!(Instant::now() < deadline, "job {id} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn seconds(ts: &Value) -> f64 {
    // RFC 3339 with milliseconds, in UTC: only differences are taken.
    let t = ts.as_str().expect("a time");
    let hms = &t[t.find('T').expect("a date and time") + 1..t.len() - 1];
    hms.split(':')
        .map(|x| x.parse::<f64>().expect("a number"))
        .fold(0.0, |acc, x| acc * 60.0 + x)
}

/// A timeout and a cancel stop the container (SIGTERM inside, SIGKILL after the grace) and
/// it is removed; so does `worker stop`, both when the worker interrupts its job itself and
/// when it is killed past the stop timeout.
#[test]
fn timeout_cancel_and_worker_stop_stop_the_container_and_remove_it() {
    for engine in engines() {
        let started = Instant::now();
        let p = Boxed::new(engine, STOPS);
        let _w = p.worker_env("w", &["-Q", "box,boxt", "-w", "2"], &[]);

        // Timeout: TERM reaches the command in the container, which ignores it; KILL comes
        // only after the 2s grace.
        let t = id_of(&p.json(&["submit", "-Q", "boxt", "--shell", "--", STUBBORN]));
        let j = p.wait_job(t, "timed out", |j| state_of(j) == "failed");
        let a = &j["attempts"][0];
        assert_eq!(a["outcome"], "timeout", "{j}");
        let ran = seconds(&a["ended_at"]) - seconds(&a["started_at"]);
        assert!(ran >= 2.5, "killed before the grace: {ran:.2}s {j}");
        assert!(
            p.ok(&["logs", &t.to_string()]).contains("got TERM"),
            "{}",
            engine.name
        );
        p.wait_container(t, 1, false);

        // Cancel: TERM in the container, which exits.
        let c = id_of(&p.json(&["submit", "-Q", "box", "--shell", "--", POLITE]));
        wait_started(&p, c);
        p.ok(&["cancel", &c.to_string()]);
        let j = p.wait_job(c, "cancelled", |j| state_of(j) == "cancelled");
        assert_eq!(j["attempts"][0]["outcome"], "cancelled", "{j}");
        assert!(p.ok(&["logs", &c.to_string()]).contains("got TERM"));
        p.wait_container(c, 1, false);
        drop(_w);

        // `worker stop` of a worker with a short stop timeout: it interrupts its job itself.
        let _w = p.worker_env("quick", &["-Q", "box", "--stop-timeout", "1s"], &[]);
        let s = id_of(&p.json(&["submit", "-Q", "box", "--shell", "--", STUBBORN]));
        wait_started(&p, s);
        p.wait_container(s, 1, true);
        p.ok(&["worker", "stop", "quick"]);
        let j = p.wait_job(s, "queued again", |j| state_of(j) == "queued");
        assert_eq!(j["attempts"][0]["outcome"], "interrupted", "{j}");
        p.wait_container(s, 1, false);
        drop(_w);

        // `worker stop -t 1` of a worker that would wait 30s: it is killed, and `worker stop`
        // removes the container of the job it had.
        let _w = p.worker_env("slow", &["-Q", "box", "--stop-timeout", "30s"], &[]);
        wait_started(&p, s);
        p.wait_container(s, 2, true);
        p.ok(&["worker", "stop", "slow", "-t", "1"]);
        p.wait_container(s, 2, false);
        // Killed, not stopped: podman's `rm -f` alone would SIGTERM it and wait out a 10s stop
        // timeout first, which the command would have noted in the mounted directory.
        assert!(
            !p.path().join("terms-2").exists(),
            "{}: the container of a killed worker was stopped, not killed",
            engine.name
        );
        let j = p.wait_job(s, "queued again", |j| state_of(j) == "queued");
        assert_eq!(j["attempts"][1]["outcome"], "interrupted", "{j}");
        assert!(p.containers().is_empty(), "{:?}", p.containers());
        eprintln!(
            "{}: timeout, cancel, worker stop: {:.1}s",
            engine.name,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Runs 300s on its first attempt and ends at once on the next.
const FIRST_HANGS: &str =
    "echo started; if [ \"$WORKQ_ATTEMPT\" = 1 ]; then sleep 300; fi; echo \"done $WORKQ_ATTEMPT\"";

/// A worker killed with SIGKILL leaves its job's container running in the engine (its client
/// dies with it): `workers cleanup`, or the monitor of a daemon worker, removes it, and the job
/// is rescued.
#[test]
fn sigkill_of_a_worker_leaves_no_container_once_cleanup_or_the_monitor_ran() {
    for engine in engines() {
        let started = Instant::now();
        let p = Boxed::new(engine, STOPS);
        let mut w = p.worker_env("w", &["-Q", "box"], &[]);
        let id = id_of(&p.json(&["submit", "-Q", "box", "--shell", "--", FIRST_HANGS]));
        wait_started(&p, id);
        p.wait_container(id, 1, true);
        let client = p.job(id)["attempts"][0]["pid"]
            .as_i64()
            .expect("the client's pid") as i32;
        w.signal(libc::SIGKILL);
        w.wait_exit();
        // The container outlives its worker and its client...
        super::lifecycle_wait_dead(client);
        assert!(
            p.containers().contains(&p.name(id, 1)),
            "{}: the container went away by itself, so this test proves nothing",
            engine.name
        );
        // ...until a cleanup.
        p.ok(&["workers", "cleanup"]);
        p.wait_container(id, 1, false);
        let j = p.job(id);
        assert_eq!(
            (state_of(&j), j["attempts"][0]["outcome"].as_str()),
            ("queued", Some("lost")),
            "{j}"
        );

        // A daemon worker killed the same way: its monitor sweeps and restarts it, and the
        // rescued jobs run again.
        p.ok(&["worker", "start", "mon", "-d", "-Q", "box"]);
        p.wait_job(id, "done", |j| state_of(j) == "succeeded");
        let again = id_of(&p.json(&["submit", "-Q", "box", "--shell", "--", FIRST_HANGS]));
        wait_started(&p, again);
        p.wait_container(again, 1, true);
        let pid = p.json(&["worker", "status", "mon"])["pid"]
            .as_i64()
            .expect("worker pid") as i32;
        // SAFETY: a plain signal to the worker process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        p.wait_container(again, 1, false);
        let j = p.wait_job(again, "done", |j| state_of(j) == "succeeded");
        assert_eq!(j["attempts"][0]["outcome"], "lost", "{j}");
        p.ok(&["worker", "stop", "mon"]);
        assert!(p.containers().is_empty(), "{:?}", p.containers());
        eprintln!(
            "{}: SIGKILL cleanup: {:.1}s",
            engine.name,
            started.elapsed().as_secs_f64()
        );
    }
}

const FAILS: &str = r#"[queues.box]
mode = "container"
image = "{image}"
runtime = "{runtime}"

[queues.gone]
mode = "container"
image = "registry.invalid/workq-test/no-such-image:1"
runtime = "{runtime}"
"#;

/// An engine that cannot run the container (a missing image that cannot be pulled; a docker
/// daemon that is not running) ends the attempt as a `spawn_error` with the engine's own line;
/// a command missing in the container is a failure that says so; `doctor` names a daemon that
/// does not answer.
#[test]
fn a_missing_image_or_engine_is_a_spawn_error_with_the_engines_reason() {
    for engine in engines() {
        let started = Instant::now();
        let p = Boxed::new(engine, FAILS);
        let out = p.out(&["submit", "-Q", "gone", "--wait", "--", "true"]);
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
        let j = p.job(1);
        let a = &j["attempts"][0];
        assert_eq!(a["outcome"], "spawn_error", "{j}");
        let error = a["error"].as_str().unwrap_or("");
        assert!(
            error.starts_with("the container engine failed (exit 125): ")
                && error.contains("registry.invalid"),
            "{}: {error}",
            engine.name
        );
        assert_eq!(j["last_error"], a["error"], "{j}");

        let out = p.out(&[
            "submit",
            "-Q",
            "box",
            "--wait",
            "--",
            "no-such-program-here",
        ]);
        let j = p.job(2);
        assert_eq!(j["attempts"][0]["outcome"], "failed", "{j}");
        let error = j["attempts"][0]["error"].as_str().unwrap_or("");
        if engine.name == "docker" {
            assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
            assert!(
                error.starts_with("the command in the container was not found (exit 127): ")
                    && error.contains("no-such-program-here"),
                "{error}"
            );
        } else {
            // Podman's --init (catatonit) cannot exec the command and exits 1, which a job's
            // own status may be too: a plain failure, with catatonit's line in the log.
            assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
            assert_eq!(error, "exited with status 1");
            let log = p.ok(&["logs", "2"]);
            assert!(log.contains("failed to exec pid1"), "{log}");
        }

        // Podman has no daemon to be down.
        if engine.name == "docker" {
            let down = [("DOCKER_HOST", "unix:///nonexistent.sock")];
            let out = p
                .cmd()
                .envs(down)
                .args(["submit", "-Q", "box", "--wait", "--", "true"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
            let j = p.job(3);
            assert_eq!(j["attempts"][0]["outcome"], "spawn_error", "{j}");
            let error = j["attempts"][0]["error"].as_str().unwrap_or("");
            assert!(
                error.starts_with("the container engine failed (exit 125): ")
                    && error.contains("Cannot connect to the Docker daemon"),
                "{error}"
            );
            let out = p.cmd().envs(down).arg("doctor").output().unwrap();
            let doc = text(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{doc}");
            assert!(
                doc.contains("the docker engine is unreachable")
                    && doc.contains("Cannot connect to the Docker daemon"),
                "{doc}"
            );
            // With the daemon back, doctor is content.
            let out = p.out(&["doctor"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        }
        assert!(p.containers().is_empty(), "{:?}", p.containers());
        eprintln!(
            "{}: engine failures: {:.1}s",
            engine.name,
            started.elapsed().as_secs_f64()
        );
    }
}

/// README's container example, as written but for the image (and the runtime, to test each
/// engine): every key loads, and a job runs with its user, environment and flags.
#[test]
fn the_readmes_container_example_runs_on_the_real_engine() {
    let block =
        super::readme::blocks(&super::readme::readme(), "### Container mode", "toml").remove(0);
    for engine in engines() {
        let config = block
            .replace("\"pennbbl/qsiprep:1.0\"", "\"{image}\"")
            .replace("runtime = \"auto\"", "runtime = \"{runtime}\"");
        assert!(
            config.contains("{image}") && config.contains("{runtime}"),
            "{config}"
        );
        let p = Boxed::new(engine, &config);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        p.ok(&["config", "show"]);
        let out = p.out(&[
            "submit",
            "-Q",
            "qsiprep",
            "--wait",
            "--shell",
            "--",
            "echo \"$(id -u):$(id -g) $TEMPLATEFLOW_HOME $(pwd)\"",
        ]);
        assert_eq!(
            text(&out.stdout),
            format!("1000:1000 /data/templateflow {}\n", p.path().display()),
            "{}: {}",
            engine.name,
            text(&out.stderr)
        );
        let c = &p.job(1)["container"];
        assert_eq!(c["user"], "1000:1000", "{c}");
        assert_eq!(c["args"][0], "--memory", "{c}");
    }
}

/// The lines of `s`, sorted: output whose streams may interleave, compared as a whole.
fn sorted_lines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.lines().collect();
    v.sort_unstable();
    v
}
