//! Gateway configuration files for the runs: one application with one endpoint for most
//! sections, and N applications × M endpoints for the growth section. Every endpoint points at
//! the simulator with an RPM budget so large the limiter runs on every call but never trips.

/// The simulator's Azure chat completions URL on 127.0.0.1:`port`.
pub fn sim_url(port: u16) -> String {
    format!(
        "http://127.0.0.1:{port}/openai/deployments/gpt/chat/completions?api-version=2024-10-21"
    )
}

/// `apps` applications of `endpoints` endpoints; the last application is called `bench`.
pub fn config(sim_port: u16, apps: usize, endpoints: usize) -> String {
    let uri = sim_url(sim_port);
    let eps: Vec<String> = (0..endpoints)
        .map(|e| format!(r#"{{"id":"ep{e}","uri":"{uri}","apikey":"k{e}","rpm":100000000}}"#))
        .collect();
    let eps = eps.join(",");
    let list: Vec<String> = (0..apps)
        .map(|a| {
            let id = if a + 1 == apps {
                "bench".to_string()
            } else {
                format!("app{a}")
            };
            format!(r#"{{"appId":"{id}","appType":"azure_oai","endpoints":[{eps}]}}"#)
        })
        .collect();
    format!(r#"{{"applications":[{}]}}"#, list.join(",\n"))
}
