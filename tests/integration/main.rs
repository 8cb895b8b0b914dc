//! Alembic's integration tests, in one binary to keep link time down.

mod bench;
mod common;
mod conformance;
