//! The report's sections, run in order. A section that fails leaves its error in the report and
//! the run goes on, so one broken measurement never hides the others.

mod coldstart;
mod growth;
mod latency;
mod memory;
mod streams;
mod throughput;

use crate::{Bench, Res};

/// A section: measures, and returns its Markdown.
type Section = fn(&Bench) -> Res<String>;

/// Run every section and return the Markdown of all of them.
pub fn run_all(b: &Bench) -> String {
    let sections: [(&str, Section); 6] = [
        ("Added latency", latency::run),
        ("Throughput", throughput::run),
        ("Streams", streams::run),
        ("Memory", memory::run),
        ("Cold start", coldstart::run),
        ("Growth", growth::run),
    ];
    let mut out = String::new();
    for (title, section) in sections {
        eprintln!("aigw-bench: {title}…");
        out += &format!("## {title}\n\n");
        match section(b) {
            Ok(text) => out += &text,
            Err(e) => out += &format!("_This section failed: {e}_\n"),
        }
        out += "\n";
    }
    out
}

/// A check against a target, for the report: `met` or `missed`.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}
