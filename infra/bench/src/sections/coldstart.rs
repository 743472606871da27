//! Cold start: from spawning the process to its port accepting, to its health check answering
//! (ready), and to the first proxied 200 (which includes the first connection to the backend).
//! Polled from core 1 every 0.2 ms; the spawn goes through `taskset`, whose exec is included.

use super::verdict;
use crate::procs::{self, Proc, Spec};
use crate::stats::median;
use crate::{APP_PATH, Bench, CHAT_BODY, Res, configs, rawhttp};
use std::time::{Duration, Instant};

const PORT: u16 = 18004;
const HEALTH: &str = "/api/v1/dev/apirouter/healthz";

/// Milliseconds from spawn to: port accepts, ready (health 200, or the port for a process
/// without a health check), first proxied 200.
#[derive(Clone, Copy)]
pub struct Times {
    pub port: f64,
    pub ready: f64,
    pub first: f64,
}

/// Spawn `spec` and time its start; the process is returned running.
pub fn time_start(
    b: &Bench,
    spec: &Spec<'_>,
    health: Option<&str>,
    path: &str,
) -> Res<(Times, Proc)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let poll = |what: &dyn Fn() -> bool| -> Res<()> {
        while !what() {
            if Instant::now() > deadline {
                return Err(format!("{} did not start within 20 s", spec.name).into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    };
    let start = Instant::now();
    let proc = b.env.spawn(spec)?;
    let ms = || start.elapsed().as_secs_f64() * 1e3;
    poll(&|| procs::accepts(spec.port))?;
    let port = ms();
    if let Some(h) = health {
        poll(&|| matches!(rawhttp::request(spec.port, "GET", h, None), Ok(200)))?;
    }
    let ready = ms();
    poll(&|| {
        matches!(
            rawhttp::request(spec.port, "POST", path, Some(CHAT_BODY)),
            Ok(200)
        )
    })?;
    Ok((
        Times {
            port,
            ready,
            first: ms(),
        },
        proc,
    ))
}

pub fn run(b: &Bench) -> Res<String> {
    let runs = if b.quick { 5 } else { 15 };
    let config = b
        .env
        .write("coldstart.json", &configs::config(b.sim.port, 1, 1))?;
    let sim_url = b.sim_url();
    let mut out = format!(
        "Median of {runs} starts per path (1 application, 1 endpoint).\n\n\
         | Path | Port accepts | Ready (healthz 200) | First proxied 200 |\n|---|---|---|---|\n"
    );
    let mut gw_ready = f64::NAN;
    for name in ["gateway", "pass-through"] {
        let mut times = Vec::new();
        for _ in 0..runs {
            let (t, proc) = if name == "gateway" {
                time_start(
                    b,
                    &procs::gateway_spec(&config, PORT, "gateway-cold"),
                    Some(HEALTH),
                    APP_PATH,
                )?
            } else {
                time_start(
                    b,
                    &procs::passthrough_spec(&sim_url, PORT, "passthrough-cold"),
                    None,
                    "/",
                )?
            };
            drop(proc);
            times.push(t);
            while procs::accepts(PORT) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let med = |f: fn(&Times) -> f64| median(&times.iter().map(f).collect::<Vec<_>>());
        out += &format!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            med(|t| t.port),
            med(|t| t.ready),
            med(|t| t.first)
        );
        if name == "gateway" {
            gw_ready = med(|t| t.ready);
        }
    }
    out += &format!(
        "\n- Gateway ready {gw_ready:.1} ms after start (target ≤ 20 ms: {}). The pass-through has \
         no health check: its ready column is its port accepting.\n",
        verdict(gw_ready <= 20.0)
    );
    Ok(out)
}
