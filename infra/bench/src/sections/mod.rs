//! The report's sections, run in order. A section that fails leaves its error in the report and
//! the run goes on, so one broken measurement never hides the others.

mod coldstart;
mod growth;
mod instructions;
mod latency;
mod memory;
mod streams;
mod throughput;

use crate::{Bench, Res};

/// A section: measures, and returns its Markdown.
type Section = fn(&Bench) -> Res<String>;

/// Every section: its key (for `--only`), its title and its function, in report order.
const SECTIONS: [(&str, &str, Section); 7] = [
    ("latency", "Added latency", latency::run),
    ("throughput", "Throughput", throughput::run),
    (
        "instructions",
        "Instructions per request",
        instructions::run,
    ),
    ("streams", "Streams", streams::run),
    ("memory", "Memory", memory::run),
    ("coldstart", "Cold start", coldstart::run),
    ("growth", "Growth", growth::run),
];

/// The section keys `--only` accepts.
pub fn keys() -> Vec<&'static str> {
    SECTIONS.iter().map(|(key, _, _)| *key).collect()
}

/// Run the sections whose keys are in `only` (all of them when it is empty) and return their
/// Markdown.
pub fn run(b: &Bench, only: &[String]) -> String {
    let mut out = String::new();
    let chosen = SECTIONS
        .iter()
        .filter(|(key, _, _)| only.is_empty() || only.iter().any(|o| o == key));
    for &(_, title, section) in chosen {
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
