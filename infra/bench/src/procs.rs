//! The processes under test: spawned pinned to a core with `taskset`, logged to files, recorded
//! in the pid file the script's trap cleans up, and killed when dropped — so no error path
//! leaves a gateway or simulator behind. Everything listens on 127.0.0.1 only.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Res;

/// Where binaries, logs and generated files are.
pub struct Env {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub pid_file: Option<PathBuf>,
}

/// A running child process, killed on drop.
pub struct Proc {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far by all the process's threads, in nanoseconds (the first field of
    /// each `/proc/PID/task/TID/schedstat`).
    pub fn cpu_ns(&self) -> Res<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid()))? {
            let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .ok_or_else(|| format!("unreadable schedstat for {}", self.name))?;
        }
        Ok(total)
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Res<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no VmRSS for {}", self.name).into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to start: program (from `bin_dir`), arguments, extra environment, core.
pub struct Spec<'a> {
    pub name: &'a str,
    pub program: &'a str,
    pub args: Vec<String>,
    pub envs: Vec<(&'a str, String)>,
    pub core: u8,
    pub port: u16,
}

impl Env {
    /// Spawn `spec` under `taskset -c CORE`, without waiting for it to be ready.
    pub fn spawn(&self, spec: &Spec<'_>) -> Res<Proc> {
        self.spawn_under(spec, &[])
    }

    /// Spawn `spec` under `taskset -c CORE` and `wrapper` (a tool that runs the program, such as
    /// valgrind), without waiting for it to be ready.
    pub fn spawn_under(&self, spec: &Spec<'_>, wrapper: &[String]) -> Res<Proc> {
        let log = self.work_dir.join(format!("{}.log", spec.name));
        let log = OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(spec.core.to_string())
            .args(wrapper)
            .arg(self.bin_dir.join(spec.program))
            .args(&spec.args)
            .envs(spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        if let Some(pid_file) = &self.pid_file {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(pid_file)?;
            writeln!(f, "{}", child.id())?;
        }
        Ok(Proc {
            name: spec.name.to_string(),
            port: spec.port,
            child,
        })
    }

    /// Spawn and wait until the port accepts connections (at most 10 s).
    pub fn start(&self, spec: &Spec<'_>) -> Res<Proc> {
        self.start_under(spec, &[], Duration::from_secs(10))
    }

    /// [`Env::spawn_under`], then wait until the port accepts connections (at most `wait`).
    pub fn start_under(&self, spec: &Spec<'_>, wrapper: &[String], wait: Duration) -> Res<Proc> {
        let mut proc = self.spawn_under(spec, wrapper)?;
        let deadline = Instant::now() + wait;
        while !accepts(spec.port) {
            if let Some(status) = proc.child.try_wait()? {
                return Err(format!("{} exited early ({status}); see its log", spec.name).into());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {}", spec.name, spec.port).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(proc)
    }

    pub fn write(&self, name: &str, text: &str) -> Res<PathBuf> {
        let path = self.work_dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The gateway's environment: quiet logs, one worker thread.
pub fn gateway_spec<'a>(config: &Path, port: u16, name: &'a str) -> Spec<'a> {
    Spec {
        name,
        program: "gateway",
        args: vec![
            "--config".into(),
            config.display().to_string(),
            "--port".into(),
            port.to_string(),
        ],
        envs: vec![
            ("API_GATEWAY_LOG_LEVEL", "warn".into()),
            ("API_GATEWAY_HOST", "127.0.0.1".into()),
            ("TOKIO_WORKER_THREADS", "1".into()),
        ],
        core: 0,
        port,
    }
}

/// The pass-through proxy in front of `upstream`, one worker thread.
pub fn passthrough_spec<'a>(upstream: &str, port: u16, name: &'a str) -> Spec<'a> {
    Spec {
        name,
        program: "passthrough",
        args: vec![
            "--port".into(),
            port.to_string(),
            "--upstream".into(),
            upstream.into(),
        ],
        envs: vec![("TOKIO_WORKER_THREADS", "1".into())],
        core: 0,
        port,
    }
}
