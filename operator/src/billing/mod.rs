//! Billing: the Subscription state machine and its reconciler.

pub mod controller;
pub mod evaluate;
