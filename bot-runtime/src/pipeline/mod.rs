//! The message pipeline: claim a customer's stored events, normalize,
//! remember, decide, answer through the outbox. Every step is idempotent, so
//! a runtime killed at any point is finished by the next one. The stages, in
//! the order a message meets them (docs/architecture.md):
//! `worker` → `claim` → `turn` (with `store` and `respond`) → `commit`.

mod claim;
mod commit;
pub mod extract;
pub(crate) mod respond;
pub(crate) mod store;
mod turn;
mod wants;
mod words;
mod worker;

pub use worker::run_worker;
