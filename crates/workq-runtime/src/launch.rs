//! Starting a job's process cheaply: `clone(CLONE_VM | CLONE_VFORK)` on Linux, as `posix_spawn`
//! does, instead of the `fork` that `std::process::Command` falls back to whenever a `pre_exec`
//! hook is set (and the job needs one: a new session and a parent-death signal).
//!
//! `fork` copies the worker's page tables and the child then takes a copy-on-write fault for every
//! page it touches before `exec`. With `CLONE_VFORK` the child borrows the parent's memory, the
//! parent sleeps until the child has called `exec` (or exited), and nothing is copied. The price is
//! that the child may only make raw system calls on data prepared beforehand: everything it needs
//! (paths, argv, envp) is built here, in the parent, before the clone.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::io::RawFd;

/// One way to run the job: the program's candidate paths (PATH order) and its argv.
struct Attempt {
    candidates: Vec<CString>,
    argv: Vec<CString>,
}

/// Everything the child needs, built before it exists.
pub struct Plan {
    /// Tried in order: a later attempt runs only if every candidate of the earlier one failed.
    attempts: Vec<Attempt>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// stdin, stdout and stderr of the child.
    pub fds: [RawFd; 3],
    /// Start a new session (and process group) led by the child.
    pub new_session: bool,
    /// Signal the child gets when the spawning thread exits (0 for none).
    pub death_signal: libc::c_int,
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {what} contains a NUL byte"),
        )
    })
}

/// Where `execvp` would look for `program`: itself if it names a path, else each PATH entry.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the command is empty",
        ));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(vec![cstring("command", program.as_bytes())?]);
    }
    // glibc's default when PATH is unset.
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    let mut out = Vec::new();
    for dir in path.as_bytes().split(|&b| b == b':') {
        let mut full = if dir.is_empty() {
            b"./".to_vec()
        } else {
            let mut d = dir.to_vec();
            d.push(b'/');
            d
        };
        full.extend_from_slice(program.as_bytes());
        out.push(cstring("command", full)?);
    }
    Ok(out)
}

impl Plan {
    /// A plan to run `argv` with `env` (the complete environment) in `cwd`.
    pub fn new(
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cwd: Option<&OsStr>,
        fds: [RawFd; 3],
    ) -> io::Result<Plan> {
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring("environment", kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut plan = Plan {
            attempts: Vec::new(),
            envp,
            cwd: cwd
                .map(|c| cstring("working directory", c.as_bytes()))
                .transpose()?,
            fds,
            new_session: true,
            death_signal: 0,
        };
        plan.push_attempt(argv, env)?;
        Ok(plan)
    }

    /// Adds another way to run the job, tried only if the earlier ones cannot start.
    pub fn or_else(mut self, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<Plan> {
        self.push_attempt(argv, env)?;
        Ok(self)
    }

    fn push_attempt(&mut self, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Result<()> {
        let program = argv.first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the job has an empty command")
        })?;
        // Like std::process::Command: the child's PATH if the job sets one.
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str());
        let attempt = Attempt {
            candidates: candidates(program, path)?,
            argv: argv
                .iter()
                .map(|a| cstring("command", a.clone().into_vec()))
                .collect::<io::Result<_>>()?,
        };
        self.attempts.push(attempt);
        Ok(())
    }
}

/// The environment of this process with `set` applied (a later entry of a name wins) and
/// `remove` taken out; every name appears once.
pub fn environment(set: &[(&str, &str)], remove: &[&str]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !remove.iter().any(|r| k == r) && !set.iter().any(|(s, _)| k == s))
        .collect();
    for (i, (k, v)) in set.iter().enumerate() {
        if !set[i + 1..].iter().any(|(later, _)| later == k) {
            env.push((OsString::from(k), OsString::from(v)));
        }
    }
    env
}

