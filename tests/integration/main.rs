//! Alembic's integration tests, in one binary to keep link time down.

mod common;
mod cache;
mod conformance;
