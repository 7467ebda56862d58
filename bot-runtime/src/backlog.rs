//! Backpressure: a tenant's unanswered events are bounded. When the model is
//! slow the inbox would otherwise grow without end (100 webhooks a minute
//! admitted, a few turns a minute answered); past the bound the webhook
//! answers 503 with `Retry-After`, the providers deliver again later, and the
//! metrics below fire the `TrufflesBacklogFull` alert.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Tuning;
use crate::metrics::Metrics;

/// The gateway counts the backlog at most this often (one index scan).
const FRESH_FOR: Duration = Duration::from_secs(1);

/// What the providers are asked to wait before delivering again.
pub const RETRY_AFTER_SECONDS: u64 = 30;

/// The inbox's depth as last counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Depth {
    pub events: i64,
    pub oldest_seconds: f64,
}

/// Why a new event is refused, or None when the backlog has room.
pub fn refusal(depth: Depth, tuning: &Tuning) -> Option<String> {
    if depth.events >= tuning.max_backlog {
        return Some(format!(
            "{} unanswered events (the bound is {})",
            depth.events, tuning.max_backlog
        ));
    }
    let age = tuning.max_backlog_age.as_secs_f64();
    (depth.events > 0 && depth.oldest_seconds >= age).then(|| {
        format!(
            "the oldest unanswered event has waited {:.0} s (the bound is {age:.0} s)",
            depth.oldest_seconds
        )
    })
}

#[derive(Default)]
pub struct Backlog {
    seen: Mutex<Option<(Instant, Depth)>>,
    refusing: AtomicBool,
    /// One webhook counts; the others meanwhile use the last count.
    counting: AtomicBool,
}

impl Backlog {
    /// Records a count (the gateway's or the scheduler's) and exports it.
    pub fn observe(&self, metrics: &Metrics, events: i64, oldest_seconds: f64) {
        let depth = Depth {
            events,
            oldest_seconds,
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), depth));
        metrics.backlog(events, oldest_seconds);
    }

    /// The last count if it is fresh, or if another webhook is counting now.
    fn usable(&self) -> Option<Depth> {
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen {
            Some((at, depth)) if at.elapsed() < FRESH_FOR => Some(depth),
            Some((_, depth)) if self.counting.swap(true, Ordering::SeqCst) => Some(depth),
            None if self.counting.swap(true, Ordering::SeqCst) => Some(Depth::default()),
            _ => None,
        }
    }

    /// Whether a new event may be stored. The count is at most a second old;
    /// when it cannot be taken (the database is down) the insert will say so.
    /// Returns the refusal and whether it is the first since the backlog had room.
    pub async fn check(
        &self,
        db: &sqlx::PgPool,
        metrics: &Metrics,
        tuning: &Tuning,
    ) -> Option<(String, bool)> {
        let depth = match self.usable() {
            Some(depth) => depth,
            None => {
                let counted: sqlx::Result<(i64, f64)> = sqlx::query_as(
                    "SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8
                     FROM inbox WHERE status IN ('pending', 'processing')",
                )
                .fetch_one(db)
                .await;
                self.counting.store(false, Ordering::SeqCst);
                let Ok((events, oldest)) = counted else {
                    return None;
                };
                self.observe(metrics, events, oldest);
                Depth {
                    events,
                    oldest_seconds: oldest,
                }
            }
        };
        let why = refusal(depth, tuning);
        let was = self.refusing.swap(why.is_some(), Ordering::SeqCst);
        why.map(|why| (why, !was))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(events: i64, oldest_seconds: f64) -> Depth {
        Depth {
            events,
            oldest_seconds,
        }
    }

    #[test]
    fn the_bound_is_a_count_and_an_age() {
        let tuning = Tuning {
            max_backlog: 10,
            max_backlog_age: Duration::from_secs(60),
            ..Tuning::default()
        };
        assert_eq!(refusal(depth(0, 0.0), &tuning), None);
        assert_eq!(refusal(depth(9, 59.0), &tuning), None);
        let full = refusal(depth(10, 1.0), &tuning).unwrap_or_default();
        assert!(full.contains("10 unanswered"), "{full}");
        let old = refusal(depth(2, 61.0), &tuning).unwrap_or_default();
        assert!(old.contains("61 s"), "{old}");
    }
}
