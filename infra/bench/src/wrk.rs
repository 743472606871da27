//! Load from `wrk` (pinned to the load core) and the parsing of its `--latency` report.

use std::path::Path;
use std::process::Command;

use crate::Res;

/// One wrk run's outcome. Latencies in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub requests: u64,
    pub errors: u64,
}

impl Run {
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.requests > 0
    }
}

/// `wrk -t1 -cCONNS -dSECS --latency -s post.lua URL`, pinned to core 1.
pub fn run(script: &Path, url: &str, conns: u32, secs: u32) -> Res<Run> {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "--latency", "--timeout", "2s"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("wrk failed on {url}: {err}{text}").into());
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's report:\n{text}").into())
}

/// Read requests/sec, the 50 % and 99 % latencies, the request count and all errors.
pub fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50 = micros(v)?,
            ["99%", v] => run.p99 = micros(v)?,
            ["Requests/sec:", v] => run.rps = v.parse().ok()?,
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (run.requests > 0).then_some(run)
}

/// `87.00us`, `1.20ms`, `2.00s` → microseconds.
fn micros(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e6)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_report() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n\
            Latency Distribution\n     50%   52.00us\n     75%   60.00us\n     90%   70.00us\n\
            \x20    99%    1.20ms\n  40000 requests in 2.00s, 10.00MB read\n\
            \x20 Socket errors: connect 0, read 1, write 0, timeout 2\n\
            \x20 Non-2xx or 3xx responses: 3\nRequests/sec:  20000.50\n";
        let run = parse(text).unwrap_or_default();
        assert_eq!(run.requests, 40000);
        assert_eq!(run.p50, 52.0);
        assert_eq!(run.p99, 1200.0);
        assert_eq!(run.errors, 6);
        assert_eq!(run.rps, 20000.5);
    }
}
