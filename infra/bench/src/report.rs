//! The head of RESULTS.md: the machine's facts, the commit and the date, so every table can be
//! traced to where and what it measured.

use std::process::Command;

fn shell(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average, to flag runs on a busy machine.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `abc1234`, or `abc1234-dirty` when the working tree has changes.
pub fn commit() -> String {
    let hash = shell("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !shell("git", &["status", "--porcelain"]).is_empty();
    if dirty { format!("{hash}-dirty") } else { hash }
}

pub fn header(quick: bool, load_before: f64, load_after: f64) -> String {
    let mem_kib: f64 = proc_field("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let mut h = String::from("# aigw benchmark results\n\n");
    h += "Produced by `infra/bench/run.sh`; see [README.md](README.md) for what each section \
          measures and how to read it.\n\n";
    h += "| Fact | Value |\n|---|---|\n";
    h += &format!(
        "| Date (UTC) | {} |\n",
        shell("date", &["-u", "+%Y-%m-%d %H:%M"])
    );
    h += &format!("| Commit | `{}` |\n", commit());
    h += &format!(
        "| Mode | {} |\n",
        if quick {
            "quick (short rounds)"
        } else {
            "full"
        }
    );
    h += &format!("| CPU | {} |\n", proc_field("/proc/cpuinfo", "model name"));
    h += &format!("| Cores (nproc) | {} |\n", shell("nproc", &["--all"]));
    h += &format!("| Memory | {:.1} GiB |\n", mem_kib / 1024.0 / 1024.0);
    h += &format!("| Kernel | {} |\n", shell("uname", &["-sr"]));
    h += &format!("| Load average (1 min) before / after | {load_before:.2} / {load_after:.2} |\n");
    h += "| Placement | gateway and pass-through on core 0 (`taskset -c 0`, 1 tokio worker); \
          simulator (1 worker), wrk and the measuring client on core 1 |\n\n";
    if quick || load_before > 0.5 {
        h += "> **Preliminary numbers.** ";
        if quick {
            h += "Quick mode uses rounds of a couple of seconds. ";
        }
        if load_before > 0.5 {
            h += "Other work was running on the machine when the run started (see the load \
                  average), so the numbers are noisy. ";
        }
        h += "Re-run `infra/bench/run.sh` on an idle machine for figures to quote.\n\n";
    }
    h
}
