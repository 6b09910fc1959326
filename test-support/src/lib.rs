//! The harness of redis-fence's tests, shared by the module's integration tests (`tests/`), the
//! Rust client's tests (`clients/rust/tests/`) and anything else that needs a real server: one
//! `redis-server` per test with the built fence module loaded, on a free port of 127.0.0.1, in
//! its own temporary directory, talked to over real connections. The module is never linked.
//!
//! - `REDIS_SERVER`: the server binary (default `redis-server` on `PATH`).
//! - `FENCE_MODULE`: the module file (default `target/debug/libredis_fence.so` under the
//!   workspace root; run `cargo build` there first).
//! - `REDIS_CLI`: the `redis-cli` that creates a [`Cluster`] (default `redis-cli` on `PATH`).
//!
//! The reply strings the module sends are `fence_core::error`'s; nothing here spells one again.
//!
//! Modules, all re-exported at the root:
//! - [`server`]: [`Server`] (start, restart, kill, logs, liveness), [`ServerBuilder`] for other
//!   settings (module file, a program to run under, time limits), and where the binaries are.
//! - [`resp`]: one command and its reply checked (`call`, `int`, `okay`, `assert_err`, …).
//! - [`query`]: one command each, typed (`pttl`, `lock_status`, `config_get`, `dump`, …).
//! - [`inspect`]: what a server says about itself (`INFO`, `INFO commandstats`, `CLIENT LIST`).
//! - [`replication`]: replicas caught up, replication errors in a log, locks from the future.
//! - [`cluster`]: [`Cluster`], six nodes with three masters, their topology and slot migration.
//! - [`load_killer`]: [`LoadKiller`], SIGKILL at the moment a load reaches a target.
//! - [`monitor`]: [`Monitor`], the commands a server executed, in its order.
//! - [`time`]: clocks, polling and TTL checks that do not depend on the machine's speed.

pub mod cluster;
pub mod inspect;
pub mod load_killer;
pub mod monitor;
pub mod query;
pub mod replication;
pub mod resp;
pub mod server;
pub mod time;

pub use cluster::*;
pub use inspect::*;
pub use load_killer::*;
pub use monitor::*;
pub use query::*;
pub use replication::*;
pub use resp::*;
pub use server::*;
pub use time::*;
