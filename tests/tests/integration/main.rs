//! The integration tests, one binary with a module per area, so the workspace
//! is linked once (`cargo test -p truffles-tests --test integration`; one area:
//! `... --test integration -- handover::`). They need the test environment
//! (`make test`, or `scripts/testenv.sh run -- cargo test ...`). Every test
//! makes its own database, schema or namespace, so the areas run side by side.

mod backup;
mod billing;
mod channels;
mod chart;
mod contract;
mod database;
mod end_to_end;
mod handover;
mod health;
mod idle;
mod knowledge;
mod kubernetes;
mod leader;
mod operator;
mod privacy;
mod redis;
mod report;
mod retrieval;
mod runtime;
mod security;
