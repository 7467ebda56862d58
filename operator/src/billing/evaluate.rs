//! The billing state machine of a Subscription on a given day (pure).
//!
//! Manual payments: `paidUntil` is the last day paid for. A day is covered by the
//! trial or by payment; the first uncovered day starts `PastDue`; after
//! `graceDays` of it the tenant is `Suspended` (final warning), and 30 days later
//! the owner is asked again to keep or delete it.

use k8s_openapi::jiff::ToSpan;
use k8s_openapi::jiff::civil::Date;
use truffles_crds::subscription::{BillingState, ReminderType, SubscriptionSpec};

/// Days before the end of a paid period when the payment reminder goes out.
pub const PAYMENT_DUE_DAYS: [i32; 2] = [7, 3];
/// Days a past-due reminder is repeated.
pub const PAST_DUE_REMINDER_DAYS: i32 = 3;
/// Days after suspension when the keep-or-delete notice goes out.
pub const DELETION_NOTICE_DAYS: i32 = 30;

/// A reminder that is due, identified by its type and the day it was due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reminder {
    pub kind: ReminderType,
    /// The day the reminder is for; with `kind` it identifies it (sent once).
    pub due_on: Date,
    /// End of the trial or period it is about (first uncovered day).
    pub period_end: Date,
}

/// The billing view of a Subscription on one day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub state: BillingState,
    /// First and last day of the current trial or paid period.
    pub period: (Date, Date),
    /// The most recent reminder that is due (older missed ones are not repeated).
    pub reminder: Option<Reminder>,
    /// First day of suspension, when suspended.
    pub suspended_since: Option<Date>,
    /// Whether the opt-in automatic deletion is due.
    pub deletion_due: bool,
    /// The next day something changes; re-evaluate then.
    pub next_change: Date,
}

impl Evaluation {
    /// Whether the tenant's bot must be off.
    pub fn suspends_tenant(&self) -> bool {
        matches!(
            self.state,
            BillingState::Suspended | BillingState::Cancelled
        )
    }
}

/// Evaluates a subscription created on `created_on`, on `today`.
pub fn evaluate(spec: &SubscriptionSpec, created_on: Date, today: Date) -> Evaluation {
    let trial_start = spec
        .trial
        .start
        .as_deref()
        .and_then(|d| d.parse::<Date>().ok())
        .unwrap_or(created_on);
    let trial_days = i32::try_from(spec.trial.days).unwrap_or(i32::MAX);
    let trial_end = add_days(trial_start, trial_days); // first day after the trial
    let paid_until = spec
        .paid_until
        .as_deref()
        .and_then(|d| d.parse::<Date>().ok());
    let paid_end = paid_until.map(|d| add_days(d, 1)); // first unpaid day
    let covered_end = paid_end.map_or(trial_end, |p| p.max(trial_end));
    let grace = i32::try_from(spec.grace_days).unwrap_or(i32::MAX);
    let months = i32::try_from(spec.period_months).unwrap_or(1);
    let tomorrow = add_days(today, 1);

    if spec.cancelled {
        return Evaluation {
            state: BillingState::Cancelled,
            period: (trial_start, add_days(covered_end, -1)),
            reminder: None,
            suspended_since: Some(today.min(covered_end)),
            deletion_due: false,
            next_change: add_days(today, 1),
        };
    }

    if today < covered_end {
        let paid = paid_end.is_some_and(|p| p > today && p >= trial_end);
        let (state, kind, days, period_start) = if paid {
            let start = add_months(covered_end, -months);
            (
                BillingState::Active,
                ReminderType::PaymentDue,
                PAYMENT_DUE_DAYS.to_vec(),
                start.max(trial_start),
            )
        } else {
            let days = spec
                .reminders
                .days_before
                .iter()
                .filter_map(|d| i32::try_from(*d).ok())
                .collect();
            (
                BillingState::Trial,
                ReminderType::TrialEnding,
                days,
                trial_start,
            )
        };
        let due: Vec<Date> = days.iter().map(|d| add_days(covered_end, -d)).collect();
        let reminder = due.iter().filter(|d| **d <= today).max().map(|d| Reminder {
            kind,
            due_on: *d,
            period_end: covered_end,
        });
        let next_change = due
            .iter()
            .filter(|d| **d > today)
            .min()
            .copied()
            .unwrap_or(covered_end)
            .min(covered_end);
        return Evaluation {
            state,
            period: (period_start, add_days(covered_end, -1)),
            reminder,
            suspended_since: None,
            deletion_due: false,
            next_change: next_change.max(tomorrow),
        };
    }

    let suspend_on = add_days(covered_end, grace);
    // The period that is owed.
    let period = (covered_end, add_days(add_months(covered_end, months), -1));
    if today < suspend_on {
        let last_reminder = add_days(covered_end, PAST_DUE_REMINDER_DAYS - 1);
        let reminder = (today <= last_reminder).then_some(Reminder {
            kind: ReminderType::PastDue,
            due_on: today,
            period_end: covered_end,
        });
        return Evaluation {
            state: BillingState::PastDue,
            period,
            reminder,
            suspended_since: None,
            deletion_due: false,
            next_change: tomorrow,
        };
    }

    let notice_on = add_days(suspend_on, DELETION_NOTICE_DAYS);
    let reminder_day = if today >= notice_on {
        notice_on
    } else {
        suspend_on
    };
    let deletion_due = spec.auto_delete.as_ref().is_some_and(|a| {
        today
            >= add_days(
                suspend_on,
                i32::try_from(a.after_days_suspended).unwrap_or(i32::MAX),
            )
    });
    let next_change = if today < notice_on {
        notice_on
    } else {
        add_days(today, 1)
    };
    Evaluation {
        state: BillingState::Suspended,
        period,
        reminder: Some(Reminder {
            kind: ReminderType::FinalWarning,
            due_on: reminder_day,
            period_end: covered_end,
        }),
        suspended_since: Some(suspend_on),
        deletion_due,
        next_change,
    }
}

