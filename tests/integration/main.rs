//! Alembic's integration tests, in one binary to keep link time down.

mod cache;
mod common;
mod conformance;
