//! Replicas caught up with their master, replication errors in a server log, and locks whose
//! tokens are far ahead of the clock (what a replica or a restart may be taught).

use std::sync::OnceLock;
use std::time::Duration;

use fence_core::effects;

use crate::inspect::{info, info_value};
use crate::query::{dump, lock_status};
use crate::resp::resp_command;
use crate::server::{tail, Server};
use crate::time::{now_us, wait_until};

/// The name of a replication-only command (`FENCE.LOCK`, …) as text.
fn effect_name(name: &std::ffi::CStr) -> &str {
    name.to_str().expect("an ASCII command name")
}

/// Lines of a server log that show a command refused while it was applied from the master
/// link (Redis logs "sending an error to its master"), mention a replication-only command
/// (Redis names a command only when something went wrong with it), or a panic the module
/// caught.
pub fn replication_errors(log: &str) -> Vec<String> {
    let internal: Vec<String> = [effects::LOCK, effects::STOCK, effects::RESTOCK]
        .iter()
        .map(|name| effect_name(name).to_ascii_lowercase())
        .collect();
    log.lines()
        .filter(|line| {
            let l = line.to_ascii_lowercase();
            l.contains("sending an error to its master")
                || internal.iter().any(|name| l.contains(name.as_str()))
                || l.contains("fence: caught a panic")
        })
        .map(str::to_string)
        .collect()
}

/// Waits until `replica` is linked to its master and has processed everything the master has
/// sent (its offset equals the master's `master_repl_offset`); panics after `timeout`.
#[track_caller]
pub fn wait_for_sync(master: &Server, replica: &Server, timeout: Duration) {
    let mut mcon = master.conn();
    let mut rcon = replica.conn();
    let mut last = String::new();
    // Right after a diskless full sync, Redis 7.0 buffers the stream until the replica's first
    // acknowledgement while both offsets already match; WAIT asks the replica to acknowledge
    // everything written so far, so matching offsets afterwards mean a replica caught up.
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let _ = redis::cmd("WAIT").arg(1).arg(ms).query::<i64>(&mut mcon);
    let synced = wait_until(timeout, || {
        let m = info(&mut mcon, "replication");
        let r = info(&mut rcon, "replication");
        let up = info_value(&r, "master_link_status").as_deref() == Some("up");
        let m_off = info_value(&m, "master_repl_offset");
        let r_off = info_value(&r, "master_repl_offset");
        last = format!("link up: {up}, master offset {m_off:?}, replica offset {r_off:?}");
        up && m_off.is_some() && m_off == r_off
    });
    assert!(
        synced,
        "the replica did not catch up with its master ({last})\n--- replica log (tail) ---\n{}",
        tail(&replica.log())
    );
}

/// Locks holding tokens far ahead of the clock, as DUMP payloads, made once per test binary.
/// A client cannot obtain such a token; `RESTORE` of a payload teaches a server the token
/// (the lock type's RDB load observes it), so a test can tell the token clock's memory from
/// its wall-clock floor.
pub struct FutureLocks {
    /// Owners of the two locks.
    pub owners: [&'static str; 2],
    /// Their tokens: about one hour and two hours ahead of the clock when made.
    pub tokens: [i64; 2],
    /// `DUMP` payloads of the two locks (no expiry).
    pub dumps: [Vec<u8>; 2],
}

/// The future locks of this test binary (a helper server makes them, from an AOF, once).
pub fn future_locks() -> &'static FutureLocks {
    static LOCKS: OnceLock<FutureLocks> = OnceLock::new();
    LOCKS.get_or_init(|| {
        let hour = 3_600 * 1_000_000;
        let tokens = [now_us() + hour, now_us() + 2 * hour];
        let owners = ["future-1", "future-2"];
        let lock = effect_name(effects::LOCK);
        let mut aof = resp_command(&["SELECT", "0"]);
        for i in 0..2 {
            let key = format!("future:{i}");
            let token = tokens[i].to_string();
            aof.push_str(&resp_command(&[lock, &key, owners[i], &token, "0"]));
        }
        let server = Server::start_with_files(
            &[("appendonly.aof", aof.as_bytes())],
            &["--appendonly", "yes"],
        );
        let mut con = server.conn();
        for i in 0..2 {
            let key = format!("future:{i}");
            let status = lock_status(&mut con, &key);
            assert_eq!(
                status,
                Some((owners[i].to_string(), tokens[i], -1)),
                "the helper server did not load {key} from its AOF"
            );
        }
        let dumps = [dump(&mut con, "future:0"), dump(&mut con, "future:1")];
        FutureLocks {
            owners,
            tokens,
            dumps,
        }
    })
}