fn add_days(date: Date, days: i32) -> Date {
    date.checked_add(days.days()).unwrap_or(date)
}

fn add_months(date: Date, months: i32) -> Date {
    date.checked_add(months.months()).unwrap_or(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> SubscriptionSpec {
        let mut base = json!({"clientRef": {"name": "shop"}, "plan": "start", "price": {"amount": 25000},
                              "trial": {"days": 7}, "reminders": {"daysBefore": [3, 1]}, "graceDays": 7});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).expect("valid spec")
    }

    fn d(s: &str) -> Date {
        s.parse().expect("date")
    }

    const CREATED: &str = "2026-11-01";

    fn at(spec: &SubscriptionSpec, day: &str) -> Evaluation {
        evaluate(spec, d(CREATED), d(day))
    }

    #[test]
    fn trial_reminders_three_days_and_one_day_before_the_end() {
        let s = spec(json!({}));
        // The trial covers 1..7 November; the 8th is the first unpaid day.
        let first = at(&s, "2026-11-01");
        assert_eq!(
            (first.state, first.reminder.clone()),
            (BillingState::Trial, None)
        );
        assert_eq!(first.next_change, d("2026-11-05"));
        let three = at(&s, "2026-11-05").reminder.expect("3-day reminder");
        assert_eq!(
            (three.kind, three.due_on, three.period_end),
            (ReminderType::TrialEnding, d("2026-11-05"), d("2026-11-08"))
        );
        assert_eq!(
            at(&s, "2026-11-06").reminder.map(|r| r.due_on),
            Some(d("2026-11-05")),
            "same reminder, sent once"
        );
        assert_eq!(
            at(&s, "2026-11-07").reminder.map(|r| r.due_on),
            Some(d("2026-11-07")),
            "1-day reminder"
        );
    }

    #[test]
    fn unpaid_trial_goes_past_due_then_suspended_then_deletion_notice() {
        let s = spec(json!({}));
        let day1 = at(&s, "2026-11-08");
        assert_eq!(day1.state, BillingState::PastDue);
        assert_eq!(
            day1.reminder.map(|r| (r.kind, r.due_on)),
            Some((ReminderType::PastDue, d("2026-11-08")))
        );
        assert!(
            at(&s, "2026-11-10").reminder.is_some(),
            "past-due reminders for three days"
        );
        assert!(
            at(&s, "2026-11-11").reminder.is_none(),
            "then silence until suspension"
        );
        assert!(!at(&s, "2026-11-14").suspends_tenant());
        let suspended = at(&s, "2026-11-15");
        assert_eq!(suspended.state, BillingState::Suspended);
        assert!(suspended.suspends_tenant());
        assert_eq!(suspended.suspended_since, Some(d("2026-11-15")));
        assert_eq!(
            suspended.reminder.map(|r| (r.kind, r.due_on)),
            Some((ReminderType::FinalWarning, d("2026-11-15")))
        );
        assert_eq!(suspended.next_change, d("2026-12-15"));
        let notice = at(&s, "2026-12-15")
            .reminder
            .expect("keep-or-delete notice");
        assert_eq!(
            (notice.kind, notice.due_on),
            (ReminderType::FinalWarning, d("2026-12-15"))
        );
        assert!(
            !at(&s, "2027-06-01").deletion_due,
            "no automatic deletion without opt-in"
        );
    }

    #[test]
    fn a_payment_reactivates_and_payment_reminders_come_seven_and_three_days_before() {
        let s = spec(json!({"paidUntil": "2026-12-10"}));
        let active = at(&s, "2026-11-20");
        assert_eq!(active.state, BillingState::Active);
        assert!(!active.suspends_tenant());
        assert_eq!(active.reminder, None);
        assert_eq!(
            at(&s, "2026-12-04").reminder.map(|r| (r.kind, r.due_on)),
            Some((ReminderType::PaymentDue, d("2026-12-04")))
        );
        assert_eq!(
            at(&s, "2026-12-08").reminder.map(|r| r.due_on),
            Some(d("2026-12-08"))
        );
        assert_eq!(at(&s, "2026-12-11").state, BillingState::PastDue);
    }

    #[test]
    fn automatic_deletion_only_when_opted_in() {
        let s = spec(json!({"autoDelete": {"afterDaysSuspended": 90}}));
        assert!(!at(&s, "2027-02-12").deletion_due);
        assert!(
            at(&s, "2027-02-13").deletion_due,
            "90 days after suspension on 2026-11-15"
        );
    }

    #[test]
    fn cancellation_suspends_at_once() {
        let s = spec(json!({"cancelled": true, "paidUntil": "2026-12-31"}));
        let e = at(&s, "2026-11-20");
        assert_eq!(e.state, BillingState::Cancelled);
        assert!(e.suspends_tenant());
    }
}
