//! The per-tenant Truffles runtime (`truffles-bot`): the webhook gateway, the
//! message pipeline and the outbox, one process per tenant replica.

pub mod audit;
pub mod backlog;
pub mod backup;
pub mod breaker;
pub mod cache;
pub mod channels;
pub mod cli;
pub mod config;
pub mod credential;
pub mod decide;
pub mod fetch;
pub mod gateway;
pub mod handover;
pub mod health;
pub mod health_cache;
pub mod keywords;
pub mod knowledge;
pub mod llm;
pub mod metrics;
pub mod outbox;
pub mod person;
pub mod pii;
pub mod pipeline;
pub mod platform;
pub mod runtime;
pub mod schedule;
pub mod semantic;
pub mod serve;
pub mod texts;
pub mod topics;
pub mod wake;
