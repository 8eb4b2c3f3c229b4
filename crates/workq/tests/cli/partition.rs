//! Workers on separate "hosts" (network namespaces, each with its own address and its own
//! `WORKQ_HOST`) sharing one PostgreSQL server, and the network between them failing: one host
//! cut off by a packet drop while its jobs run, and a slow link. Checked with the history
//! checker of the chaos tests.
//!
//! The namespaces share the filesystem and the process table with the test, so state dirs, job
//! logs and the checker's event log work as on one machine; only the network is separate.
//! That also means a rescuing worker's sweep can kill the cut-off host's leftover processes
//! itself (same `/proc`), so the fencing assertions compare times against the moment others
//! were first allowed to rescue, not only the ordering of executions.
//!
//! Needs root, `ip` and `iptables`, and the PostgreSQL server binaries: skipped with a loud
//! line without them, and a failure under CI=true.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use workq_core::Timestamp;
use workq_store::pgtest;

use super::{check_chaos_run, marked_processes, state_of, Project, Worker};

/// Every name this module gives a namespace or link starts with this, then the test process's
/// pid: how a later run tells leftovers of a dead test process from those of a live one.
const PREFIX: &str = "wqp";

/// The heartbeat TTL of the partition test: short, so the test is quick; the worker fences at
/// TTL − TTL/3 = 4 s of silence.
const TTL: Duration = Duration::from_secs(6);

/// `what` cannot run here for reason `e`: a loud skip, except under CI=true where it fails.
fn skip(what: &str, e: &str) {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{what} cannot be skipped under CI=true: {e}"
    );
    eprintln!("\n!!!!! SKIPPING {what}: {e} !!!!!\n");
}

/// A system tool, found on PATH or in the sbin directories a non-login shell may lack.
fn tool(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no `{name}` (install iproute2 and iptables)"))
}

