//! Streaming answers: server-sent events produced one at a time.
//!
//! A stream is a small state machine that hyper polls for its next event.
//! Each event is built only when it is due — after `chunk_interval_ms` — and
//! handed over as its own body frame, so a client sees the chunks as they are
//! produced, exactly like a model that generates tokens. The machine also
//! plays `drop_mid_stream` (abort the connection after some events) and
//! records how each stream ended: completed, aborted on purpose, or
//! cancelled because the client went away (the stream was dropped early).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::active::Active;
use crate::json::JsonBuf;
use crate::reply::{Envelope, Usage};
use crate::stats::{Counters, InFlight, bump};

/// The event Azure sends first on its own paths: prompt filter results.
pub(crate) const AZURE_PROMPT_FILTER: &str = concat!(
    r#"data: {"id":"","choices":[],"created":0,"model":"","object":"","#,
    r#""prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}"#,
    "\n\n"
);

/// The last event of every completed stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

/// The JSON of one choice, as two halves around an optional text.
type Template = (&'static str, &'static str);

/// The choices a flavour of stream is made of.
struct Templates {
    content: Template,
    finish: Template,
}

/// The first event of a chat stream: the assistant's role.
const CHAT_ROLE: Template = (
    r#"{"index":0,"delta":{"role":"assistant","content":""},"#,
    r#""logprobs":null,"finish_reason":null}"#,
);

const CHAT: Templates = Templates {
    content: (
        r#"{"index":0,"delta":{"content":"#,
        r#"},"logprobs":null,"finish_reason":null}"#,
    ),
    finish: (
        r#"{"index":0,"delta":{},"#,
        r#""logprobs":null,"finish_reason":"stop"}"#,
    ),
};

const COMPLETION: Templates = Templates {
    content: (
        r#"{"text":"#,
        r#","index":0,"logprobs":null,"finish_reason":null}"#,
    ),
    finish: (
        r#"{"text":"","index":0,"#,
        r#""logprobs":null,"finish_reason":"stop"}"#,
    ),
};

/// Pause between the last event and a deliberate abort, so the events
/// already produced leave the socket before it is torn down.
const ABORT_GRACE: Duration = Duration::from_millis(10);

/// Which API the stream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `chat.completion.chunk` events with `delta`s.
    Chat,
    /// Legacy `text_completion` events with `text`.
    Completion,
}

/// What a stream should contain, decided by the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamPlan {
    pub flavor: Flavor,
    /// Start with Azure's prompt-filter event.
    pub azure: bool,
    /// End with a usage event (`stream_options.include_usage`).
    pub include_usage: bool,
    pub usage: Usage,
    /// Abort the connection after this many events (`drop_mid_stream`).
    pub abort_after: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    PromptFilter,
    Role,
    Content(u32),
    Finish,
    Usage,
    Done,
    Abort,
    End,
}

/// The error a stream ends with to make hyper abort the connection.
#[derive(Debug)]
pub(crate) struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream aborted on purpose (drop_mid_stream)")
    }
}

impl std::error::Error for Aborted {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Completed,
    Aborted,
}

/// Records how a stream ended when it is dropped.
struct Ending {
    counters: Arc<Counters>,
    outcome: Outcome,
    _in_flight: InFlight,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let counter = match self.outcome {
            Outcome::Running => &self.counters.streams_cancelled,
            Outcome::Completed => &self.counters.streams_completed,
            Outcome::Aborted => &self.counters.dropped,
        };
        bump(counter);
    }
}

