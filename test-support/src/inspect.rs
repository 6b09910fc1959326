//! What a server says about itself: `INFO` fields, how often it executed a command, the
//! clients connected to it.

use std::collections::BTreeSet;

use redis::Connection;

/// `INFO section` as text.
#[track_caller]
pub fn info(con: &mut Connection, section: &str) -> String {
    match redis::cmd("INFO").arg(section).query::<String>(con) {
        Ok(text) => text,
        Err(e) => panic!("INFO {section} failed: {e}"),
    }
}

/// One field of an `INFO` text, None when missing.
pub fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_string)
    })
}

/// One integer field of `INFO section`; panics when missing or not an integer.
#[track_caller]
pub fn info_int(con: &mut Connection, section: &str, field: &str) -> i64 {
    let text = info(con, section);
    match info_value(&text, field).and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => panic!("INFO {section} has no integer {field}:\n{text}"),
    }
}

/// How many times the server executed `command` (any case), from `INFO commandstats`; 0
/// when never.
#[track_caller]
pub fn calls(con: &mut Connection, command: &str) -> u64 {
    let text = info(con, "commandstats");
    // Redis 7 names module commands as registered: `cmdstat_LOCK.RENEW`.
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    text.lines()
        .find_map(|line| {
            let line = line.trim_end();
            let head = line.get(..prefix.len())?;
            (head.to_ascii_lowercase() == prefix).then(|| line[prefix.len()..].to_string())
        })
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The ids of the clients connected to the server (`CLIENT LIST`), the caller's included.
#[track_caller]
pub fn client_ids(con: &mut Connection) -> BTreeSet<String> {
    client_list(con)
        .lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}

/// `CLIENT LIST`'s line of one client, None when it is not connected.
#[track_caller]
pub fn client_line(con: &mut Connection, id: &str) -> Option<String> {
    let field = format!("id={id}");
    client_list(con)
        .lines()
        .find(|line| line.split(' ').any(|f| f == field))
        .map(str::to_string)
}

#[track_caller]
fn client_list(con: &mut Connection) -> String {
    match redis::cmd("CLIENT").arg("LIST").query(con) {
        Ok(list) => list,
        Err(e) => panic!("CLIENT LIST failed: {e}"),
    }
}
