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

/// Which server a test runs against, told by what the server says it is: Valkey reports
/// `server_name:valkey` and `valkey_version` in `INFO server` (its `redis_version` is the
/// 7.2.4 it forked from, so that field alone misleads); Redis has neither field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    Valkey,
}

/// The server's flavor and its own version (major, minor, patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIdentity {
    pub flavor: Flavor,
    pub version: (u32, u32, u32),
}

impl ServerIdentity {
    pub fn is_valkey(&self) -> bool {
        self.flavor == Flavor::Valkey
    }

    /// Whether this is Redis at `at` or later (false on Valkey, whatever its version).
    pub fn is_redis_at_least(&self, at: (u32, u32)) -> bool {
        self.flavor == Flavor::Redis && (self.version.0, self.version.1) >= at
    }

    /// Whether this is Valkey at `at` or later (false on Redis).
    pub fn is_valkey_at_least(&self, at: (u32, u32)) -> bool {
        self.flavor == Flavor::Valkey && (self.version.0, self.version.1) >= at
    }
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.version;
        write!(f, "{:?} {a}.{b}.{c}", self.flavor)
    }
}

/// What `INFO server` says the server is.
#[track_caller]
pub fn server_identity(con: &mut Connection) -> ServerIdentity {
    identity_from_info(&info(con, "server"))
}

/// [`server_identity`] read from an `INFO server` text.
#[track_caller]
pub fn identity_from_info(text: &str) -> ServerIdentity {
    let name = info_value(text, "server_name").unwrap_or_default();
    let valkey = info_value(text, "valkey_version");
    let (flavor, version) = match valkey {
        Some(v) => (Flavor::Valkey, v),
        None if name.trim().eq_ignore_ascii_case("valkey") => {
            panic!("server_name:valkey without valkey_version in INFO server:\n{text}")
        }
        None => (
            Flavor::Redis,
            info_value(text, "redis_version")
                .unwrap_or_else(|| panic!("no redis_version in INFO server:\n{text}")),
        ),
    };
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>());
    let mut next = || match parts.next() {
        Some(Ok(n)) => n,
        other => panic!("version {version:?} in INFO server is not numeric: {other:?}"),
    };
    ServerIdentity {
        flavor,
        version: (next(), next(), next()),
    }
}
