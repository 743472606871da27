//! A blocking one-shot HTTP/1.1 request over a plain socket: for control calls to the
//! simulator and for cold start, where a client runtime's own start-up would blur the timing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Res;

/// Send one request to 127.0.0.1:`port` and return the status code (body discarded).
pub fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Res<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status from port {port}").into())
}

/// Set the simulator's behaviour (`PUT /_sim/behaviour`).
pub fn set_behaviour(sim_port: u16, json: &str) -> Res<()> {
    match request(sim_port, "PUT", "/_sim/behaviour", Some(json))? {
        204 | 200 => Ok(()),
        other => Err(format!("simulator refused behaviour {json}: {other}").into()),
    }
}
