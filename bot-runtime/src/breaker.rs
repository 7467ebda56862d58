//! Circuit breakers per tenant and external service (docs/architecture.md, "Errors and fallbacks": open after 3
//! failures in 1 minute, half-open after 30 s). State lives in Redis so every
//! replica of the tenant shares it, and in-process while Redis is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::Cache;

pub const FAILURES_TO_OPEN: u64 = 3;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const OPEN_FOR: Duration = Duration::from_secs(30);
/// How long a breaker that opened remembers it: a failed trial call in the
/// half-open state opens it again at once.
const TRIPPED_MEMORY: Duration = Duration::from_secs(600);

/// In-process state of one breaker; also the reference model of the Redis one.
#[derive(Clone, Debug, Default)]
pub struct LocalBreaker {
    failures: Vec<Instant>,
    open_until: Option<Instant>,
    tripped: bool,
}

impl LocalBreaker {
    /// Whether a call may go out now (closed, or half-open after the pause).
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    pub fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            *self = Self::default();
            return;
        }
        self.failures
            .retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        self.failures.push(now);
        if self.tripped || self.failures.len() as u64 >= FAILURES_TO_OPEN {
            self.open_until = Some(now + OPEN_FOR);
            self.tripped = true;
        }
    }
}

pub struct Breakers {
    cache: Arc<Cache>,
    local: Mutex<HashMap<String, LocalBreaker>>,
}

impl Breakers {
    pub fn new(cache: Arc<Cache>) -> Self {
        Self {
            cache,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local<T>(&self, service: &str, f: impl FnOnce(&mut LocalBreaker) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update; the
        // state is still a valid breaker.
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(service.to_owned()).or_default())
    }

    /// Whether `service` may be called now.
    pub async fn allows(&self, service: &str) -> bool {
        match self.cache.get(&format!("circuit:{service}:open")).await {
            Ok(open) => open.is_none(),
            Err(_) => self.local(service, |b| b.allows(Instant::now())),
        }
    }

    pub async fn record(&self, service: &str, ok: bool) {
        self.local(service, |b| b.record(ok, Instant::now()));
        let failures = format!("circuit:{service}:failures");
        let tripped = format!("circuit:{service}:tripped");
        let open = format!("circuit:{service}:open");
        if ok {
            for key in [&failures, &tripped, &open] {
                let _ = self.cache.delete(key).await;
            }
            return;
        }
        let Ok(count) = self.cache.count(&failures, FAILURE_WINDOW).await else {
            return;
        };
        let was_tripped = matches!(self.cache.get(&tripped).await, Ok(Some(_)));
        if was_tripped || count >= FAILURES_TO_OPEN {
            tracing::warn!(service, "circuit breaker open");
            let _ = self.cache.set(&open, "1", OPEN_FOR).await;
            let _ = self.cache.set(&tripped, "1", TRIPPED_MEMORY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_in_a_minute_open_then_half_open_after_30s() {
        let t0 = Instant::now();
        let mut b = LocalBreaker::default();
        b.record(false, t0);
        b.record(false, t0 + Duration::from_secs(10));
        assert!(b.allows(t0 + Duration::from_secs(11)));
        b.record(false, t0 + Duration::from_secs(20));
        assert!(!b.allows(t0 + Duration::from_secs(21)), "open");
        assert!(
            b.allows(t0 + Duration::from_secs(51)),
            "half-open after 30 s"
        );
        // The trial fails: open again at once.
        b.record(false, t0 + Duration::from_secs(51));
        assert!(!b.allows(t0 + Duration::from_secs(52)));
        // A trial succeeds: closed.
        b.record(true, t0 + Duration::from_secs(90));
        assert!(b.allows(t0 + Duration::from_secs(90)));
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_open() {
        let t0 = Instant::now();
        let mut b = LocalBreaker::default();
        for i in 0..5 {
            b.record(false, t0 + Duration::from_secs(40 * i));
            assert!(
                b.allows(t0 + Duration::from_secs(40 * i + 1)),
                "failure {i}"
            );
        }
    }
}