/// One streaming answer in progress.
pub(crate) struct SseStream {
    active: Arc<Active>,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[`.
    prefix: Box<[u8]>,
    plan: StreamPlan,
    stage: Stage,
    emitted: u32,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    ending: Ending,
}

impl SseStream {
    pub fn new(
        active: Arc<Active>,
        envelope: &Envelope<'_>,
        plan: StreamPlan,
        counters: Arc<Counters>,
        in_flight: InFlight,
    ) -> Self {
        bump(&counters.streams_started);
        let mut prefix = JsonBuf::with_capacity(128 + envelope.model.len());
        prefix.raw("data: ");
        match plan.flavor {
            Flavor::Chat => envelope.open(&mut prefix, "chatcmpl-", "chat.completion.chunk"),
            Flavor::Completion => envelope.open(&mut prefix, "cmpl-", "text_completion"),
        }
        let mut stream = Self {
            active,
            prefix: prefix.into_vec().into_boxed_slice(),
            plan,
            stage: Stage::PromptFilter,
            emitted: 0,
            timer: None,
            waiting: false,
            ending: Ending {
                counters,
                outcome: Outcome::Running,
                _in_flight: in_flight,
            },
        };
        stream.stage = if plan.abort_after == Some(0) {
            Stage::Abort
        } else if plan.azure {
            Stage::PromptFilter
        } else {
            stream.after_prompt_filter()
        };
        stream
    }

    /// True once the last event has been handed out.
    pub fn is_end(&self) -> bool {
        self.stage == Stage::End
    }

    /// The next event, when it is due.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Aborted>>> {
        if self.waiting {
            if let Some(timer) = self.timer.as_mut() {
                ready!(timer.as_mut().poll(cx));
            }
            self.waiting = false;
        }
        if self.stage == Stage::Abort {
            self.stage = Stage::End;
            self.ending.outcome = Outcome::Aborted;
            return Poll::Ready(Some(Err(Aborted)));
        }
        let Some(event) = self.next_event() else {
            return Poll::Ready(None);
        };
        self.emitted = self.emitted.saturating_add(1);
        if self.stage != Stage::End {
            if self.plan.abort_after == Some(self.emitted) {
                self.stage = Stage::Abort;
                self.pause(ABORT_GRACE);
            } else if !self.active.chunk_interval.is_zero() {
                self.pause(self.active.chunk_interval);
            }
        }
        Poll::Ready(Some(Ok(event)))
    }

    fn pause(&mut self, duration: Duration) {
        let now = Instant::now();
        let deadline = now.checked_add(duration).unwrap_or(now);
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }

    fn after_prompt_filter(&self) -> Stage {
        match self.plan.flavor {
            Flavor::Chat => Stage::Role,
            Flavor::Completion => self.first_content(),
        }
    }

    fn first_content(&self) -> Stage {
        if self.active.behaviour.chunks == 0 {
            Stage::Finish
        } else {
            Stage::Content(0)
        }
    }

    /// Builds the event of the current stage and moves to the next stage.
    fn next_event(&mut self) -> Option<Bytes> {
        let (event, next) = match self.stage {
            Stage::PromptFilter => (
                Bytes::from_static(AZURE_PROMPT_FILTER.as_bytes()),
                self.after_prompt_filter(),
            ),
            Stage::Role => (self.choice_event(CHAT_ROLE, None), self.first_content()),
            Stage::Content(i) => {
                let chunks = self.active.behaviour.chunks;
                let text = self.active.reply.part(i, chunks);
                let next = if i.saturating_add(1) < chunks {
                    Stage::Content(i + 1)
                } else {
                    Stage::Finish
                };
                (
                    self.choice_event(self.templates().content, Some(text)),
                    next,
                )
            }
            Stage::Finish => {
                let next = if self.plan.include_usage && !self.active.behaviour.omit_usage {
                    Stage::Usage
                } else {
                    Stage::Done
                };
                (self.choice_event(self.templates().finish, None), next)
            }
            Stage::Usage => {
                let mut b = JsonBuf::with_capacity(self.prefix.len() + 96);
                b.raw_bytes(&self.prefix).raw(r#"],"usage":"#);
                self.plan.usage.write(&mut b);
                b.raw("}\n\n");
                (b.into_bytes(), Stage::Done)
            }
            Stage::Done => {
                self.ending.outcome = Outcome::Completed;
                (Bytes::from_static(DONE.as_bytes()), Stage::End)
            }
            Stage::Abort | Stage::End => return None,
        };
        self.stage = next;
        Some(event)
    }

    fn templates(&self) -> &'static Templates {
        match self.plan.flavor {
            Flavor::Chat => &CHAT,
            Flavor::Completion => &COMPLETION,
        }
    }

    /// `prefix` + one choice + `]}` and the event's end. The choice is
    /// `template`, or with `text` (as a JSON string) between its two halves.
    fn choice_event(&self, template: (&str, &str), text: Option<&str>) -> Bytes {
        let mut b = JsonBuf::with_capacity(self.prefix.len() + 160 + text.map_or(0, str::len));
        b.raw_bytes(&self.prefix).raw(template.0);
        if let Some(text) = text {
            b.string(text);
        }
        b.raw(template.1).raw("]}\n\n");
        b.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use serde_json::Value;

    use super::*;
    use crate::behaviour::Behaviour;
    use crate::reply::Reply;

    const ENVELOPE: Envelope<'static> = Envelope {
        id: "abc",
        created: 7,
        model: "m",
    };

    fn plan(flavor: Flavor, azure: bool, include_usage: bool) -> StreamPlan {
        StreamPlan {
            flavor,
            azure,
            include_usage,
            usage: Usage {
                prompt: 3,
                completion: 4,
            },
            abort_after: None,
        }
    }

    fn stream(b: Behaviour, plan: StreamPlan, counters: &Arc<Counters>) -> SseStream {
        let active = Arc::new(Active::new(b, "sim"));
        SseStream::new(
            active,
            &ENVELOPE,
            plan,
            counters.clone(),
            InFlight::enter(counters.clone()),
        )
    }

    /// Polls a timer-free stream to its end.
    fn drain(mut s: SseStream) -> (Vec<String>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut events = Vec::new();
        loop {
            match s.poll_event(&mut cx) {
                Poll::Ready(Some(Ok(e))) => events.push(String::from_utf8(e.to_vec()).unwrap()),
                Poll::Ready(Some(Err(Aborted))) => return (events, true),
                Poll::Ready(None) => return (events, false),
                Poll::Pending => panic!("a stream without intervals never waits"),
            }
        }
    }

    fn payload(event: &str) -> Value {
        let json = event
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn chat_stream_sequence_on_an_azure_path_with_usage() {
        let counters = Arc::new(Counters::default());
        let b = Behaviour {
            chunks: 3,
            ..Behaviour::default()
        };
        let (events, aborted) = drain(stream(b, plan(Flavor::Chat, true, true), &counters));
        assert!(!aborted);
        assert_eq!(events.len(), 1 + 1 + 3 + 1 + 1 + 1);
        assert_eq!(events[0], AZURE_PROMPT_FILTER);
        let role = payload(&events[1]);
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["id"], "chatcmpl-abc");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        let text: String = events[2..5]
            .iter()
            .map(|e| {
                payload(e)["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(text, Reply::new("sim", None).text());
        let finish = payload(&events[5]);
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        let usage = payload(&events[6]);
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);
        assert_eq!(events[7], DONE);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.streams_started,
                stats.streams_completed,
                stats.streams_cancelled
            ),
            (1, 1, 0)
        );
        assert_eq!(stats.in_flight, 0);
    }

    #[test]
    fn completion_stream_without_usage_or_prompt_filter() {
        let counters = Arc::new(Counters::default());
        let (events, _) = drain(stream(
            Behaviour::default(),
            plan(Flavor::Completion, false, false),
            &counters,
        ));
        assert_eq!(events.len(), 5 + 1 + 1);
        let first = payload(&events[0]);
        assert_eq!(first["object"], "text_completion");
        assert!(
            first["choices"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Simulated")
        );
        assert_eq!(payload(&events[5])["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[6], DONE);
    }

    #[test]
    fn omit_usage_ends_without_the_usage_event_even_when_asked() {
        let counters = Arc::new(Counters::default());
        let b = Behaviour {
            omit_usage: true,
            ..Behaviour::default()
        };
        let (events, _) = drain(stream(b, plan(Flavor::Chat, false, true), &counters));
        assert_eq!(events.len(), 1 + 5 + 1 + 1);
        assert!(events.iter().all(|e| !e.contains("\"usage\"")));
        assert_eq!(events[7], DONE);
    }

    #[test]
    fn zero_chunks_still_finishes() {
        let counters = Arc::new(Counters::default());
        let b = Behaviour {
            chunks: 0,
            ..Behaviour::default()
        };
        let (events, _) = drain(stream(b, plan(Flavor::Chat, false, false), &counters));
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn dropping_a_stream_early_counts_a_cancellation() {
        let counters = Arc::new(Counters::default());
        let mut s = stream(
            Behaviour::default(),
            plan(Flavor::Chat, false, false),
            &counters,
        );
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(s.poll_event(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(counters.snapshot().in_flight, 1);
        drop(s);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.streams_cancelled,
                stats.streams_completed,
                stats.in_flight
            ),
            (1, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abort_after_n_events_then_error() {
        let counters = Arc::new(Counters::default());
        let mut p = plan(Flavor::Chat, true, false);
        p.abort_after = Some(2);
        let mut s = stream(Behaviour::default(), p, &counters);
        let mut events = 0;
        let result = std::future::poll_fn(|cx| {
            loop {
                match ready!(s.poll_event(cx)) {
                    Some(Ok(_)) => events += 1,
                    other => return Poll::Ready(other.map(|r| r.is_err())),
                }
            }
        })
        .await;
        assert_eq!((events, result), (2, Some(true)));
        assert!(s.is_end());
        drop(s);
        let stats = counters.snapshot();
        assert_eq!(
            (
                stats.dropped,
                stats.streams_cancelled,
                stats.streams_completed
            ),
            (1, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_the_chunk_interval() {
        let counters = Arc::new(Counters::default());
        let b = Behaviour {
            chunk_interval_ms: 100,
            chunks: 2,
            ..Behaviour::default()
        };
        let mut s = stream(b, plan(Flavor::Chat, false, false), &counters);
        let start = Instant::now();
        let mut at = Vec::new();
        while let Some(event) = std::future::poll_fn(|cx| s.poll_event(cx)).await {
            assert!(event.is_ok());
            at.push(start.elapsed().as_millis());
        }
        // role, 2 contents, finish, [DONE]: the first at once, then one per interval.
        assert_eq!(at, [0, 100, 200, 300, 400]);
    }
}
