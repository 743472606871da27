//! Growth: does the configuration's size cost the hot path? Six gateways (1, 100 and 1,000
//! applications × 1 and 16 endpoints, all on core 0, idle but one at a time) are loaded in
//! interleaved rounds at 32 connections against the last application of each configuration.
//! Beside the rate, each gateway's CPU time per request: the rate moves with the machine's noise
//! from round to round, the cost per request much less.

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
    // (CPU ns, requests) per configuration.
    let mut cost = vec![(0u64, 0u64); SHAPES.len()];
    for _ in 0..rounds {
        for ((proc, column), cost) in gateways.iter().zip(runs.iter_mut()).zip(cost.iter_mut()) {
            let url = format!("http://127.0.0.1:{}{APP_PATH}", proc.port);
            let before = proc.cpu_ns()?;
            let run = wrk::run(&b.lua, &url, CONNS, secs)?;
            cost.0 += proc.cpu_ns()?.saturating_sub(before);
            cost.1 += run.requests;
            column.push(run);
        }
    }
    let cpu_us: Vec<f64> = cost
        .iter()
        .map(|(ns, n)| *ns as f64 / 1000.0 / (*n).max(1) as f64)
        .collect();
    let mut out = format!(
        "wrk at {CONNS} connections, {rounds} interleaved rounds of {secs} s per configuration; \
         calls go to the last application of each.\n\n\
         | Applications × endpoints | Listening after start | Rate | p50 | p99 | Rate vs 1×1 | CPU per request | CPU vs 1×1 | Errors |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    let rate = |rs: &[wrk::Run]| median(&rs.iter().map(|r| r.rps).collect::<Vec<_>>());
    let base = runs.first().map_or(f64::NAN, |rs| rate(rs));
    let base_cpu = cpu_us.first().copied().unwrap_or(f64::NAN);
    for ((((apps, eps), rs), ready), cpu) in SHAPES.iter().zip(&runs).zip(&ready).zip(&cpu_us) {
        let r = rate(rs);
        out += &format!(
            "| {apps} × {eps} | {ready:.1} ms | {r:.0} req/s | {} | {} | {:+.1} % | {cpu:.1} µs | \
             {:+.1} % | {} |\n",
            us(median(&rs.iter().map(|r| r.p50).collect::<Vec<_>>()), false),
            us(median(&rs.iter().map(|r| r.p99).collect::<Vec<_>>()), false),
            (r / base - 1.0) * 100.0,
            (cpu / base_cpu - 1.0) * 100.0,
            rs.iter().map(|r| r.errors).sum::<u64>()
        );
    }
    let last = runs.last().map_or(f64::NAN, |rs| rate(rs));
    let loss = (1.0 - last / base) * 100.0;
    let last_cpu = cpu_us.last().copied().unwrap_or(f64::NAN);
    let cpu_loss = (1.0 - base_cpu / last_cpu) * 100.0;
    out += &format!(
        "\n- Throughput lost from 1 × 1 to 1,000 × 16: {loss:.1} % by rate (target ≤ 5 %: {}); \
         {cpu_loss:.1} % by CPU time per request (the rate a saturated core could sustain).\n",
        verdict(loss <= 5.0)
    );
    Ok(out)
}
