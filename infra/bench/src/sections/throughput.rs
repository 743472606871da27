//! Throughput: wrk is closed-loop, so the rate is swept by connection count; the result is the
//! highest rate whose p99 stays under 10 ms with no errors. The direct path's result is the
//! simulator's ceiling (simulator and wrk sharing core 1). Beside the rate, the CPU time each
//! proxy spends per request over the whole sweep: on a saturated core the rate ratio is the
//! inverse of this cost ratio, and the cost is far less sensitive to scheduling noise.

use super::verdict;
use crate::stats::{median, ratio, us};
use crate::{Bench, Res, wrk};

const P99_LIMIT_US: f64 = 10_000.0;

/// Median rate, median p99 and total errors of one path at one level.
#[derive(Clone, Copy, Default)]
struct Level {
    conns: u32,
    rps: f64,
    p99: f64,
    errors: u64,
}

impl Level {
    fn passes(&self) -> bool {
        self.errors == 0 && self.p99 < P99_LIMIT_US && self.rps > 0.0
    }
}

pub fn run(b: &Bench) -> Res<String> {
    let (levels, rounds, secs): (&[u32], usize, u32) = if b.quick {
        (&[1, 8, 32, 64], 1, 2)
    } else {
        (&[1, 4, 8, 16, 32, 64, 128], 2, 4)
    };
    let targets = b.targets();
    let procs = [&b.sim, &b.passthrough, &b.gateway];
    let mut table: Vec<Vec<Level>> = vec![Vec::new(); targets.len()];
    // (CPU ns, requests) per path over the whole sweep.
    let mut cost = [(0u64, 0u64); 3];
    for &conns in levels {
        let mut runs: Vec<Vec<wrk::Run>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (((_, url), runs), (proc, cost)) in targets
                .iter()
                .zip(runs.iter_mut())
                .zip(procs.iter().zip(cost.iter_mut()))
            {
                let before = proc.cpu_ns()?;
                let run = wrk::run(&b.lua, url, conns, secs)?;
                cost.0 += proc.cpu_ns()?.saturating_sub(before);
                cost.1 += run.requests;
                runs.push(run);
            }
        }
        for (runs, column) in runs.iter().zip(table.iter_mut()) {
            column.push(Level {
                conns,
                rps: median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>()),
                p99: median(&runs.iter().map(|r| r.p99).collect::<Vec<_>>()),
                errors: runs.iter().map(|r| r.errors).sum(),
            });
        }
    }
    let mut out = format!(
        "wrk with 1 to {} connections, {rounds} round(s) of {secs} s per level and path \
         (interleaved); gateway with routing and the RPM limiter on. Rate in requests/s, \
         p99 in brackets.\n\n| Connections |",
        levels.last().copied().unwrap_or(0)
    );
    for (name, _) in &targets {
        out += &format!(" {name} |");
    }
    out += "\n|---|---|---|---|\n";
    for (i, conns) in levels.iter().enumerate() {
        out += &format!("| {conns} |");
        for column in &table {
            if let Some(l) = column.get(i) {
                let err = if l.errors > 0 {
                    format!(", {} errors", l.errors)
                } else {
                    String::new()
                };
                out += &format!(" {:.0} ({}{err}) |", l.rps, us(l.p99, false));
            }
        }
        out += "\n";
    }
    let best: Vec<Level> = table
        .iter()
        .map(|c| {
            c.iter()
                .filter(|l| l.passes())
                .fold(Level::default(), |a, l| if l.rps > a.rps { *l } else { a })
        })
        .collect();
    out += "\n| Path | Highest rate with p99 < 10 ms, no errors | At connections | Ratio to pass-through |\n|---|---|---|---|\n";
    let pt = best.get(1).map_or(0.0, |l| l.rps);
    for ((name, _), l) in targets.iter().zip(&best) {
        out += &format!(
            "| {name} | {:.0} req/s | {} | {} |\n",
            l.rps,
            l.conns,
            ratio(l.rps, pt)
        );
    }
    let per_request = |(ns, requests): (u64, u64)| ns as f64 / 1000.0 / requests.max(1) as f64;
    let (pt_cpu, gw_cpu) = (per_request(cost[1]), per_request(cost[2]));
    out += &format!(
        "\nCPU time per request over the sweep (all threads, from `/proc/PID/task/*/schedstat`): \
         pass-through {pt_cpu:.1} µs, gateway {gw_cpu:.1} µs — the gateway costs {} the \
         pass-through's, so on a saturated core it can relay {} of its rate.\n",
        ratio(gw_cpu, pt_cpu),
        ratio(pt_cpu, gw_cpu),
    );
    let gw = best.get(2).map_or(0.0, |l| l.rps);
    let sim = best.first().map_or(0.0, |l| l.rps);
    out += &format!(
        "\n- Gateway throughput = {} the pass-through's (target ≥ 0.8×: {}).\n\
         - Simulator ceiling (direct, wrk and simulator both on core 1): {sim:.0} req/s, \
         {} the gateway's best rate{}.\n",
        ratio(gw, pt),
        verdict(pt > 0.0 && gw >= 0.8 * pt),
        ratio(sim, gw),
        if sim > gw * 1.5 {
            " — not the bottleneck"
        } else {
            " — **too close: the backend may limit the result**"
        }
    );
    Ok(out)
}
