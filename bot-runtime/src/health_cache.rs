//! What `/readyz` may trust without asking again. The kubelet probes every
//! ten seconds; a thousand idle runtimes each opening a PostgreSQL
//! connection and calling the model's and ChatFlow's APIs for it would be
//! most of the platform's idle load. So a recent answer from PostgreSQL (the
//! scheduler's look, a stored webhook) stands for a probe, a failure is
//! believed at once, and the informational checks of external services are
//! reused for a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A successful answer from PostgreSQL counts for readiness this long (more
/// than the sweep, so an idle runtime's probes do not touch the database).
pub const POSTGRES_TRUSTED_FOR: Duration = Duration::from_secs(90);
/// External services' reachability is reused this long.
pub const SERVICES_TRUSTED_FOR: Duration = Duration::from_secs(60);

/// The reachability of the model's API and ChatFlow (None: not configured).
pub type Services = (Option<bool>, Option<bool>);

#[derive(Default)]
pub struct Probes {
    /// When PostgreSQL last answered; None after a failure.
    postgres: Mutex<Option<Instant>>,
    services: Mutex<Option<(Instant, Services)>>,
}

impl Probes {
    pub fn postgres_answered(&self, ok: bool) {
        *self.postgres.lock().unwrap_or_else(|p| p.into_inner()) = ok.then(Instant::now);
    }

    /// Whether PostgreSQL answered recently enough to skip a probe.
    pub fn postgres_recent(&self) -> bool {
        self.postgres
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < POSTGRES_TRUSTED_FOR)
    }

    pub fn services(&self) -> Option<Services> {
        let cached = self.services.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .filter(|(at, _)| at.elapsed() < SERVICES_TRUSTED_FOR)
            .map(|(_, s)| s)
    }

    pub fn services_seen(&self, services: Services) {
        *self.services.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), services));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_believed_at_once() {
        let probes = Probes::default();
        assert!(!probes.postgres_recent(), "nothing seen yet");
        probes.postgres_answered(true);
        assert!(probes.postgres_recent());
        probes.postgres_answered(false);
        assert!(!probes.postgres_recent());
        assert_eq!(probes.services(), None);
        probes.services_seen((Some(true), None));
        assert_eq!(probes.services(), Some((Some(true), None)));
    }
}
