//! The dashboard in a real headless Chromium over WebDriver (chromedriver), against a real
//! `workq serve` and a real worker. Each test saves screenshots under
//! `target/browser-artifacts/` and prints their paths.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium chromium-driver`): without them the
//! tests print a note and pass, except under `CI=true`, where a missing browser fails them.
//! Every process a test starts (the server, the worker, chromedriver and its Chromium) is
//! owned by a guard that kills it on drop, so none outlives the test, even a failed one.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{bin, process_alive, Project};

/// One browser at a time: a test machine may have two cores, and several Chromiums at once
/// would turn timing bounds into flakes.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// How long a DOM condition may take to hold (a liveness bound, not a timing assertion).
const DOM_WAIT: Duration = Duration::from_secs(10);

/// The browser programs, or `None` (after saying why) when this machine has none.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        names.iter().find_map(|n| {
            std::env::split_paths(&path)
                .chain([
                    PathBuf::from("/usr/bin"),
                    PathBuf::from("/usr/lib/chromium"),
                ])
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
    };
    let driver = find(&["chromedriver"]);
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        (d, c) => {
            let missing: Vec<&str> = [("chromedriver", d.is_none()), ("chromium", c.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect();
            let msg = format!(
                "browser tests need {} (Debian: apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{msg}; under CI=true they must run"
            );
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Where screenshots go: `target/browser-artifacts/` beside the binary under test.
fn artifacts_dir() -> PathBuf {
    let exe = bin();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/browser-artifacts");
    dir
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("its address").port()
}

/// `workq serve` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(p: &Project) -> Server {
        let log = std::fs::File::create(p.path().join("serve.log")).expect("serve log");
        let mut child = p
            .cmd()
            .args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start workq serve");
        let stdout = child.stdout.take().expect("serve stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next();
        // The server prints nothing more on stdout, but a full pipe must never block it.
        std::thread::spawn(move || for _ in lines {});
        let mut server = Server {
            child,
            url: String::new(),
        };
        let line = match first {
            Some(Ok(line)) => line,
            other => panic!(
                "workq serve printed no address ({other:?}): {}",
                std::fs::read_to_string(p.path().join("serve.log")).unwrap_or_default()
            ),
        };
        let v: Value = serde_json::from_str(&line).expect("serve's first line is JSON");
        let url = v["url"].as_str().expect("url").trim_end_matches('/');
        let addr: SocketAddr = v["listen"].as_str().expect("listen").parse().expect("addr");
        assert_ne!(addr.port(), 0, "the real port is printed");
        server.url = url.to_string();
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver (and the Chromium it starts) for one test. Dropping it kills chromedriver's
/// whole process group and anything still using the test's browser profile, so no browser
/// process outlives the test even when it panics.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    fn start(driver: &Path) -> Driver {
        for _ in 0..3 {
            let profile = tempfile::tempdir().expect("browser profile dir");
            let port = free_port();
            let mut cmd = Command::new(driver);
            cmd.arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group, so the browser it starts can be killed with it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd.spawn().expect("start chromedriver");
            let mut d = Driver {
                child,
                port,
                profile,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return d;
                }
                if let Ok(Some(_)) = d.child.try_wait() {
                    // Lost the port to another program: try another.
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Dropping it stops whatever of it runs.
        }
        panic!("chromedriver did not start listening");
    }

    fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's helpers may have left the group; they all name the profile directory.
        let needle = self.profile.path().to_string_lossy().into_owned();
        for _ in 0..20 {
            let mut found = false;
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if !process_alive(pid) {
                    continue;
                }
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(needle.as_str()) {
                    found = true;
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if !found {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A browser session on the dashboard of one test's project.
struct Browser {
    client: Client,
    name: &'static str,
    base: String,
    _driver: Driver,
}

impl Browser {
    async fn open(name: &'static str, server: &Server, programs: &(PathBuf, PathBuf)) -> Browser {
        let driver = Driver::start(&programs.0);
        let caps = json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                    "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", driver.profile.path().display()),
                ],
                "binary": programs.1.display().to_string(),
            },
            // Dialogs stay open until a test answers them, as a user would.
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session with headless Chromium");
        Browser {
            client,
            name,
            base: server.url.clone(),
            _driver: driver,
        }
    }

    async fn goto(&self, route: &str) {
        self.client
            .goto(&format!("{}/{route}", self.base))
            .await
            .expect("navigate");
    }

    /// Runs `script` (a function body that returns a value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns true in the page; on timeout saves a screenshot and fails
    /// with `what` and the page's visible text.
    async fn wait_until(&self, what: &str, script: &str) {
        self.wait_within(DOM_WAIT, what, script).await;
    }

    async fn wait_within(&self, limit: Duration, what: &str, script: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.client.execute(script, Vec::new()).await.ok() == Some(Value::Bool(true)) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let shot = self.screenshot("failure").await;
                let text = self
                    .js("return document.body.innerText")
                    .await
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                panic!(
                    "{}: {what} did not happen within {limit:?} (screenshot {})\npage text:\n{text}",
                    self.name,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` finds; again if a refresh replaced it between find and click.
    async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            let clicked = match found {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("click {css}: {e}; again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Accepts the confirm() the last click opened, returning its text.
    async fn accept_confirm(&self) -> String {
        let deadline = Instant::now() + DOM_WAIT;
        loop {
            match self.client.get_alert_text().await {
                Ok(text) => {
                    self.client.accept_alert().await.expect("accept the dialog");
                    return text;
                }
                Err(e) => assert!(Instant::now() < deadline, "no dialog opened: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, what: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{}-{what}.png", self.name));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }

    /// Marks the page, to tell later that it was never reloaded.
    async fn mark_page(&self) {
        self.js("window.__workqTestMark = 'still here'; return true")
            .await;
    }

    async fn assert_not_reloaded(&self) {
        assert_eq!(
            self.js("return window.__workqTestMark || null").await,
            json!("still here"),
            "the page was reloaded"
        );
    }

    async fn close(self) {
        // Ends the session, so chromedriver closes Chromium itself; the guard then stops it.
        let _ = self.client.close().await;
    }
}

/// Runs one browser test: skipped without a browser, one at a time, on a fresh runtime.
fn browser_test<F, Fut>(body: F)
where
    F: FnOnce((PathBuf, PathBuf)) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(programs) = browser_programs() else {
        return;
    };
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let start = Instant::now();
    rt.block_on(body(programs));
    println!("browser test took {:?}", start.elapsed());
}

/// The JS test for a job row in the given state.
fn row_in_state(id: i64, state: &str) -> String {
    format!(
        "return !!document.querySelector('#jobs tr[data-job-id=\"{id}\"][data-state=\"{state}\"]')"
    )
}

fn attempt_pid(p: &Project, id: i64) -> i32 {
    let j = p.job(id);
    j["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|a| a["pid"].as_i64())
        .unwrap_or_else(|| panic!("job {id} has no attempt with a pid: {j}")) as i32
}

#[test]
fn browser_dashboard_loads_with_queues_workers_and_jobs() {
    browser_test(|programs| async move {
        let p = Project::new();
        let _w = p.worker("w1", 2);
        // Something in every column: two queues, jobs that succeeded, failed, run and wait.
        let ok = p.submit(&["--label", "team=data", "--", "echo", "hello"]);
        let bad = p.submit(&["--", "sh", "-c", "echo broken >&2; exit 3"]);
        p.wait_job(ok, "succeeded", |j| j["state"] == "succeeded");
        p.wait_job(bad, "failed", |j| j["state"] == "failed");
        let running = p.submit(&["--", "sleep", "30"]);
        p.submit(&["-Q", "reports", "--", "sh", "-c", "echo report"]);
        p.submit(&["--delay", "1h", "--", "echo", "later"]);
        p.wait_job(running, "running", |j| j["state"] == "running");
        let server = Server::start(&p);

        let b = Browser::open("dashboard", &server, &programs).await;
        b.goto("").await;
        assert_eq!(b.client.title().await.expect("title"), "workq");
        b.wait_until(
            "the queues table shows both queues",
            "return !!document.querySelector('#queues tr[data-queue=\"default\"]') && \
             !!document.querySelector('#queues tr[data-queue=\"reports\"]')",
        )
        .await;
        b.wait_until(
            "the worker is listed",
            "return !!document.querySelector('#workers tr[data-worker-name=\"w1\"]')",
        )
        .await;
        b.wait_until(
            "the running job is listed",
            &row_in_state(running, "running"),
        )
        .await;
        b.wait_until(
            "the connection indicator says live",
            "return document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        let counts = b
            .js(
                "const r = document.querySelector('#queues tr[data-queue=\"default\"]'); \
                 return [...r.cells].map(c => c.textContent.trim())",
            )
            .await;
        assert_eq!(counts[0], json!("default"), "{counts}");
        assert_eq!(counts[3], json!("1"), "one running: {counts}");
        assert_eq!(counts[5], json!("1"), "one failed: {counts}");
        // Every queue has its throughput chart, labelled for screen readers.
        let charts = b
            .js("return [...document.querySelectorAll('#queues svg.spark')].map(s => s.getAttribute('aria-label'))")
            .await;
        assert_eq!(charts.as_array().map(Vec::len), Some(2), "{charts}");
        assert!(
            charts[0].as_str().unwrap_or("").starts_with("Last hour"),
            "{charts}"
        );
        // User text is shown as text: the label and the stderr redirect are not markup.
        b.wait_until(
            "the failed job's command shows as typed",
            &format!(
                "const r = document.querySelector('#jobs tr[data-job-id=\"{bad}\"]'); \
                 return !!r && r.querySelector('code').textContent === 'echo broken >&2; exit 3'"
            ),
        )
        .await;
        b.screenshot("desktop").await;
        b.close().await;
    });
}

#[test]
fn browser_a_job_submitted_from_the_cli_appears_without_a_reload() {
    browser_test(|programs| async move {
        let p = Project::new();
        let _w = p.worker("w1", 1);
        let server = Server::start(&p);
        let b = Browser::open("live-submit", &server, &programs).await;
        b.goto("").await;
        b.wait_until(
            "the connection indicator says live",
            "return document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        b.wait_until(
            "the empty jobs list shows",
            "return !document.querySelector('#jobs-empty').hidden",
        )
        .await;
        b.mark_page().await;
        let id = p.submit(&["--", "sleep", "30"]);
        let took = b
            .wait_within(
                Duration::from_secs(5),
                "the job submitted from the CLI appears in the list",
                &format!("return !!document.querySelector('#jobs tr[data-job-id=\"{id}\"]')"),
            )
            .await;
        println!("job {id} appeared in the list {took:?} after its submit returned");
        b.assert_not_reloaded().await;
        b.screenshot("appeared").await;
        b.close().await;
    });
}

#[test]
fn browser_cancel_stops_a_running_job_and_its_process() {
    browser_test(|programs| async move {
        let p = Project::new();
        let _w = p.worker("w1", 1);
        let id = p.submit(&["--", "sleep", "30"]);
        p.wait_job(id, "running", |j| j["state"] == "running");
        let pid = attempt_pid(&p, id);
        assert!(process_alive(pid), "job {id}'s process {pid} runs");
        let server = Server::start(&p);
        let b = Browser::open("cancel", &server, &programs).await;
        b.goto("").await;
        b.wait_until("the running job is listed", &row_in_state(id, "running"))
            .await;
        b.mark_page().await;
        b.click(&format!(
            "#jobs tr[data-job-id=\"{id}\"] button[data-action=\"cancel\"]"
        ))
        .await;
        let question = b.accept_confirm().await;
        assert!(question.contains(&format!("Cancel job {id}")), "{question}");
        b.wait_until(
            "the action's per-job result shows",
            &format!("return !!document.querySelector('#results li[data-result-id=\"{id}\"][data-done=\"true\"]')"),
        )
        .await;
        b.wait_until("the job shows cancelled", &row_in_state(id, "cancelled"))
            .await;
        b.assert_not_reloaded().await;
        b.screenshot("cancelled").await;
        assert_eq!(p.job(id)["state"], "cancelled");
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "job {id}'s process {pid} survives its cancel"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        b.close().await;
    });
}

#[test]
fn browser_a_jobs_log_tails_live() {
    browser_test(|programs| async move {
        let p = Project::new();
        let _w = p.worker("w1", 1);
        // The second line waits for the test's go-ahead, so "live" is not a race with a timer.
        let id = p.submit(&[
            "--",
            "sh",
            "-c",
            "echo first-line; while [ ! -e go ]; do sleep 0.05; done; echo second-line",
        ]);
        p.wait_job(id, "running", |j| j["state"] == "running");
        let server = Server::start(&p);
        let b = Browser::open("log-tail", &server, &programs).await;
        b.goto(&format!("#/jobs/{id}")).await;
        b.wait_until(
            "the first line shows in #job-log",
            "return document.querySelector('#job-log').textContent.includes('first-line')",
        )
        .await;
        b.mark_page().await;
        let log = b
            .js("return document.querySelector('#job-log').textContent")
            .await;
        assert!(!log.as_str().unwrap_or("").contains("second-line"), "{log}");
        b.wait_until(
            "the attempts table shows attempt 1 running",
            "return !!document.querySelector('#attempts tr[data-attempt=\"1\"][data-outcome=\"running\"]')",
        )
        .await;
        std::fs::write(p.path().join("go"), b"").expect("write go");
        b.wait_until(
            "the second line shows in #job-log",
            "return document.querySelector('#job-log').textContent.includes('second-line')",
        )
        .await;
        b.wait_until(
            "the job shows succeeded",
            "return document.querySelector('#job-state').dataset.state === 'succeeded'",
        )
        .await;
        b.assert_not_reloaded().await;
        let log = b
            .js("return document.querySelector('#job-log').textContent")
            .await;
        assert!(
            log.as_str()
                .unwrap_or("")
                .contains("first-line\nsecond-line"),
            "each line once, in order: {log}"
        );
        b.screenshot("job-log").await;
        b.close().await;
    });
}

#[test]
fn browser_phone_width_has_no_horizontal_overflow() {
    browser_test(|programs| async move {
        let p = Project::new();
        let _w = p.worker("w1", 1);
        let long = "x".repeat(200);
        let id = p.submit(&["--label", "kind=long", "--", "echo", &long]);
        p.wait_job(id, "succeeded", |j| j["state"] == "succeeded");
        p.submit(&["--", "sleep", "30"]);
        let server = Server::start(&p);
        let b = Browser::open("phone", &server, &programs).await;
        b.client
            .set_window_size(390, 844)
            .await
            .expect("set the window size");
        b.goto("").await;
        b.wait_until(
            "the jobs list shows",
            &format!("return !!document.querySelector('#jobs tr[data-job-id=\"{id}\"]')"),
        )
        .await;
        b.wait_until(
            "the worker is listed",
            "return !!document.querySelector('#workers tr[data-worker-name=\"w1\"]')",
        )
        .await;
        let width = b.js("return window.innerWidth").await;
        assert!(
            width.as_i64().is_some_and(|w| w <= 400),
            "the viewport is phone-sized: {width}"
        );
        let overflow = "return document.documentElement.scrollWidth <= window.innerWidth";
        let sizes = "return [document.documentElement.scrollWidth, window.innerWidth]";
        b.screenshot("overview").await;
        assert_eq!(b.js(overflow).await, json!(true), "{}", b.js(sizes).await);
        b.goto(&format!("#/jobs/{id}")).await;
        b.wait_until(
            "the job's output shows",
            "return document.querySelector('#job-log').textContent.includes('xxxx')",
        )
        .await;
        b.screenshot("job").await;
        assert_eq!(b.js(overflow).await, json!(true), "{}", b.js(sizes).await);
        b.close().await;
    });
}
