//! The measured workloads, each writing its section of the report: throughput, CPU and
//! instructions per call of the module's commands against native commands and Lua
//! (`throughput`), and the scenarios driven by the bench's own threads (`seckill`,
//! `contended`, `hand_off`), memory per item (`memory`), the Big ledger (`big_ledger`), the expiry of holds
//! (`holds`), purchase limits per buyer against Lua (`buyers`) and carts of several items
//! against Lua (`carts`).
//! Each one takes its servers and clients from `harness` and formats its tables with `report`;
//! neither of those knows a scenario.

pub mod big_ledger;
pub mod buyers;
pub mod carts;
pub mod contended;
pub mod hand_off;
pub mod holds;
pub mod memory;
pub mod seckill;
pub mod throughput;

use crate::harness::Res;

/// A 36-byte owner, as a UUID string would be.
pub const OWNER: &str = "3f2b8c1e-9a4d-4e7b-8c2f-5d6a7b8c9d0e";

/// The Lua contenders: what a client runs today for what the module's commands do.
const LUA_FENCED_ACQUIRE: &str =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
     return redis.call('INCR', KEYS[1] .. ':token') end return false";
pub const LUA_RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";
const LUA_RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const LUA_SECKILL: &str = "local s = tonumber(redis.call('GET', KEYS[1])) \
     if s and s >= tonumber(ARGV[1]) then return redis.call('DECRBY', KEYS[1], ARGV[1]) end return false";
const LUA_DEDUPE: &str = "local set = KEYS[1] .. ':orders' \
     if redis.call('SISMEMBER', set, ARGV[2]) == 1 then return tonumber(redis.call('GET', KEYS[1])) end \
     local s = tonumber(redis.call('GET', KEYS[1])) \
     if s and s >= tonumber(ARGV[1]) then redis.call('SADD', set, ARGV[2]) \
     return redis.call('DECRBY', KEYS[1], ARGV[1]) end return false";

/// Rounds of each scenario, its contenders alternated (the seckill's client lock recipe runs
/// once: it is capped at 30 s).
pub const SCENARIO_ROUNDS: usize = 3;

/// Loads the Lua contenders; their names (`{sha:NAME}` in a contender's arguments) and SHAs.
pub fn load_scripts(con: &mut redis::Connection) -> Res<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for (name, body) in [
        ("acquire", LUA_FENCED_ACQUIRE),
        ("release", LUA_RELEASE),
        ("renew", LUA_RENEW),
        ("seckill", LUA_SECKILL),
        ("dedupe", LUA_DEDUPE),
    ] {
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(body).query(con)?;
        out.push((name, sha));
    }
    Ok(out)
}
