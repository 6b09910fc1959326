//! The integration tests' harness is the workspace crate `fence-test-support` (one real
//! `redis-server` per test with the built module loaded; see its documentation for
//! `REDIS_SERVER`, `FENCE_MODULE` and `REDIS_CLI`), and the reply strings the module sends are
//! fence-core's `error` module: a test never spells one again.

// Each integration test binary compiles this file and uses only part of it.
#![allow(unused_imports)]

pub use fence_core::error::*;
pub use fence_test_support::*;
