//! Growth: does the configuration's size cost the hot path? Six gateways (1, 100 and 1,000
//! applications × 1 and 16 endpoints, all on core 0, idle but one at a time) are loaded in
//! interleaved rounds at 32 connections against the last application of each configuration.

use super::coldstart::time_start;
use super::verdict;
use crate::stats::{median, us};
use crate::{APP_PATH, Bench, Res, configs, procs, wrk};

const SHAPES: [(usize, usize); 6] = [(1, 1), (1, 16), (100, 1), (100, 16), (1000, 1), (1000, 16)];
const CONNS: u32 = 32;

pub fn run(b: &Bench) -> Res<String> {
    let (rounds, secs) = if b.quick { (2, 2) } else { (5, 4) };
    let mut gateways = Vec::new();
    let mut ready = Vec::new();
    for (i, (apps, eps)) in SHAPES.iter().enumerate() {
        let name = format!("gateway-{apps}x{eps}");
        let config = b.env.write(
            &format!("{name}.json"),
            &configs::config(b.sim.port, *apps, *eps),
        )?;
        let port = 18010 + i as u16;
        let (times, proc) = time_start(
            b,
            &procs::gateway_spec(&config, port, &name),
            None,
            APP_PATH,
        )?;
        ready.push(times.port);
        gateways.push(proc);
    }
    let mut runs: Vec<Vec<wrk::Run>> = vec![Vec::new(); SHAPES.len()];
    for _ in 0..rounds {
        for (proc, column) in gateways.iter().zip(runs.iter_mut()) {
            let url = format!("http://127.0.0.1:{}{APP_PATH}", proc.port);
            column.push(wrk::run(&b.lua, &url, CONNS, secs)?);
        }
    }
    let mut out = format!(
        "wrk at {CONNS} connections, {rounds} interleaved rounds of {secs} s per configuration; \
         calls go to the last application of each.\n\n\
         | Applications × endpoints | Listening after start | Rate | p50 | p99 | Rate vs 1×1 | Errors |\n\
         |---|---|---|---|---|---|---|\n"
    );
    let rate = |rs: &[wrk::Run]| median(&rs.iter().map(|r| r.rps).collect::<Vec<_>>());
    let base = runs.first().map_or(f64::NAN, |rs| rate(rs));
    for (((apps, eps), rs), ready) in SHAPES.iter().zip(&runs).zip(&ready) {
        let r = rate(rs);
        out += &format!(
            "| {apps} × {eps} | {ready:.1} ms | {r:.0} req/s | {} | {} | {:+.1} % | {} |\n",
            us(median(&rs.iter().map(|r| r.p50).collect::<Vec<_>>()), false),
            us(median(&rs.iter().map(|r| r.p99).collect::<Vec<_>>()), false),
            (r / base - 1.0) * 100.0,
            rs.iter().map(|r| r.errors).sum::<u64>()
        );
    }
    let last = runs.last().map_or(f64::NAN, |rs| rate(rs));
    let loss = (1.0 - last / base) * 100.0;
    out += &format!(
        "\n- Throughput lost from 1 × 1 to 1,000 × 16: {loss:.1} % (target ≤ 5 %: {}).\n",
        verdict(loss <= 5.0)
    );
    Ok(out)
}
