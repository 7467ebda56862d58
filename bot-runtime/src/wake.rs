//! Nothing polls. An idle runtime of a thousand on one PostgreSQL must cost
//! almost nothing, so work finds the tasks instead of the tasks looking for it:
//! - in-process: the gateway, the pipeline and the handover wake the queue
//!   they wrote to ([`Wakes`]);
//! - across replicas: a replica whose inbox workers are all busy publishes on
//!   the tenant's Redis channel, and the others wake. Redis, not PostgreSQL's
//!   LISTEN, because LISTEN holds one PostgreSQL connection per replica for
//!   ever (a backend process each, the scarce resource at a thousand
//!   tenants) and does not work through PgBouncer in transaction mode; the
//!   runtime's one Redis connection carries the subscription (RESP3 push);
//! - later work: the scheduler (`schedule.rs`) asks PostgreSQL once when
//!   the earliest retry, lease or reminder is due and sleeps until then;
//! - what no wake announced (a dead replica's leases, an event stored while
//!   Redis was down): the same query in a slow jittered sweep (`Tuning::sweep`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use tokio::sync::Notify;

/// The tenant's Redis channel (`truffles:{client}:wake`); its ACL user may use
/// its own prefix's channels only.
pub const CHANNEL: &str = "wake";

/// The queues a wake can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Inbox,
    Outbox,
    Managers,
}

impl Queue {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::Outbox => "outbox",
            Self::Managers => "managers",
        }
    }
}

/// The runtime's wake-ups. `Notify` keeps one permit, so a wake that comes
/// while its task is busy is not lost.
pub struct Wakes {
    pub inbox: Notify,
    pub outbox: Notify,
    pub managers: Notify,
    /// A due time may have moved earlier (a retry was scheduled).
    pub schedule: Notify,
    /// Inbox workers in a turn now.
    busy: AtomicUsize,
    /// When the other replicas were last told (milliseconds since `since`).
    announced_at: AtomicU64,
    since: Instant,
}

impl Default for Wakes {
    fn default() -> Self {
        Self {
            inbox: Notify::new(),
            outbox: Notify::new(),
            managers: Notify::new(),
            schedule: Notify::new(),
            busy: AtomicUsize::new(0),
            announced_at: AtomicU64::new(0),
            since: Instant::now(),
        }
    }
}

impl Wakes {
    pub fn wake(&self, queue: Queue) {
        match queue {
            Queue::Inbox => self.inbox.notify_one(),
            Queue::Outbox => self.outbox.notify_one(),
            Queue::Managers => self.managers.notify_one(),
        }
    }

    /// What another replica published. Anything else (a reconnection, after
    /// which announcements may have been missed) wakes every queue: one
    /// claim each is cheaper than a lost message.
    pub fn on_message(&self, payload: &str) {
        match payload {
            "inbox" => self.wake(Queue::Inbox),
            "outbox" => self.wake(Queue::Outbox),
            "managers" => self.wake(Queue::Managers),
            _ => {
                self.wake(Queue::Inbox);
                self.wake(Queue::Outbox);
                self.wake(Queue::Managers);
            }
        }
    }

    /// Counts a worker in a turn until the guard drops.
    pub fn turn(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(&self.busy)
    }

