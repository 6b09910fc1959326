//! The Redis-side steps shared by commands, timers, events and the data types' callbacks:
//! granting a lock, the waiting machinery (queues, hand-off, re-checks), lock-expiry
//! accounting, the token clock's observations, the eviction rule, order-event streams and the
//! expiry of holds. Decisions come from
//! `fence_core`; everything Redis-facing goes through `crate::ffi`. Nothing here imports a
//! command or a type callback.

pub mod eviction;
pub mod expiry;
pub mod grant;
pub mod holds;
pub mod streams;
pub mod tokens;
pub mod waiting;
