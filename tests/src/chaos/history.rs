//! What happened during a run, in order: every operation's invocation and outcome, every
//! fault and heal, with milliseconds since the workload started. A failing schedule prints
//! the events that concern the anomaly: the proof, as Jepsen's histories are.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Event {
    pub at_ms: u64,
    /// Who: `nemesis`, `producer-0`, `member-1`, `txn`, `checker`...
    pub actor: String,
    pub text: String,
}

pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn record(&self, actor: &str, text: impl Into<String>) {
        let event = Event {
            at_ms: self.now_ms(),
            actor: actor.to_string(),
            text: text.into(),
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }

    /// Every event, one line each.
    pub fn text(&self) -> String {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| format!("{:>7} ms  {:<11} {}\n", e.at_ms, e.actor, e.text))
            .collect()
    }

    /// The events whose text names `subject` as a whole word, and every nemesis event (the
    /// faults around them).
    pub fn concerning(&self, subject: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| {
                e.actor == "nemesis"
                    || e.text
                        .split(|c: char| {
                            c.is_whitespace() || matches!(c, ',' | '[' | ']' | '=' | ':')
                        })
                        .any(|w| w == subject)
            })
            .cloned()
            .collect()
    }
}

/// A shared log's lock; a workload task that panicked holding it leaves what it recorded.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