    /// Whether an announcement may go now: none in the last `every` (one
    /// caller wins when several ask at once).
    pub fn may_announce(&self, every: Duration) -> bool {
        let now = self.since.elapsed().as_millis() as u64 + every.as_millis() as u64;
        let last = self.announced_at.load(Ordering::SeqCst);
        now >= last + every.as_millis() as u64
            && self
                .announced_at
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Whether every one of `workers` is in a turn: a new event is then
    /// announced to the other replicas.
    pub fn saturated(&self, workers: usize) -> bool {
        self.busy.load(Ordering::SeqCst) >= workers
    }
}

pub struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one look at the queues found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Due {
    /// Rows due now, per queue.
    pub inbox_now: i64,
    pub outbox_now: i64,
    pub managers_now: i64,
    /// Seconds until the earliest row due later, over the three queues.
    pub next_in: Option<f64>,
    /// Unanswered customer events and how long the oldest has waited.
    pub backlog: i64,
    pub oldest_seconds: f64,
    /// Handovers waiting for a reminder or the return to the bot.
    pub open_handovers: bool,
}

/// How long the scheduler sleeps after a look: until the earliest row due
/// later, the handover sweep while handovers are open, or the jittered sweep.
pub fn next_wait(due: &Due, sweep: Duration, handover_sweep: Duration) -> Duration {
    let mut wait = sweep;
    if let Some(next) = due.next_in {
        // A few milliseconds late, so the row is due when the claim looks.
        wait = wait.min(Duration::from_secs_f64(next.max(0.0)) + Duration::from_millis(20));
    }
    if due.open_handovers {
        wait = wait.min(handover_sweep);
    }
    wait
}

/// One statement (one transaction) for all three queues, each answered by a
/// partial index of its open rows.
pub async fn look(db: &sqlx::PgPool) -> sqlx::Result<Due> {
    let row = sqlx::query(
        "SELECT
           (SELECT count(*) FROM inbox WHERE status IN ('pending', 'processing') AND next_attempt_at <= now()) AS inbox_now,
           (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()) AS outbox_now,
           (SELECT count(*) FROM manager_outbox WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()) AS managers_now,
           extract(epoch FROM least(
             (SELECT min(next_attempt_at) FROM inbox WHERE status IN ('pending', 'processing') AND next_attempt_at > now()),
             (SELECT min(next_attempt_at) FROM outbox WHERE status IN ('pending', 'sending') AND next_attempt_at > now()),
             (SELECT min(next_attempt_at) FROM manager_outbox WHERE status IN ('pending', 'sending') AND next_attempt_at > now())
           ) - now())::float8 AS next_in,
           (SELECT count(*) FROM inbox WHERE status IN ('pending', 'processing')) AS backlog,
           coalesce(extract(epoch FROM now() - (SELECT min(received_at) FROM inbox
                                               WHERE status IN ('pending', 'processing'))), 0)::float8 AS oldest,
           EXISTS (SELECT 1 FROM handovers WHERE status IN ('pending', 'notified', 'active')) AS open_handovers",
    )
    .fetch_one(db)
    .await?;
    Ok(Due {
        inbox_now: row.try_get("inbox_now")?,
        outbox_now: row.try_get("outbox_now")?,
        managers_now: row.try_get("managers_now")?,
        next_in: row.try_get("next_in")?,
        backlog: row.try_get("backlog")?,
        oldest_seconds: row.try_get("oldest")?,
        open_handovers: row.try_get("open_handovers")?,
    })
}

/// Uniform in [0, 1), from the operating system (no RNG crate for a jitter).
pub fn unit_random() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWEEP: Duration = Duration::from_secs(60);
    const HANDOVERS: Duration = Duration::from_secs(30);

    #[test]
    fn an_idle_tenant_sleeps_the_whole_sweep() {
        assert_eq!(next_wait(&Due::default(), SWEEP, HANDOVERS), SWEEP);
    }

    #[test]
    fn the_earliest_retry_sets_the_timer() {
        let due = Due {
            next_in: Some(4.0),
            ..Due::default()
        };
        let wait = next_wait(&due, SWEEP, HANDOVERS);
        assert!(
            wait >= Duration::from_secs(4) && wait < Duration::from_secs(5),
            "{wait:?}"
        );
        let overdue = Due {
            next_in: Some(-3.0),
            ..Due::default()
        };
        assert!(next_wait(&overdue, SWEEP, HANDOVERS) < Duration::from_millis(100));
    }

    #[test]
    fn open_handovers_are_swept_on_their_own_pace() {
        let due = Due {
            open_handovers: true,
            next_in: Some(45.0),
            ..Due::default()
        };
        assert_eq!(next_wait(&due, SWEEP, HANDOVERS), HANDOVERS);
    }

    #[test]
    fn the_sweep_is_jittered_around_its_setting() {
        let tuning = crate::config::Tuning::default();
        assert_eq!(tuning.jittered_sweep(0.0), Duration::from_secs(45));
        assert_eq!(tuning.jittered_sweep(0.5), Duration::from_secs(60));
        assert!(tuning.jittered_sweep(0.999_999) < Duration::from_secs(75));
        let unit = unit_random();
        assert!((0.0..1.0).contains(&unit));
    }

    #[test]
    fn a_reconnection_wakes_every_queue_and_a_name_one() {
        let wakes = Wakes::default();
        wakes.on_message("outbox");
        let woken = |n: &Notify| {
            let f = std::pin::pin!(n.notified());
            futures::FutureExt::now_or_never(f).is_some()
        };
        assert!(woken(&wakes.outbox));
        assert!(!woken(&wakes.inbox));
        wakes.on_message("reconnected");
        assert!(woken(&wakes.inbox) && woken(&wakes.outbox) && woken(&wakes.managers));
    }

    #[test]
    fn announcements_are_spaced() {
        let wakes = Wakes::default();
        let every = Duration::from_millis(200);
        assert!(wakes.may_announce(every), "the first goes at once");
        assert!(!wakes.may_announce(every), "the next waits");
        std::thread::sleep(Duration::from_millis(210));
        assert!(wakes.may_announce(every));
    }

    #[test]
    fn saturation_counts_turns_in_progress() {
        let wakes = Wakes::default();
        let a = wakes.turn();
        assert!(!wakes.saturated(2));
        let b = wakes.turn();
        assert!(wakes.saturated(2));
        drop(a);
        assert!(!wakes.saturated(2));
        drop(b);
    }
}