/// Starts the plan and returns the child's pid (also its process group with `new_session`).
#[cfg(target_os = "linux")]
pub fn launch(plan: &Plan) -> io::Result<libc::pid_t> {
    let (fds, moved) = above_stdio(plan.fds)?;
    let ptrs = ChildPointers::new(plan);
    let mut args = ChildArgs {
        attempts: ptrs.attempts.as_ptr(),
        n_attempts: ptrs.attempts.len(),
        envp: ptrs.envp.as_ptr(),
        cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        fds,
        new_session: plan.new_session,
        death_signal: plan.death_signal,
        // SAFETY: no preconditions.
        parent: unsafe { libc::getpid() },
        err: 0,
    };
    let pid = clone_vfork(&mut args);
    drop(moved);
    let pid = pid?;
    // SAFETY: the child has exec'd or exited; it wrote `err` before exiting.
    let err = unsafe { std::ptr::read_volatile(&args.err) };
    if err != 0 {
        // It exited without exec: reap it.
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(pid)
}

/// `fds` with any descriptor that sits on 0–2 moved out of the way (the copies are returned to
/// be closed after the clone), so the child's dup2 calls cannot clobber one with another.
#[cfg(target_os = "linux")]
fn above_stdio(mut fds: [RawFd; 3]) -> io::Result<([RawFd; 3], Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut owned = Vec::new();
    for fd in fds.iter_mut() {
        if *fd < 3 {
            // SAFETY: duplicating a descriptor we were given.
            let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if moved < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `moved` is a fresh descriptor that we own.
            owned.push(unsafe { OwnedFd::from_raw_fd(moved) });
            *fd = moved;
        }
    }
    Ok((fds, owned))
}

/// The NULL-terminated pointer arrays the child reads, built before the clone. They point into
/// the plan's strings, and [`ChildAttempt`] points into them: all must live until it returns.
#[cfg(target_os = "linux")]
struct ChildPointers {
    _candidates: Vec<Vec<*const libc::c_char>>,
    _argv: Vec<Vec<*const libc::c_char>>,
    _script_argv: Vec<Vec<*const libc::c_char>>,
    attempts: Vec<ChildAttempt>,
    envp: Vec<*const libc::c_char>,
}

#[cfg(target_os = "linux")]
impl ChildPointers {
    fn new(plan: &Plan) -> ChildPointers {
        use std::ptr::null;
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(null()))
                .collect()
        };
        let candidates: Vec<Vec<*const libc::c_char>> =
            plan.attempts.iter().map(|a| ptrs(&a.candidates)).collect();
        let argv: Vec<Vec<*const libc::c_char>> =
            plan.attempts.iter().map(|a| ptrs(&a.argv)).collect();
        // For a candidate without `#!` (ENOEXEC), execvp runs it with /bin/sh: ["sh", path,
        // args…]. Slot 1 is filled in by the child.
        let mut script_argv: Vec<Vec<*const libc::c_char>> = plan
            .attempts
            .iter()
            .map(|a| {
                let mut v: Vec<*const libc::c_char> = vec![SH.as_ptr().cast(), null()];
                v.extend(a.argv.iter().skip(1).map(|c| c.as_ptr()));
                v.push(null());
                v
            })
            .collect();
        // Moving the outer vectors below leaves the inner buffers where they are.
        let attempts = (0..plan.attempts.len())
            .map(|i| ChildAttempt {
                candidates: candidates[i].as_ptr(),
                argv: argv[i].as_ptr(),
                script_argv: script_argv[i].as_mut_ptr(),
            })
            .collect();
        ChildPointers {
            _candidates: candidates,
            _argv: argv,
            _script_argv: script_argv,
            attempts,
            envp: ptrs(&plan.envp),
        }
    }
}

/// Clones a child that shares our memory and runs [`child_main`] on a stack of its own; we
/// sleep until it has called exec (or exited). Returns its pid.
#[cfg(target_os = "linux")]
fn clone_vfork(args: &mut ChildArgs) -> io::Result<libc::pid_t> {
    const STACK: usize = 64 * 1024;
    // SAFETY: a private anonymous mapping, unmapped below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // Block every signal across the clone: the child shares our memory, so no handler of ours
    // may run in it. It sets its own mask before exec.
    // SAFETY: sigset operations on sets we own; clone with a fresh stack and a child function
    // that makes raw system calls only; the parent sleeps until the child execs or exits.
    let (pid, clone_err) = unsafe {
        // The raw system call, because pthread_sigmask leaves glibc's own two signals open.
        let all: [u64; 1] = [!0];
        let mut old: [u64; 1] = [0];
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            all.as_ptr(),
            old.as_mut_ptr(),
            8usize,
        );
        let top = (stack as *mut u8).add(STACK);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (args as *mut ChildArgs).cast(),
        );
        let clone_err = io::Error::last_os_error();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            old.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::munmap(stack, STACK);
        (pid, clone_err)
    };
    if pid < 0 {
        return Err(clone_err);
    }
    Ok(pid)
}

