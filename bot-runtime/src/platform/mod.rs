//! Platform-wide jobs, one run for all tenants (not part of any tenant's
//! runtime): the health check of the shared services with alerts to the
//! platform's admins (`truffles-bot health`) and the daily e-mail report
//! (`truffles-bot report`).

pub mod health;
pub mod report;
