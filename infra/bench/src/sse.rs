//! The streaming client wrk cannot be: opens SSE streams in closed loops and records, per
//! stream, the time to the first event and the gap before every later event. An event counts
//! as arrived when the read that completes it (`\n\n`) returns, so two events delivered by
//! one read show as a zero gap: a chunk held back and sent with the next.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::Res;

pub const STREAM_BODY: &str = r#"{"messages":[{"role":"user","content":"Hello"}],"stream":true}"#;

/// Samples in microseconds, plus counts.
#[derive(Debug, Default)]
pub struct Samples {
    pub ttft: Vec<f64>,
    pub gaps: Vec<f64>,
    pub streams: u64,
    pub events: u64,
    pub errors: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.ttft.extend(other.ttft);
        self.gaps.extend(other.gaps);
        self.streams += other.streams;
        self.events += other.events;
        self.errors += other.errors;
    }
}

pub fn client() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// `conns` clients each streaming from `url` back to back for `dur`.
pub async fn measure(client: &reqwest::Client, url: &str, conns: usize, dur: Duration) -> Samples {
    let deadline = Instant::now() + dur;
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                if one_stream(&client, &url, &mut samples).await.is_err() {
                    samples.errors += 1;
                }
            }
            samples
        });
    }
    let mut all = Samples::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(samples) => all.merge(samples),
            Err(_) => all.errors += 1,
        }
    }
    all
}

async fn one_stream(client: &reqwest::Client, url: &str, s: &mut Samples) -> Res<()> {
    let start = Instant::now();
    let mut answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(STREAM_BODY)
        .send()
        .await?;
    if answer.status() != 200 {
        return Err(format!("status {}", answer.status()).into());
    }
    let (mut last, mut first, mut prev_byte) = (start, true, 0u8);
    while let Some(chunk) = answer.chunk().await? {
        let now = Instant::now();
        let mut ends = 0;
        for &b in chunk.iter() {
            if b == b'\n' && prev_byte == b'\n' {
                ends += 1;
            }
            prev_byte = b;
        }
        for _ in 0..ends {
            let micros = now.duration_since(last).as_secs_f64() * 1e6;
            if first {
                s.ttft.push(micros);
                first = false;
            } else {
                s.gaps.push(micros);
            }
            last = now;
            s.events += 1;
        }
    }
    s.streams += 1;
    Ok(())
}