/// Runs `program args` and returns its stdout, or an error with its stderr.
fn sh(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn ms_to_ns(t: Timestamp) -> u128 {
    t.0.max(0) as u128 * 1_000_000
}

fn secs(ns: u128) -> f64 {
    ns as f64 / 1e9
}

/// One "host": a network namespace joined to the root namespace by a veth pair.
#[derive(Clone)]
struct Host {
    ns: String,
    /// The link's end in the root namespace, where the server listens.
    outer: String,
    /// The link's end in the host's namespace.
    inner: String,
    /// The address of `outer`: how the host reaches the server.
    server_addr: Ipv4Addr,
    /// The host's own address, on `inner`.
    addr: Ipv4Addr,
}

/// The hosts of one test and the packet drops in force, all removed on drop (panics included).
struct Net {
    ip: PathBuf,
    iptables: PathBuf,
    hosts: Vec<Host>,
    /// (host, chain, rule) of each DROP rule added and not yet deleted.
    rules: Vec<(usize, &'static str, Vec<String>)>,
}

/// The /30 networks: 100.64.0.0/10 (shared address space, unlikely to be in use on a test
/// machine), 32 addresses per test process by its pid, 16 per test, 4 per host.
fn host_net(test: usize, host: usize) -> (Ipv4Addr, Ipv4Addr) {
    let block = std::process::id() & 0x1_ffff;
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + block * 32 + test as u32 * 16;
    let net = base + host as u32 * 4;
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
}

impl Net {
    /// Sets up `count` hosts for test number `test` (0 or 1: each test of this process has
    /// its own names and networks, since tests run in parallel).
    fn setup(test: usize, count: usize) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces and iptables need it".into());
        }
        let ip = tool("ip")?;
        let iptables = tool("iptables")?;
        sh(&iptables, &["-w", "-S", "INPUT"])
            .map_err(|e| format!("iptables does not work here: {e}"))?;
        remove_stale(&ip, &iptables);
        let mut net = Net {
            ip,
            iptables,
            hosts: Vec::new(),
            rules: Vec::new(),
        };
        let in_use = sh(&net.ip, &["-o", "-4", "addr", "show"])?;
        let pid = std::process::id();
        for h in 0..count {
            // "t" ends the pid: the test number must not read as one more digit of it.
            let ns = format!("{PREFIX}{pid}t{test}{}", (b'a' + h as u8) as char);
            let (server_addr, addr) = host_net(test, h);
            if in_use.contains(&format!(" {server_addr}/")) {
                return Err(format!("{server_addr} is already in use on this machine"));
            }
            let host = Host {
                outer: format!("{ns}r"),
                inner: format!("{ns}n"),
                ns,
                server_addr,
                addr,
            };
            // Recorded before it exists, so a failure half-way is cleaned up too.
            net.hosts.push(host.clone());
            let ip = |args: &[&str]| sh(&net.ip, args);
            ip(&["netns", "add", &host.ns])?;
            ip(&[
                "link",
                "add",
                &host.outer,
                "type",
                "veth",
                "peer",
                "name",
                &host.inner,
            ])?;
            ip(&["link", "set", &host.inner, "netns", &host.ns])?;
            ip(&[
                "addr",
                "add",
                &format!("{server_addr}/30"),
                "dev",
                &host.outer,
            ])?;
            ip(&["link", "set", &host.outer, "up"])?;
            ip(&[
                "-n",
                &host.ns,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                &host.inner,
            ])?;
            ip(&["-n", &host.ns, "link", "set", &host.inner, "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The networks the server must listen on and trust.
    fn server_nets(&self) -> Vec<(Ipv4Addr, u8)> {
        self.hosts.iter().map(|h| (h.server_addr, 30)).collect()
    }

    /// The command prefix that runs a program on host `h`.
    fn exec(&self, h: usize) -> Vec<String> {
        vec![
            self.ip.display().to_string(),
            "netns".into(),
            "exec".into(),
            self.hosts[h].ns.clone(),
        ]
    }

    /// Cuts host `h` off: every packet on its link dropped, both ways (a silent loss, as when
    /// a cable or a switch fails, not a refused connection).
    fn cut(&mut self, h: usize) -> Result<(), String> {
        let outer = self.hosts[h].outer.clone();
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let rule: Vec<String> = [dir, &outer, "-j", "DROP"].map(String::from).into();
            let mut args = vec!["-w", "-I", chain];
            args.extend(rule.iter().map(String::as_str));
            sh(&self.iptables, &args)?;
            self.rules.push((h, chain, rule));
        }
        Ok(())
    }

    /// Undoes [`Net::cut`] of host `h`.
    fn heal(&mut self, h: usize) -> Result<(), String> {
        let (mine, others): (Vec<_>, Vec<_>) = self.rules.drain(..).partition(|r| r.0 == h);
        self.rules = others;
        for (_, chain, rule) in mine {
            let mut args = vec!["-w", "-D", chain];
            args.extend(rule.iter().map(String::as_str));
            sh(&self.iptables, &args)?;
        }
        Ok(())
    }

    /// Whether a TCP connection from host `h` to `port` on its server address gets through
    /// within `limit`: Ok(true), Ok(false) if it timed out (dropped), Err if refused or failed.
    fn reaches(&self, h: usize, port: u16, limit: Duration) -> Result<bool, String> {
        let host = self.hosts[h].clone();
        let target = SocketAddr::from((host.server_addr, port));
        // setns changes the namespace of the calling thread only: a thread of its own.
        std::thread::spawn(move || -> Result<bool, String> {
            let path = format!("/run/netns/{}", host.ns);
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            match TcpStream::connect_timeout(&target, limit) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
                Err(e) => Err(format!("connect to {target} from {}: {e}", host.ns)),
            }
        })
        .join()
        .map_err(|_| "the probe thread panicked".to_string())?
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, chain, rule) in std::mem::take(&mut self.rules) {
            let mut args = vec!["-w", "-D", chain];
            args.extend(rule.iter().map(String::as_str));
            if let Err(e) = sh(&self.iptables, &args) {
                eprintln!("partition cleanup: {e}");
            }
        }
        for h in &self.hosts {
            // Deleting the namespace destroys the veth pair with it; the link is deleted too
            // in case the namespace never got its end.
            let _ = sh(&self.ip, &["netns", "del", &h.ns]);
            let _ = sh(&self.ip, &["link", "del", &h.outer]);
        }
    }
}

/// The pid in a name this module gave, if that process is gone.
fn dead_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let pid: i32 = digits.parse().ok()?;
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) == 0 };
    (!alive).then_some(pid)
}

