//! Alembic's integration tests, in one binary to keep link time down.

mod common;
mod conformance;
mod fixtures;
mod parity;
