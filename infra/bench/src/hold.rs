//! Holds many streams open at once so the resident memory per open stream can be read: each
//! stream is opened (a bounded number at a time, so the listen backlog never overflows), waits
//! for its first event, then stays open until released.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::Res;
use crate::sse::STREAM_BODY;

/// Open `n` streams to `url`; once all are open (or 60 s passed) call `measure`, then close all.
/// Returns what `measure` returned and how many streams were open when it ran.
pub async fn hold<T>(url: &str, n: u64, measure: impl FnOnce() -> T) -> Res<(T, u64)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .build()?;
    let open = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(200));
    let (release, released) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, url, open, failed, gate) = (
            client.clone(),
            url.to_string(),
            open.clone(),
            failed.clone(),
            gate.clone(),
        );
        let mut released = released.clone();
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let answer = client
                .post(&url)
                .header("content-type", "application/json")
                .body(STREAM_BODY)
                .send()
                .await;
            let Ok(mut answer) = answer else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if answer.status() != 200 || !matches!(answer.chunk().await, Ok(Some(_))) {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            drop(permit);
            open.fetch_add(1, Ordering::Relaxed);
            let _ = released.wait_for(|r| *r).await;
            drop(answer);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the proxy settle (buffers, timers) before reading its memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open.load(Ordering::Relaxed);
    let value = measure();
    let _ = release.send(true);
    while tasks.join_next().await.is_some() {}
    Ok((value, held))
}
