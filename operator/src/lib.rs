//! The Truffles operator: reconciles `TrufflesClient` resources into a tenant's
//! database schema, Secrets, runtime Deployment, Service, Ingress and CronJobs.

pub mod billing;
pub mod leader;
pub mod metrics;
pub mod tenant;
