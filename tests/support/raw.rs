//! Raw-socket backends for tests that need a backend to misbehave on the wire or to see exactly
//! what the gateway sent: reading one HTTP/1.1 request off a socket.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One request as a raw backend received it.
#[derive(Debug)]
pub struct RawRequest {
    /// `/path?query` from the request line.
    /// The request target (path and query).
    pub target: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Reads one request (head and `content-length` body).
pub async fn read_request(socket: &mut TcpStream) -> RawRequest {
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut piece).await.unwrap();
        assert!(n > 0, "request cut short");
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + length {
        let n = socket.read(&mut piece).await.unwrap();
        assert!(n > 0, "request body cut short");
        buf.extend_from_slice(&piece[..n]);
    }
    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
    RawRequest {
        target,
        content_type: header("content-type"),
        body: buf[head_end..head_end + length].to_vec(),
    }
}