#[cfg(target_os = "linux")]
static SH: &[u8] = b"/bin/sh\0";

#[cfg(target_os = "linux")]
#[repr(C)]
struct ChildAttempt {
    candidates: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    script_argv: *mut *const libc::c_char,
}

#[cfg(target_os = "linux")]
#[repr(C)]
struct ChildArgs {
    attempts: *const ChildAttempt,
    n_attempts: usize,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [RawFd; 3],
    new_session: bool,
    death_signal: libc::c_int,
    parent: libc::pid_t,
    /// Written by the child when it cannot exec: the errno.
    err: libc::c_int,
}

/// Reports `e` to the parent and exits (the child's way out when it cannot exec).
#[cfg(target_os = "linux")]
unsafe fn fail(a: &mut ChildArgs, e: libc::c_int) -> ! {
    // SAFETY: the parent reads `err` only after we exit.
    unsafe {
        std::ptr::write_volatile(&mut a.err, if e == 0 { libc::EINVAL } else { e });
        libc::_exit(127)
    }
}

/// The child, between clone and exec. Raw system calls only: it runs on borrowed memory while
/// the parent sleeps, so it must not allocate, lock, or unwind.
#[cfg(target_os = "linux")]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive until we exec or exit.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let errno = || *libc::__errno_location();
        if a.new_session && libc::setsid() < 0 {
            fail(a, errno());
        }
        if a.death_signal != 0 {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                a.death_signal as libc::c_ulong,
                0,
                0,
                0,
            );
            // The parent may have died before prctl took effect.
            if libc::getppid() != a.parent {
                libc::_exit(1);
            }
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(a, errno());
            }
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) < 0 {
            fail(a, errno());
        }
        // Rust ignores SIGPIPE and an ignored signal survives exec: give the job the default.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        // Handlers of ours must not run here once signals are let in: back to the default for
        // the ones Rust's runtime catches (exec resets caught signals anyway).
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let empty: [u64; 1] = [0];
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize,
        );

        let mut last = libc::ENOENT;
        for i in 0..a.n_attempts {
            let at = &*a.attempts.add(i);
            let mut eacces = false;
            last = libc::ENOENT;
            let mut c = at.candidates;
            while !(*c).is_null() {
                libc::execve(*c, at.argv, a.envp);
                let e = errno();
                match e {
                    libc::EACCES => eacces = true,
                    libc::ENOENT
                    | libc::ENOTDIR
                    | libc::ESTALE
                    | libc::ENODEV
                    | libc::ETIMEDOUT => {}
                    libc::ENOEXEC => {
                        // No `#!` line: execvp hands such a file to the shell.
                        *at.script_argv.add(1) = *c;
                        libc::execve(SH.as_ptr().cast(), at.script_argv, a.envp);
                        last = errno();
                        break;
                    }
                    _ => {
                        last = e;
                        break;
                    }
                }
                c = c.add(1);
            }
            if eacces && last == libc::ENOENT {
                last = libc::EACCES;
            }
        }
        fail(a, last)
    }
}

