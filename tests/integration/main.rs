//! Alembic's integration tests, in one binary to keep link time down.

mod bench;
mod cli;
mod common;
mod conformance;
mod distill;
mod readme;