/// Removes the namespaces, links and DROP rules that test processes now gone left behind
/// (killed before their guards ran).
fn remove_stale(ip: &Path, iptables: &Path) {
    for chain in ["INPUT", "OUTPUT"] {
        for line in sh(iptables, &["-w", "-S", chain])
            .unwrap_or_default()
            .lines()
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            let stale = words
                .windows(2)
                .any(|w| (w[0] == "-i" || w[0] == "-o") && dead_owner(w[1]).is_some());
            if words.len() > 2 && words[0] == "-A" && stale {
                let mut args = vec!["-w", "-D"];
                args.extend(&words[1..]);
                let _ = sh(iptables, &args);
            }
        }
    }
    for line in sh(ip, &["netns", "list"]).unwrap_or_default().lines() {
        if let Some(ns) = line.split_whitespace().next() {
            if dead_owner(ns).is_some() {
                let _ = sh(ip, &["netns", "del", ns]);
            }
        }
    }
    for line in sh(ip, &["-o", "link", "show"]).unwrap_or_default().lines() {
        let Some(name) = line.split_whitespace().nth(1) else {
            continue;
        };
        let name = name.trim_end_matches(':');
        let name = name.split('@').next().unwrap_or(name);
        if dead_owner(name).is_some() {
            let _ = sh(ip, &["link", "del", name]);
        }
    }
}

/// A job line in the format of the chaos tests' (start and end lines appended to `log`), doing
/// `work` in between.
fn job_line(log: &Path, work: &str) -> String {
    format!(
        "echo start $WORKQ_JOB_ID $WORKQ_ATTEMPT $(date +%s%N) >> {l}; {work}; echo end $WORKQ_JOB_ID $WORKQ_ATTEMPT $(date +%s%N) >> {l}\n",
        l = log.display()
    )
}

/// A short job, 10 to 90 ms by its id.
const SHORT: &str = "sleep 0.0$(( $WORKQ_JOB_ID % 9 + 1 ))";

/// Submits `lines` (with `extra` submit arguments) and returns the ids.
fn submit_lines(p: &Project, name: &str, lines: &str, extra: &[&str]) -> Vec<i64> {
    let file = p.path().join(name);
    std::fs::write(&file, lines).unwrap();
    let mut args = vec!["submit", "--lines", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    p.ok(&args)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// The (start, end) times of each attempt in the event log.
fn events(log: &Path) -> std::collections::BTreeMap<(i64, u32), (u128, Option<u128>)> {
    let mut runs = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let (Ok(id), Ok(attempt), Ok(t)) = (f[1].parse(), f[2].parse(), f[3].parse::<u128>())
        else {
            continue;
        };
        match f[0] {
            "start" => {
                runs.insert((id, attempt), (t, None));
            }
            _ => {
                if let Some(r) = runs.get_mut(&(id, attempt)) {
                    r.1 = Some(t);
                }
            }
        }
    }
    runs
}

/// The registry rows of the worker named `name` on host `host`, newest first.
fn worker_rows(p: &Project, name: &str, host: &str) -> Vec<Value> {
    let all = p.json(&["workers", "list", "--all"]);
    let mut rows: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["name"] == name && w["host"] == host)
        .collect();
    rows.sort_by_key(|w| std::cmp::Reverse(w["id"].as_i64()));
    rows
}

fn rfc3339_ns(ns: u128) -> String {
    Timestamp((ns / 1_000_000) as i64).to_rfc3339()
}

