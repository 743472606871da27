//! Instructions per request: the pass-through and the gateway (1 × 1 and 1,000 × 16) each run
//! under `valgrind --tool=callgrind` while one connection sends requests back to back. Callgrind
//! counts the instructions the process executes in user space, so the figure is the same from run
//! to run and from machine to machine of one architecture, whatever else the machine is doing:
//! it settles what the noisy rates of the throughput and growth sections cannot. The kernel's
//! share (socket reads and writes, the same for both proxies) is not counted. What the gateway's
//! timers do meanwhile (metrics flushes, state sync) is counted, spread over the requests of the
//! measured seconds; under callgrind those are far fewer than a real second carries, so the
//! figure is an upper bound on the per-request cost.

use super::verdict;
use crate::procs::{self, Proc, Spec};
use crate::stats::ratio;
use crate::{APP_PATH, Bench, Res, configs, wrk};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One measured process: its name in the table, how to start it, the path to call.
struct Subject<'a> {
    label: &'static str,
    spec: Spec<'a>,
    path: &'static str,
}

pub fn run(b: &Bench) -> Res<String> {
    let secs = if b.quick { 3 } else { 6 };
    let small = b
        .env
        .write("instr-1x1.json", &configs::config(b.sim.port, 1, 1))?;
    let large = b
        .env
        .write("instr-1000x16.json", &configs::config(b.sim.port, 1000, 16))?;
    let subjects = [
        Subject {
            label: "pass-through",
            spec: procs::passthrough_spec(&b.sim_url(), 18020, "passthrough-callgrind"),
            path: "/",
        },
        Subject {
            label: "gateway, 1 × 1",
            spec: procs::gateway_spec(&small, 18021, "gateway-callgrind-1x1"),
            path: APP_PATH,
        },
        Subject {
            label: "gateway, 1,000 × 16",
            spec: procs::gateway_spec(&large, 18022, "gateway-callgrind-1000x16"),
            path: APP_PATH,
        },
    ];
    let mut rows = Vec::new();
    for subject in &subjects {
        rows.push((subject.label, count(b, subject, secs)?));
    }
    let mut out = format!(
        "`valgrind --tool=callgrind`, one connection (wrk -c1) for {secs} s after a warm-up; \
         counters zeroed before and dumped after the measured run. User-space instructions \
         only.\n\n| Path | Requests | Instructions per request | vs pass-through |\n|---|---|---|---|\n"
    );
    let base = rows.first().map_or(f64::NAN, |(_, (_, per))| *per);
    for (label, (requests, per)) in &rows {
        out += &format!(
            "| {label} | {requests} | {per:.0} | {} |\n",
            ratio(*per, base)
        );
    }
    let gw = rows.get(1).map_or(f64::NAN, |(_, (_, per))| *per);
    let big = rows.get(2).map_or(f64::NAN, |(_, (_, per))| *per);
    let growth = (big / gw - 1.0) * 100.0;
    out += &format!(
        "\n- The gateway executes {} the pass-through's instructions per request: with nothing \
         else limiting, one core relays {} of the pass-through's rate through it (target ≥ 0.8×: \
         {}).\n- 1,000 × 16 against 1 × 1: {growth:+.1} % instructions per request (target ≤ 5 %: \
         {}).\n",
        ratio(gw, base),
        ratio(base, gw),
        verdict(base / gw >= 0.8),
        verdict(growth <= 5.0),
    );
    Ok(out)
}

/// (requests, instructions per request) of one subject.
fn count(b: &Bench, subject: &Subject<'_>, secs: u32) -> Res<(u64, f64)> {
    let out_file = b
        .env
        .work_dir
        .join(format!("{}.callgrind", subject.spec.name));
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let proc = b
        .env
        .start_under(&subject.spec, &wrapper, Duration::from_secs(60))?;
    let url = format!("http://127.0.0.1:{}{}", proc.port, subject.path);
    let warm = wrk::run(&b.lua, &url, 1, 2)?;
    if !warm.clean() {
        return Err(format!(
            "{} answered with errors under callgrind: {warm:?}",
            proc.name
        )
        .into());
    }
    control(&proc, "-z")?;
    let run = wrk::run(&b.lua, &url, 1, secs)?;
    control(&proc, "-d")?;
    if !run.clean() {
        return Err(format!(
            "{} answered with errors under callgrind: {run:?}",
            proc.name
        )
        .into());
    }
    let total = read_total(&dump_of(&out_file))?;
    drop(proc);
    Ok((run.requests, total as f64 / run.requests.max(1) as f64))
}

/// `callgrind_control OPTION PID`: `-z` zeroes the counters, `-d` writes them out.
fn control(proc: &Proc, option: &str) -> Res<()> {
    let out = Command::new("callgrind_control")
        .arg(option)
        .arg(proc.pid().to_string())
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("callgrind_control {option} failed for {}: {err}", proc.name).into());
    }
    Ok(())
}

/// The first dump callgrind writes beside `out_file` on request.
fn dump_of(out_file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.1", out_file.display()))
}

/// The `summary:` line of a callgrind dump (written a moment after the request to dump).
fn read_total(dump: &Path) -> Res<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(dump)
            && let Some(total) = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:"))
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(total);
        }
        if Instant::now() > deadline {
            return Err(format!("no callgrind dump at {}", dump.display()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
