//! `aigw-bench run [--quick] [--only SECTION,...]`: the benchmark harness behind
//! `infra/bench/run.sh`. It starts the simulator (core 1), the gateway and the pass-through
//! proxy (core 0), runs every section (or those `--only` names) with interleaved rounds against
//! all three paths, and writes `infra/bench/RESULTS.md`.

mod configs;
mod hold;
mod procs;
mod rawhttp;
mod report;
mod sections;
mod sse;
mod stats;
mod wrk;

use std::error::Error;
use std::path::PathBuf;

use procs::{Env, Proc, Spec};

pub type Res<T> = Result<T, Box<dyn Error>>;

pub const SIM_PORT: u16 = 18100;
pub const GATEWAY_PORT: u16 = 18000;
pub const PASSTHROUGH_PORT: u16 = 18001;
pub const APP_PATH: &str = "/api/v1/dev/apirouter/lb/bench";
pub const CHAT_BODY: &str = r#"{"messages":[{"role":"user","content":"Hello"}]}"#;

/// Everything a section needs: where things are, the running processes, the three paths.
pub struct Bench {
    pub env: Env,
    pub quick: bool,
    pub lua: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub sim: Proc,
    pub gateway: Proc,
    pub passthrough: Proc,
}

impl Bench {
    /// The simulator's Azure chat completions URL: the direct path and every endpoint's `uri`.
    pub fn sim_url(&self) -> String {
        configs::sim_url(self.sim.port)
    }

    /// (name, url) of the direct, pass-through and gateway paths, in round order.
    pub fn targets(&self) -> [(&'static str, String); 3] {
        [
            ("direct", self.sim_url()),
            (
                "pass-through",
                format!("http://127.0.0.1:{}/", self.passthrough.port),
            ),
            (
                "gateway",
                format!("http://127.0.0.1:{}{APP_PATH}", self.gateway.port),
            ),
        ]
    }
}

const USAGE: &str =
    "usage: aigw-bench run [--quick] [--only SECTION[,SECTION...]] [--out FILE] [--lua FILE]";

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("run") {
        return Err(USAGE.into());
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = match args.iter().position(|a| a == "--only") {
        None => Vec::new(),
        Some(i) => {
            let list = args.get(i + 1).ok_or(USAGE)?;
            let only: Vec<String> = list.split(',').map(str::to_owned).collect();
            if let Some(bad) = only
                .iter()
                .find(|o| !sections::keys().contains(&o.as_str()))
            {
                let keys = sections::keys().join(", ");
                return Err(format!("unknown section {bad:?} (sections: {keys})").into());
            }
            only
        }
    };
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A partial run never overwrites the published table unless asked to.
    let out = flag("--out").unwrap_or_else(|| match only.is_empty() {
        true => here.join("RESULTS.md"),
        false => std::env::temp_dir().join("aigw-bench-partial.md"),
    });
    let lua = flag("--lua").unwrap_or_else(|| here.join("post.lua"));
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .ok_or("no directory for the binaries")?;
    let work_dir = std::env::temp_dir().join(format!("aigw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let env = Env {
        bin_dir,
        work_dir,
        pid_file: std::env::var_os("AIGW_BENCH_PIDFILE").map(PathBuf::from),
    };
    let load_before = report::load_average();
    let bench = setup(env, quick, lua)?;
    let body = sections::run(&bench, &only);
    let head = report::header(quick, load_before, report::load_average());
    std::fs::write(&out, format!("{head}{body}"))?;
    if !only.is_empty() {
        println!("{body}");
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn setup(env: Env, quick: bool, lua: PathBuf) -> Res<Bench> {
    for port in [SIM_PORT, GATEWAY_PORT, PASSTHROUGH_PORT] {
        if procs::accepts(port) {
            return Err(format!("port {port} is already in use on 127.0.0.1").into());
        }
    }
    let sim = env.start(&Spec {
        name: "simulator",
        program: "simulator",
        args: vec![
            "--port".into(),
            SIM_PORT.to_string(),
            "--name".into(),
            "sim".into(),
        ],
        envs: vec![
            ("SIM_WORKERS", "1".into()),
            ("SIM_HOST", "127.0.0.1".into()),
        ],
        core: 1,
        port: SIM_PORT,
    })?;
    let config = env.write("bench.json", &configs::config(SIM_PORT, 1, 1))?;
    let gateway = env.start(&procs::gateway_spec(&config, GATEWAY_PORT, "gateway"))?;
    let upstream = configs::sim_url(SIM_PORT);
    let passthrough = env.start(&procs::passthrough_spec(
        &upstream,
        PASSTHROUGH_PORT,
        "passthrough",
    ))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bench = Bench {
        env,
        quick,
        lua,
        rt,
        sim,
        gateway,
        passthrough,
    };
    for (name, url) in bench.targets() {
        let warm = wrk::run(&bench.lua, &url, 8, 1)?;
        if !warm.clean() {
            return Err(format!("{name} answers with errors while warming up: {warm:?}").into());
        }
    }
    Ok(bench)
}
