//! fence-core: every decision redis-fence makes, in plain Rust: no Redis, no `unsafe`.
//!
//! The module crate (the repository root) translates between Redis and these types; tests,
//! the benchmark and the client crates import the reply strings from `error` here, so a reply
//! is spelled in one place.

#![forbid(unsafe_code)]

pub mod args;
pub mod cart;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod effects;
pub mod encoding;
pub mod error;
pub mod eviction;
pub mod holds;
pub mod lease;
pub mod ledger;
pub mod stats;
pub mod stock;
pub mod waitq;

#[cfg(test)]
mod properties;
