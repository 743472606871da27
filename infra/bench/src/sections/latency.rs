//! Added latency: p50 and p99 of non-streaming calls through the pass-through and the gateway,
//! minus direct-to-simulator, at 1 and 32 connections. Rounds interleave the three paths; the
//! added figures are medians of the per-round differences.

use super::verdict;
use crate::stats::{median, ratio, us};
use crate::{Bench, Res, wrk};

pub fn run(b: &Bench) -> Res<String> {
    let (rounds, secs) = if b.quick { (3, 2) } else { (7, 4) };
    let mut out = format!(
        "wrk, {rounds} interleaved rounds of {secs} s per path; the simulator answers at once. \
         Added = path − direct, median over rounds.\n\n\
         | Connections | Path | p50 | p99 | Added p50 | Added p99 | Errors |\n\
         |---|---|---|---|---|---|---|\n"
    );
    let mut notes = String::new();
    for conns in [1, 32] {
        let targets = b.targets();
        let mut runs: Vec<Vec<wrk::Run>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for ((_, url), runs) in targets.iter().zip(runs.iter_mut()) {
                runs.push(wrk::run(&b.lua, url, conns, secs)?);
            }
        }
        let direct = runs.first().cloned().unwrap_or_default();
        let mut added_p99 = Vec::new();
        for ((name, _), runs) in targets.iter().zip(&runs) {
            let p50: Vec<f64> = runs.iter().map(|r| r.p50).collect();
            let p99: Vec<f64> = runs.iter().map(|r| r.p99).collect();
            let a50: Vec<f64> = runs
                .iter()
                .zip(&direct)
                .map(|(r, d)| r.p50 - d.p50)
                .collect();
            let a99: Vec<f64> = runs
                .iter()
                .zip(&direct)
                .map(|(r, d)| r.p99 - d.p99)
                .collect();
            let errors: u64 = runs.iter().map(|r| r.errors).sum();
            let (add50, add99) = if *name == "direct" {
                ("–".to_string(), "–".to_string())
            } else {
                added_p99.push(median(&a99));
                (us(median(&a50), true), us(median(&a99), true))
            };
            out += &format!(
                "| {conns} | {name} | {} | {} | {add50} | {add99} | {errors} |\n",
                us(median(&p50), false),
                us(median(&p99), false)
            );
        }
        if let [pt, gw] = added_p99[..] {
            let target = if conns == 1 {
                format!(
                    " (target ≤ 1.25×: {})",
                    verdict(pt > 0.0 && gw <= 1.25 * pt)
                )
            } else {
                String::new()
            };
            notes += &format!(
                "- {conns} connection(s): gateway's added p99 = {} the pass-through's{target}.\n",
                ratio(gw, pt)
            );
        }
    }
    notes += &self_report(b);
    Ok(format!("{out}\n{notes}"))
}

/// What the gateway says it spent per request (outside the backend call), from its own
/// `gatewayOverhead` metric, beside the wire-to-wire figures above. The difference between
/// them is what the extra hop costs outside the gateway's code (kernel, sockets, scheduling).
fn self_report(b: &Bench) -> String {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/dev/apirouter/metrics",
        b.gateway.port
    );
    let fetched = b.rt.block_on(async {
        let r = reqwest::get(&url).await?;
        r.json::<serde_json::Value>().await
    });
    match fetched {
        Ok(m) => {
            let o = &m["gatewayOverhead"];
            let f = |k: &str| o[k].as_f64().map_or("–".into(), |v| us(v, false));
            format!(
                "- The gateway's own overhead metric over these rounds ({} requests): p50 {}, p99 {}, mean {} \
                 — time inside the gateway outside the backend call; the added wire-to-wire latency \
                 above also holds the second hop's sockets and scheduling.\n",
                o["requests"].as_u64().unwrap_or(0),
                f("p50Us"),
                f("p99Us"),
                f("avgUs"),
            )
        }
        Err(e) => format!("- The gateway's overhead metric could not be read: {e}\n"),
    }
}
