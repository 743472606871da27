//! Memory: the resident set of a fresh gateway (and a fresh pass-through) idle after one call,
//! then while 1,000 and 5,000 streams are held open through it. Per stream = (RSS with N − idle)
//! / N. The simulator is told to pause 20 s between events so the streams stay open.

use super::verdict;
use crate::procs::{self, Proc};
use crate::{APP_PATH, Bench, CHAT_BODY, Res, configs, hold, rawhttp};
use std::time::Duration;

const HOLD_BEHAVIOUR: &str = r#"{"chunks":100,"chunk_interval_ms":20000}"#;
const COUNTS: [u64; 2] = [1_000, 5_000];

pub fn run(b: &Bench) -> Res<String> {
    let config = b
        .env
        .write("memory.json", &configs::config(b.sim.port, 1, 1))?;
    let gateway = b
        .env
        .start(&procs::gateway_spec(&config, 18002, "gateway-memory"))?;
    let passthrough = b.env.start(&procs::passthrough_spec(
        &b.sim_url(),
        18003,
        "passthrough-memory",
    ))?;
    let mut out = format!(
        "Fresh processes, VmRSS from /proc/PID/status (KiB = 1024 bytes). Streams held with \
         simulator behaviour `{HOLD_BEHAVIOUR}`; each is counted once its first event arrived.\n\n\
         | Path | Idle RSS | RSS at 1,000 streams | Per stream | RSS at 5,000 streams | Per stream |\n\
         |---|---|---|---|---|---|\n"
    );
    let mut gw_figures = (0.0, 0.0);
    for (name, proc, path) in [
        ("gateway", &gateway, APP_PATH),
        ("pass-through", &passthrough, "/"),
    ] {
        let (idle, rows) = measure(b, proc, path)?;
        out += &format!("| {name} | {:.1} MiB |", idle as f64 / 1024.0);
        let mut worst: f64 = 0.0;
        for (n, held, rss) in rows {
            let per = (rss.saturating_sub(idle)) as f64 / held.max(1) as f64;
            worst = worst.max(per);
            let partial = if held < n {
                format!(" (only {held} opened)")
            } else {
                String::new()
            };
            out += &format!(" {:.1} MiB{partial} | {per:.1} KiB |", rss as f64 / 1024.0);
        }
        out += "\n";
        if name == "gateway" {
            gw_figures = (idle as f64 / 1024.0, worst);
        }
    }
    let (idle_mib, per_kib) = gw_figures;
    out += &format!(
        "\n- Gateway idle {idle_mib:.1} MiB (target ≤ 20 MB: {}); worst per open stream \
         {per_kib:.1} KiB (target ≤ 30 KB: {}).\n",
        verdict(idle_mib * 1.048_576 <= 20.0),
        verdict(per_kib * 1.024 <= 30.0)
    );
    Ok(out)
}

/// (N streams asked for, streams held, RSS in KiB).
type Row = (u64, u64, u64);

/// Idle RSS in KiB, then a row for each count.
fn measure(b: &Bench, proc: &Proc, path: &str) -> Res<(u64, Vec<Row>)> {
    rawhttp::set_behaviour(b.sim.port, "{}")?;
    let status = rawhttp::request(proc.port, "POST", path, Some(CHAT_BODY))?;
    if status != 200 {
        return Err(format!("{} answered {status} to a warm-up call", proc.name).into());
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = proc.rss_kib()?;
    rawhttp::set_behaviour(b.sim.port, HOLD_BEHAVIOUR)?;
    let url = format!("http://127.0.0.1:{}{path}", proc.port);
    let mut rows = Vec::new();
    for n in COUNTS {
        let (rss, held) = b.rt.block_on(hold::hold(&url, n, || proc.rss_kib()))?;
        rows.push((n, held, rss?));
        std::thread::sleep(Duration::from_secs(1));
    }
    rawhttp::set_behaviour(b.sim.port, "{}")?;
    Ok((idle, rows))
}
