//! The TrufflesClient controller, one file per reconcile step (see
//! `reconcile.rs` for the pipeline and docs/architecture.md for the map):
//! `dereference` → `validate` → `database` and `vectors` (provision) →
//! `build/` (the desired objects, pure) → `apply` (and prune) → `status` and
//! `publish`; `retire` when the tenant goes.

pub mod apply;
pub mod build;
pub mod cache;
pub mod context;
pub mod custody;
pub mod database;
pub mod dereference;
pub mod error;
pub mod keys;
pub mod platform;
pub mod publish;
pub mod reconcile;
pub mod references;
pub mod retire;
pub mod status;
pub mod validate;
pub mod vectors;
pub mod webhooks;

pub use context::{Context, FIELD_MANAGER, FINALIZER, Settings};
pub use error::Error;
pub use reconcile::run;
