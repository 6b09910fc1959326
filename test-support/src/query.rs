//! One command each, with its reply typed: key metadata, configuration, lock status, digests,
//! `DUMP` and `RESTORE`.

use redis::{Connection, ConnectionLike, RedisResult, Value};

use crate::resp::{bulk, call, describe, int, simple, text};

/// `TYPE key`.
#[track_caller]
pub fn key_type(con: &mut Connection, key: &str) -> String {
    simple(call(con, &["TYPE", key]))
}

/// `PTTL key`.
#[track_caller]
pub fn pttl(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["PTTL", key]))
}

/// `EXISTS key`.
#[track_caller]
pub fn exists(con: &mut Connection, key: &str) -> i64 {
    int(call(con, &["EXISTS", key]))
}

/// `DBSIZE`.
#[track_caller]
pub fn dbsize(con: &mut Connection) -> i64 {
    int(call(con, &["DBSIZE"]))
}

/// `GET key` of a plain string, None when missing.
#[track_caller]
pub fn get_string(con: &mut Connection, key: &str) -> Option<String> {
    match call(con, &["GET", key]) {
        Ok(Value::Nil) => None,
        Ok(Value::BulkString(b)) => Some(String::from_utf8(b).expect("utf-8 value")),
        other => panic!(
            "expected GET to reply a string or nil, got {}",
            describe(&other)
        ),
    }
}

/// `STOCK.GET key` as an integer (panics on nil or error), on a plain or a cluster connection.
#[track_caller]
pub fn stock<C: ConnectionLike>(con: &mut C, key: &str) -> i64 {
    int(call(con, &["STOCK.GET", key]))
}

/// `CONFIG GET name`, the single value.
#[track_caller]
pub fn config_get(con: &mut Connection, name: &str) -> String {
    let pairs = config_get_all(con, name);
    assert_eq!(pairs.len(), 1, "CONFIG GET {name} replied {pairs:?}");
    assert_eq!(pairs[0].0, name);
    pairs[0].1.clone()
}

/// `CONFIG GET pattern` as (name, value) pairs, under RESP2.
#[track_caller]
pub fn config_get_all(con: &mut Connection, pattern: &str) -> Vec<(String, String)> {
    let reply = call(con, &["CONFIG", "GET", pattern]);
    let items = match reply {
        Ok(Value::Array(items)) => items,
        other => panic!(
            "CONFIG GET {pattern}: unexpected reply {}",
            describe(&other)
        ),
    };
    assert!(items.len() % 2 == 0, "odd CONFIG GET reply {items:?}");
    items
        .chunks(2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect()
}

/// What `LOCK.STATUS key` reports: owner, token and ttl; None when the lock is free. RESP2, on
/// a plain or a cluster connection.
#[track_caller]
pub fn lock_status<C: ConnectionLike>(con: &mut C, key: &str) -> Option<(String, i64, i64)> {
    let reply = call(con, &["LOCK.STATUS", key]);
    let items = match reply {
        Ok(Value::Nil) => return None,
        Ok(Value::Array(items)) if items.len() == 8 => items,
        other => panic!("LOCK.STATUS {key}: unexpected reply {}", describe(&other)),
    };
    assert_eq!(text(&items[0]), "owner", "LOCK.STATUS {key}: {items:?}");
    assert_eq!(text(&items[2]), "token", "LOCK.STATUS {key}: {items:?}");
    assert_eq!(text(&items[4]), "ttl", "LOCK.STATUS {key}: {items:?}");
    let owner = text(&items[1]);
    let (Value::Int(token), Value::Int(ttl)) = (&items[3], &items[5]) else {
        panic!("LOCK.STATUS {key}: unexpected reply {items:?}");
    };
    Some((owner, *token, *ttl))
}

/// `PTTL` of every key, in one round trip.
#[track_caller]
pub fn pttls(con: &mut Connection, keys: &[&str]) -> Vec<i64> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(*key);
    }
    match pipe.query::<Vec<i64>>(con) {
        Ok(v) => v,
        Err(e) => panic!("PTTL pipeline failed: {e}"),
    }
}

/// `DEBUG DIGEST` (needs `--enable-debug-command yes`).
#[track_caller]
pub fn debug_digest(con: &mut Connection) -> String {
    text(&call(con, &["DEBUG", "DIGEST"]).expect("DEBUG DIGEST"))
}

/// `DEBUG DIGEST-VALUE key` (needs `--enable-debug-command yes`).
#[track_caller]
pub fn digest_value(con: &mut Connection, key: &str) -> String {
    match call(con, &["DEBUG", "DIGEST-VALUE", key]) {
        Ok(Value::Array(items)) if items.len() == 1 => text(&items[0]),
        other => panic!("DEBUG DIGEST-VALUE {key}: {}", describe(&other)),
    }
}

/// Every key name (`KEYS *`), sorted.
#[track_caller]
pub fn all_keys(con: &mut Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS *");
    keys.sort();
    keys
}

/// `DUMP key`'s payload (panics when the key is missing).
#[track_caller]
pub fn dump(con: &mut Connection, key: &str) -> Vec<u8> {
    bulk(call(con, &["DUMP", key]))
}

/// `RESTORE key ttl payload [options...]`, on a plain or a cluster connection.
pub fn restore<C: ConnectionLike>(
    con: &mut C,
    key: &str,
    ttl: i64,
    payload: &[u8],
    options: &[&str],
) -> RedisResult<Value> {
    redis::cmd("RESTORE")
        .arg(key)
        .arg(ttl)
        .arg(payload)
        .arg(options)
        .query::<Value>(con)
}

/// `CONFIG SET sanitize-dump-payload value`, on the servers that have the setting. Valkey 9.1
/// dropped it (it always validates a payload's listpacks as it loads them; the name is still
/// accepted in a config file, as a no-op): there this checks the setting is gone and returns
/// false, and the caller's payloads go through the server's one validation. Everywhere else the
/// setting must take the value; returns true.
#[track_caller]
pub fn set_sanitize_dump_payload(con: &mut Connection, value: &str) -> bool {
    let id = crate::inspect::server_identity(con);
    if id.is_valkey_at_least((9, 1)) {
        let pairs = config_get_all(con, "sanitize-dump-payload");
        assert!(
            pairs.is_empty(),
            "{id} has sanitize-dump-payload after all: {pairs:?}"
        );
        return false;
    }
    crate::resp::okay(call(
        con,
        &["CONFIG", "SET", "sanitize-dump-payload", value],
    ));
    true
}