fn rfc3339(v: &Value) -> Timestamp {
    Timestamp::parse_at(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
}

/// The silence a fencing line reports (`cannot reach the store for X: …`), if any.
fn fence_silence(log: &str) -> Option<Duration> {
    log.split("cannot reach the store for ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|d| workq_core::parse_duration(d).ok())
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}: {}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three hosts share one PostgreSQL server. Host A runs two long jobs when every packet on its
/// link starts being dropped: A's worker kills them itself before the TTL (its fencing line
/// names a silence under the TTL, and the processes are gone before the first moment another
/// host may declare A dead); B and C rescue them after the TTL and run them once; when the
/// link heals, A's worker is alive in the registry again and runs new jobs; the history
/// checker passes over the whole run.
#[test]
fn partition_cut_off_host_fences_others_rescue_and_it_rejoins() {
    const SHORT_JOBS: usize = 40;
    const REJOIN_JOBS: usize = 8;
    let began = Instant::now();
    let what = "the partition test";
    let mut net = match Net::setup(0, 3) {
        Ok(n) => n,
        Err(e) => return skip(what, &e),
    };
    let cluster = match pgtest::Cluster::start_listening(&net.server_nets()) {
        Ok(c) => c,
        Err(e) => return skip(what, &e),
    };
    let url = cluster.create_db("partition").expect("database");
    let mut p = Project::with_store(&url);
    // Every command of the test judges liveness with the TTL the workers use.
    let ttl_text = format!("{}s", TTL.as_secs());
    p.env.push(("WORKQ_HEARTBEAT_TTL".into(), ttl_text.clone()));
    let log = p.path().join("events.log");
    let names = ["a", "b", "c"];
    let host_name = |h: usize| format!("part-{}", names[h]);
    let start = |h: usize, queues: &str| -> Worker {
        let exec = net.exec(h);
        let exec: Vec<&str> = exec.iter().map(String::as_str).collect();
        let store = cluster.url_via(net.hosts[h].server_addr, "partition");
        p.worker_in(
            &exec,
            names[h],
            &[
                "-w",
                "2",
                "--stop-timeout",
                "2s",
                "--heartbeat",
                "300ms",
                "-Q",
                queues,
            ],
            &[
                ("WORKQ_HOST", &host_name(h)),
                ("WORKQ_STORE", &store),
                ("WORKQ_HEARTBEAT_TTL", &ttl_text),
            ],
        )
    };

    // A alone first, so both long jobs (running until killed, on their first attempt) are its.
    // It also serves `rejoin`, which only it serves: after the heal, jobs there prove it claims.
    let a = start(0, "default,rejoin");
    let long = submit_lines(
        &p,
        "long.txt",
        &job_line(&log, "[ $WORKQ_ATTEMPT -gt 1 ] || sleep 600").repeat(2),
        &[],
    );
    for &id in &long {
        let j = p.wait_job(id, "running on A", |j| {
            state_of(j) == "running" && j["attempts"][0]["pid"].is_i64()
        });
        assert_eq!(j["worker"], "a", "{j}");
    }
    let _b = start(1, "default");
    let _c = start(2, "default");
    let short = submit_lines(
        &p,
        "short.txt",
        &job_line(&log, SHORT).repeat(SHORT_JOBS),
        &[],
    );
    super::chaos_progress(&p, &log, 5, Instant::now() + Duration::from_secs(30));

    // The cut. The probe shows it drops (a connect times out) rather than refuses.
    let cut_at = now_ns();
    net.cut(0).expect("cut host A off");
    assert_eq!(
        net.reaches(0, cluster.port(), Duration::from_secs(1)),
        Ok(false),
        "a connection from the cut-off host must time out"
    );
    assert_eq!(
        net.reaches(1, cluster.port(), Duration::from_secs(1)),
        Ok(true)
    );

    // A's job processes must go by A's own hand: watched closely, since a rescuing host on
    // this machine would kill them too, but only once it may declare A dead.
    let mut gone_at = 0;
    wait_until(
        "A's jobs being killed",
        TTL * 3,
        || {
            let alive = long
                .iter()
                .any(|&id| !marked_processes(p.path(), id, 1).is_empty());
            gone_at = now_ns();
            !alive
        },
        || a.log_text(),
    );
    // A's last heartbeat in the store, plus the TTL: the first moment another host may call it
    // dead and kill its leftovers.
    let a_row = worker_rows(&p, "a", &host_name(0))
        .into_iter()
        .next()
        .expect("A is registered");
    let last_beat = ms_to_ns(rfc3339(&a_row["heartbeat_at"]));
    let rescue_allowed = last_beat + TTL.as_nanos();
    assert!(
        gone_at < rescue_allowed,
        "A's jobs were still running {:.2}s after its last heartbeat ({}, {:.2}s before the \
         cut at {}), past the TTL ({TTL:?}): they were not fenced in time; A's log {}",
        secs(gone_at - last_beat),
        rfc3339_ns(last_beat),
        secs(cut_at.saturating_sub(last_beat)),
        rfc3339_ns(cut_at),
        {
            // What A did next, for the diagnosis.
            std::thread::sleep(TTL / 2);
            a.log_text()
        }
    );

    // And A says so, with a silence under the TTL.
    wait_until(
        "A's fencing line",
        TTL * 2,
        || a.log_text().contains("cannot reach the store for"),
        || a.log_text(),
    );
    let silence = fence_silence(&a.log_text()).expect("the fencing line says how long");
    assert!(
        silence < TTL,
        "A fenced after {silence:?}, not under the TTL {TTL:?}: {}",
        a.log_text()
    );

    // B and C rescue them after the TTL, and run them once.
    let mut rescued_after = Vec::new();
    for &id in &long {
        let j = p.wait_job(id, "rescued and succeeded", |j| state_of(j) == "succeeded");
        let attempts = j["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{j}");
        assert_eq!(attempts[0]["outcome"], "lost", "{j}");
        assert_ne!(attempts[1]["host"], host_name(0).as_str(), "{j}");
        let rescued_at = ms_to_ns(rfc3339(&attempts[0]["ended_at"]));
        assert!(
            rescued_at >= rescue_allowed,
            "job {id} rescued {:.2}s after A's last heartbeat, before the TTL: {j}",
            secs(rescued_at.saturating_sub(last_beat))
        );
        let second = events(&log)[&(id, 2)].0;
        assert!(
            second > gone_at,
            "job {id} ran again before A's copy was gone"
        );
        rescued_after.push(secs(rescued_at - cut_at));
    }

    // The heal: A's worker comes back as a live worker (under a new id, since it was declared
    // dead) and claims again.
    let healed_at = Instant::now();
    net.heal(0).expect("heal");
    let mut rejoined = Duration::ZERO;
    wait_until(
        "A rejoining",
        TTL * 3,
        || {
            let alive = worker_rows(&p, "a", &host_name(0))
                .first()
                .is_some_and(|w| matches!(w["state"].as_str(), Some("idle" | "busy")));
            rejoined = healed_at.elapsed();
            alive
        },
        || {
            format!(
                "registry: {:?}\nA's log:\n{}",
                worker_rows(&p, "a", &host_name(0)),
                a.log_text()
            )
        },
    );
    let rejoin = submit_lines(
        &p,
        "rejoin.txt",
        &job_line(&log, SHORT).repeat(REJOIN_JOBS),
        &["-Q", "rejoin"],
    );
    let out = p.run(&["wait", "--all", "--timeout", "60s"]);
    assert!(
        out.status.success(),
        "{}\nA's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log_text()
    );
    // Under a new id: the old row stays dead, and nothing ran under it after the heal.
    let rows = worker_rows(&p, "a", &host_name(0));
    let new_id = rows[0]["id"].as_i64();
    assert_ne!(new_id, a_row["id"].as_i64(), "{rows:?}");
    let old = rows
        .iter()
        .find(|w| w["id"] == a_row["id"])
        .expect("A's old row");
    assert_eq!(old["state"], "dead", "{rows:?}");
    for &id in &rejoin {
        let j = p.job(id);
        assert_eq!(
            (j["worker"].as_str(), j["worker_id"].as_i64()),
            (Some("a"), new_id),
            "{j}"
        );
    }
    let all: Vec<i64> = long.iter().chain(&short).chain(&rejoin).copied().collect();
    let lost = check_chaos_run(&p, &all, &log);
    assert_eq!(lost, long.len(), "only A's two jobs were lost");
    eprintln!(
        "partition: A ({}) fenced after {silence:?} of silence (TTL {TTL:?}); its jobs were gone {:.2}s \
         after the cut, {:.2}s before others could rescue; rescued {rescued_after:.2?}s after the \
         cut; A alive again {rejoined:.2?} after the heal; {} jobs each succeeded once; {:.1?} in all",
        net.hosts[0].addr,
        secs(gone_at - cut_at),
        secs(rescue_allowed) - secs(gone_at),
        all.len(),
        began.elapsed()
    );
    for line in a.log_text().lines().filter(|l| {
        [
            "cannot reach the store",
            "has ended",
            "rejoined",
            "answers again",
        ]
        .iter()
        .any(|w| l.contains(w))
    }) {
        eprintln!("partition: A's log: {line}");
    }
}

/// A TCP relay that delivers every chunk `delay` after it arrived, in each direction, in order:
/// a slow link for a kernel without `netem`. Threads of the test process; stopped on drop.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(upstream) else {
                                continue;
                            };
                            let _ = client.set_nonblocking(false);
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let mut held = conns.lock().unwrap_or_else(|p| p.into_inner());
                            for s in [&client, &server] {
                                if let Ok(s) = s.try_clone() {
                                    held.push(s);
                                }
                            }
                            drop(held);
                            pump(&client, &server, delay);
                            pump(&server, &client, delay);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Relay {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read: a reader thread
/// stamps the chunks, a writer thread waits out each stamp (the delay is constant, so the
/// order is kept and chunks in flight overlap, as on a long wire).
fn pump(from: &TcpStream, to: &TcpStream, delay: Duration) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, None));
                    return;
                }
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, Some(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            match chunk {
                Some(c) if to.write_all(&c).is_ok() => {}
                _ => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
            }
        }
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Two hosts share one PostgreSQL server; one reaches it over a link that delays every packet
/// (or chunk) by 200 ms each way. Its worker runs its jobs correctly (history checker), is not
/// fenced and not declared dead, only slower.
#[test]
fn slow_link_keeps_workers_correct() {
    const DELAY: Duration = Duration::from_millis(200);
    const SHARED_JOBS: usize = 30;
    const SLOW_JOBS: usize = 6;
    // The default TTL, set explicitly so the commands and workers agree whatever the
    // environment: a 400 ms round trip times the statements of one turn of the worker's loop
    // makes heartbeats seconds apart, which the short TTL of the partition test is not for.
    const SLOW_TTL: Duration = Duration::from_secs(60);
    // The silence after which the worker would fence at the first failed call (TTL − 20 s).
    const SLOW_FENCE: Duration = Duration::from_secs(40);
    let began = Instant::now();
    let what = "the slow-link test";
    let net = match Net::setup(1, 2) {
        Ok(n) => n,
        Err(e) => return skip(what, &e),
    };
    let cluster = match pgtest::Cluster::start_listening(&net.server_nets()) {
        Ok(c) => c,
        Err(e) => return skip(what, &e),
    };
    let url = cluster.create_db("slow").expect("database");
    let (fast, slow) = (0, 1);

    // netem where the kernel has it, on both ends of the slow host's link; else the relay.
    let netem = |dev: &str, ns: Option<&str>| -> Result<String, String> {
        let mut args = vec![];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        args.extend([
            "qdisc", "add", "dev", dev, "root", "netem", "delay", "200ms",
        ]);
        sh(&tool("tc")?, &args)
    };
    let h = &net.hosts[slow];
    let netem_result = netem(&h.inner, Some(&h.ns)).and_then(|_| netem(&h.outer, None));
    // The relay (if any) lives until the end of the test: the workers' connections go through it.
    let (relay, slow_url) = match netem_result {
        Ok(_) => {
            eprintln!("\n!!!!! slow link: tc netem delay 200ms on both ends of the link !!!!!\n");
            (None, cluster.url_via(h.server_addr, "slow"))
        }
        Err(e) => {
            let relay = Relay::start(
                SocketAddr::from((h.server_addr, 0)),
                SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port())),
                DELAY,
            )
            .expect("start the delaying relay");
            eprintln!(
                "\n!!!!! slow link: no netem here ({e}); using the test's delaying TCP relay \
                 ({DELAY:?} each way) at {} !!!!!\n",
                relay.addr
            );
            let u = format!("postgres://workq@{}/slow", relay.addr);
            (Some(relay), u)
        }
    };
    let mut p = Project::with_store(&url);
    let ttl_text = format!("{}s", SLOW_TTL.as_secs());
    p.env.push(("WORKQ_HEARTBEAT_TTL".into(), ttl_text.clone()));
    let log = p.path().join("events.log");

    // The time of one command through each link: proof the slow one is slow.
    let status_time = |h: usize, store: &str| {
        let exec = net.exec(h);
        let exec: Vec<&str> = exec.iter().map(String::as_str).collect();
        let t = Instant::now();
        let out = p
            .cmd_via(&exec)
            .env("WORKQ_STORE", store)
            .args(["--json", "status"])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let fast_url = cluster.url_via(net.hosts[fast].server_addr, "slow");
    let fast_status = status_time(fast, &fast_url);
    let slow_status = status_time(slow, &slow_url);
    assert!(
        slow_status >= DELAY * 2,
        "a command over the slow link took {slow_status:?}: the link is not slow"
    );

    let start = |h: usize, name: &str, store: &str, queues: &str| -> Worker {
        let exec = net.exec(h);
        let exec: Vec<&str> = exec.iter().map(String::as_str).collect();
        p.worker_in(
            &exec,
            name,
            &[
                "-w",
                "2",
                "--stop-timeout",
                "2s",
                "--heartbeat",
                "300ms",
                "-Q",
                queues,
            ],
            &[
                ("WORKQ_HOST", &format!("slow-test-{name}")),
                ("WORKQ_STORE", store),
                ("WORKQ_HEARTBEAT_TTL", &ttl_text),
            ],
        )
    };
    let t0 = Instant::now();
    let f = start(fast, "fast", &fast_url, "default");
    let s = start(slow, "slow", &slow_url, "default,slow");
    let slow_started = t0.elapsed();
    // Jobs only the slow host serves, so it surely does its share, and shared ones.
    let slow_only = submit_lines(
        &p,
        "slow.txt",
        &job_line(&log, SHORT).repeat(SLOW_JOBS),
        &["-Q", "slow"],
    );
    let shared = submit_lines(
        &p,
        "shared.txt",
        &job_line(&log, SHORT).repeat(SHARED_JOBS),
        &[],
    );
    let submitted = Instant::now();
    // Watch the slow worker's heartbeats in the store meanwhile: the longest gap between two.
    let mut beats: Vec<Timestamp> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(w) = worker_rows(&p, "slow", "slow-test-slow").first() {
            let t = rfc3339(&w["heartbeat_at"]);
            if beats.last() != Some(&t) {
                beats.push(t);
            }
        }
        let left = p.json(&["list", "--state", "queued,running", "--limit", "0"]);
        if left.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        if Instant::now() >= deadline {
            // Jobs the store still has running whose command has already ended (by the event
            // log): the worker did not notice or did not report their exit.
            let ended = events(&log);
            let unreported: Vec<String> = left
                .as_array()
                .into_iter()
                .flatten()
                .filter(|j| state_of(j) == "running")
                .filter_map(|j| {
                    let id = j["id"].as_i64()?;
                    let attempt = j["attempt"].as_u64()? as u32;
                    let end = ended.get(&(id, attempt))?.1?;
                    Some(format!(
                        "job {id} on {}, ended {:.1}s ago",
                        j["worker"],
                        secs(now_ns().saturating_sub(end))
                    ))
                })
                .collect();
            panic!(
                "the jobs did not finish; running in the store but ended: {unreported:?}; \
                 slow worker's log:\n{}",
                s.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained = submitted.elapsed();
    let all: Vec<i64> = slow_only.iter().chain(&shared).copied().collect();
    let lost = check_chaos_run(&p, &all, &log);
    assert_eq!(lost, 0, "no attempt was lost on a slow link");
    for &id in &slow_only {
        assert_eq!(p.job(id)["worker"], "slow");
    }
    let ran_by = |name: &str| {
        all.iter()
            .filter(|&&id| p.job(id)["worker"] == name)
            .count()
    };
    let (by_fast, by_slow) = (ran_by("fast"), ran_by("slow"));
    for (w, name) in [(&s, "slow"), (&f, "fast")] {
        let text = w.log_text();
        assert!(
            !text.contains("cannot reach the store") && !text.contains(" is dead"),
            "the {name} worker fenced or saw a dead worker:\n{text}"
        );
    }
    let rows = worker_rows(&p, "slow", "slow-test-slow");
    assert_eq!(rows.len(), 1, "the slow worker registered once: {rows:?}");
    assert!(
        matches!(rows[0]["state"].as_str(), Some("idle" | "busy")),
        "{rows:?}"
    );
    let max_gap = beats
        .windows(2)
        .map(|w| w[1].since(w[0]))
        .max()
        .unwrap_or_default();
    assert!(
        max_gap < SLOW_FENCE,
        "the slow worker's heartbeats were {max_gap:?} apart, past its fence point: {beats:?}"
    );
    eprintln!(
        "slow link ({}): `status` {fast_status:.2?} fast vs {slow_status:.2?} slow; slow worker \
         registered in {slow_started:.2?}; {} jobs drained in {drained:.2?}, {by_fast} by the \
         fast host and {by_slow} by the slow one ({SLOW_JOBS} of them its own queue's); slow \
         worker's heartbeat gap at most {max_gap:?} (every 300ms configured, TTL {SLOW_TTL:?}); \
         {:.1?} in all",
        if relay.is_some() { "relay" } else { "netem" },
        all.len(),
        began.elapsed()
    );
}