/// Starts the plan with `std::process::Command` where `clone` is not available.
#[cfg(not(target_os = "linux"))]
pub fn launch(plan: &Plan) -> io::Result<libc::pid_t> {
    use std::os::unix::io::FromRawFd;
    use std::os::unix::process::CommandExt;
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for at in &plan.attempts {
        let program = OsStr::from_bytes(at.argv[0].as_bytes());
        let mut cmd = std::process::Command::new(program);
        cmd.args(at.argv[1..].iter().map(|a| OsStr::from_bytes(a.as_bytes())));
        cmd.env_clear();
        for kv in &plan.envp {
            let b = kv.as_bytes();
            if let Some(eq) = b.iter().position(|&c| c == b'=') {
                cmd.env(OsStr::from_bytes(&b[..eq]), OsStr::from_bytes(&b[eq + 1..]));
            }
        }
        if let Some(cwd) = &plan.cwd {
            cmd.current_dir(OsStr::from_bytes(cwd.as_bytes()));
        }
        for (i, &fd) in plan.fds.iter().enumerate() {
            // SAFETY: a duplicate we own, handed to the command.
            let dup = unsafe { libc::dup(fd) };
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            let stdio = unsafe { std::process::Stdio::from_raw_fd(dup) };
            match i {
                0 => cmd.stdin(stdio),
                1 => cmd.stdout(stdio),
                _ => cmd.stderr(stdio),
            };
        }
        let new_session = plan.new_session;
        // SAFETY: only async-signal-safe calls run in the child.
        unsafe {
            cmd.pre_exec(move || {
                if new_session {
                    libc::setsid();
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => return Ok(child.id() as libc::pid_t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Waits for `pid` (a child started by `launch`) to end.
pub fn wait(pid: libc::pid_t) -> io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run(plan: &Plan) -> io::Result<i32> {
        let pid = launch(plan)?;
        Ok(wait(pid)?.code().unwrap_or(-1))
    }

    fn plan(argv: &[&str], out: &std::fs::File) -> Plan {
        let fd = out.as_raw_fd();
        Plan::new(&os(argv), &environment(&[], &[]), None, [fd, fd, fd]).unwrap()
    }

    #[test]
    fn runs_a_program_found_on_path_and_reports_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("out")).unwrap();
        assert_eq!(run(&plan(&["sh", "-c", "echo hi; exit 3"], &f)).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn a_missing_program_is_not_found_and_a_plain_file_is_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("out")).unwrap();
        let e = run(&plan(&["no-such-program-workq"], &f)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let p = dir.path().join("plain");
        std::fs::write(&p, "x").unwrap();
        let e = run(&plan(&[p.to_str().unwrap()], &f)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_script_without_a_shebang_runs_with_sh_and_fallbacks_run_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("out")).unwrap();
        let s = dir.path().join("script");
        std::fs::write(&s, "echo \"script $1\"\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(run(&plan(&[s.to_str().unwrap(), "arg"], &f)).unwrap(), 0);
        let env = environment(&[], &[]);
        let p = Plan::new(
            &os(&["no-such-program-workq"]),
            &env,
            None,
            [f.as_raw_fd(); 3],
        )
        .unwrap()
        .or_else(&os(&["sh", "-c", "echo fallback"]), &env)
        .unwrap();
        assert_eq!(run(&p).unwrap(), 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "script arg\nfallback\n"
        );
    }

    #[test]
    fn cwd_env_and_a_nul_byte() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("out")).unwrap();
        let env = environment(&[("WORKQ_T", "v")], &["HOME"]);
        let p = Plan::new(
            &os(&["sh", "-c", "echo \"$PWD $WORKQ_T ${HOME-unset}\""]),
            &env,
            Some(dir.path().as_os_str()),
            [f.as_raw_fd(); 3],
        )
        .unwrap();
        assert_eq!(run(&p).unwrap(), 0);
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert!(out.ends_with(" v unset\n"), "{out}");
        let twice = environment(&[("WORKQ_T", "user"), ("WORKQ_T", "marker")], &[]);
        let t: Vec<_> = twice.iter().filter(|(k, _)| k == "WORKQ_T").collect();
        assert_eq!(t.len(), 1, "one entry per name");
        assert_eq!(t[0].1, "marker", "the later one wins");
        let e = Plan::new(&os(&["a\0b"]), &env, None, [0, 1, 2])
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let p = Plan::new(
            &os(&["true"]),
            &env,
            Some(OsStr::new("/no/such/dir")),
            [0, 1, 2],
        )
        .unwrap();
        assert_eq!(run(&p).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
