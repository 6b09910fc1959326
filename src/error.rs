//! One error enum for every refusal the module sends, and the reply strings as constants.
//!
//! Every reply string begins with its error code (`ERR`, `WRONGTYPE`, `STALE`) because Redis
//! sends module errors verbatim.

use std::borrow::Cow;
use std::fmt;

/// Redis's standard reply for a key of the wrong type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// Redis's own reply for a string that is not an integer (as `INCRBY` sends it).
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// `ID`, `FENCE`, `STOCK.REFUND` or `STOCK.REQUEST` on a plain integer string.
pub const NEEDS_STOCK: &str =
    "ERR this command needs a stock created by STOCK.SET, not a plain string";
/// A `FENCE` value that is not a positive integer.
pub const TOKEN_NOT_POSITIVE: &str = "ERR token must be a positive integer";
/// A `FENCE` value more than 24 hours ahead of the server's clock.
pub const TOKEN_FROM_FUTURE: &str = "ERR token is more than 24 hours ahead of this server's clock";
/// A sum that would pass `i64::MAX`.
pub const OVERFLOW: &str = "ERR stock would pass 9223372036854775807";
/// A replication-only command sent by an ordinary client.
pub const INTERNAL_ONLY: &str =
    "ERR this command is internal: accepted only from the master link or while loading the AOF";
/// The `EVENTS` stream has used its last possible id (native XADD's own message).
pub const STREAM_FULL: &str =
    "ERR The stream has exhausted the last possible ID, unable to add more items";
/// A grant that would need a token past the clock's ceiling (a far-ahead token was loaded).
pub const CLOCK_EXHAUSTED: &str = "ERR the fencing-token clock is at its ceiling: a token far \
     ahead of this server's clock was loaded or replicated (see fence_clock_ahead_ms in INFO \
     fence); no token can be issued without repeating one";
/// A panic caught at the FFI boundary (a bug; the server keeps running).
pub const PANIC: &str = "ERR internal error in the fence module (see the server log)";

/// Which user-supplied name a length or emptiness error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Owner,
    RequestId,
    RestockId,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Owner => "owner",
            Name::RequestId => "request id",
            Name::RestockId => "restock id",
        }
    }
}

/// Every way a command can be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceError {
    /// Wrong number of arguments; holds the command name in lower case.
    Arity(&'static str),
    WrongType,
    NotInteger,
    /// `ttl-ms` outside 1..=max.
    Ttl {
        max: i64,
    },
    /// `WAIT timeout-ms` outside 0..=max.
    Timeout {
        max: i64,
    },
    /// `MAXLEN` without a non-negative integer.
    MaxLen,
    /// The `EVENTS` stream can take no more ids (as native XADD says).
    StreamFull,
    /// `quantity` outside min..=i64::MAX.
    Quantity {
        min: i64,
    },
    EmptyName(Name),
    NameTooLong {
        name: Name,
        max: i64,
    },
    TokenNotPositive,
    TokenFromFuture,
    Stale {
        token: u64,
        highest: u64,
    },
    UnknownOption(String),
    RepeatedOption(&'static str),
    MissingValue(&'static str),
    Overflow,
    LedgerFull {
        max: i64,
    },
    /// The restock ledger holds `fence.max-ledger-entries` ids.
    RestocksFull {
        max: i64,
    },
    NeedsStock,
    InternalOnly,
    /// A write that would create or grow a key the eviction policy (named) may evict, while
    /// `fence.allow-eviction` is `no`.
    EvictionRisk {
        policy: String,
    },
    /// A malformed replication-only command (never sent by a healthy master).
    BadInternal(&'static str),
    /// The token clock is at its ceiling: no new token can be issued.
    ClockExhausted,
}

impl FenceError {
    /// The reply text, code first.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            FenceError::Arity(cmd) => {
                format!("ERR wrong number of arguments for '{cmd}' command").into()
            }
            FenceError::WrongType => WRONGTYPE.into(),
            FenceError::NotInteger => NOT_INTEGER.into(),
            FenceError::Ttl { max } => {
                format!("ERR ttl-ms must be an integer from 1 to {max} (fence.max-ttl-ms)").into()
            }
            FenceError::Timeout { max } => {
                format!("ERR timeout-ms must be an integer from 0 to {max}").into()
            }
            FenceError::MaxLen => "ERR MAXLEN needs an integer of 0 or more".into(),
            FenceError::StreamFull => STREAM_FULL.into(),
            FenceError::Quantity { min } => {
                format!("ERR quantity must be an integer from {min} to {}", i64::MAX).into()
            }
            FenceError::EmptyName(name) => {
                format!("ERR {} must not be empty", name.as_str()).into()
            }
            FenceError::NameTooLong { name, max } => format!(
                "ERR {} is longer than {max} bytes (fence.max-id-length)",
                name.as_str()
            )
            .into(),
            FenceError::TokenNotPositive => TOKEN_NOT_POSITIVE.into(),
            FenceError::TokenFromFuture => TOKEN_FROM_FUTURE.into(),
            FenceError::Stale { token, highest } => {
                format!("STALE fencing token {token} is below the highest accepted token {highest}")
                    .into()
            }
            FenceError::UnknownOption(opt) => format!("ERR unknown option '{opt}'").into(),
            FenceError::RepeatedOption(opt) => {
                format!("ERR option '{opt}' given more than once").into()
            }
            FenceError::MissingValue(opt) => format!("ERR option '{opt}' needs a value").into(),
            FenceError::Overflow => OVERFLOW.into(),
            FenceError::LedgerFull { max } => format!(
                "ERR request ledger is full ({max} entries, fence.max-ledger-entries): \
                 start a new sale with STOCK.SET or raise the limit"
            )
            .into(),
            FenceError::RestocksFull { max } => format!(
                "ERR restock ledger is full ({max} entries, fence.max-ledger-entries): \
                 start a new sale with STOCK.SET or raise the limit"
            )
            .into(),
            FenceError::NeedsStock => NEEDS_STOCK.into(),
            FenceError::InternalOnly => INTERNAL_ONLY.into(),
            FenceError::EvictionRisk { policy } => format!(
                "ERR maxmemory-policy {} can evict this key; set fence.allow-eviction yes to \
                 accept that",
                printable(policy.as_bytes())
            )
            .into(),
            FenceError::BadInternal(what) => {
                format!("ERR malformed replication command: {what}").into()
            }
            FenceError::ClockExhausted => CLOCK_EXHAUSTED.into(),
        }
    }
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for FenceError {}

/// Shows user bytes inside an error reply: printable ASCII kept, the rest escaped, at most 64
/// characters, so a reply can never carry a NUL, a newline or a megabyte of garbage.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(64) {
        if (0x20..0x7f).contains(&b) && b != b'\'' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > 64 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_starts_with_a_code() {
        let all = [
            FenceError::Arity("lock.acquire"),
            FenceError::WrongType,
            FenceError::NotInteger,
            FenceError::Ttl { max: 5 },
            FenceError::Timeout { max: 5 },
            FenceError::MaxLen,
            FenceError::StreamFull,
            FenceError::Quantity { min: 1 },
            FenceError::EmptyName(Name::Owner),
            FenceError::NameTooLong {
                name: Name::RequestId,
                max: 3,
            },
            FenceError::TokenNotPositive,
            FenceError::TokenFromFuture,
            FenceError::Stale {
                token: 1,
                highest: 2,
            },
            FenceError::UnknownOption("X".into()),
            FenceError::RepeatedOption("ID"),
            FenceError::MissingValue("ID"),
            FenceError::Overflow,
            FenceError::LedgerFull { max: 1 },
            FenceError::RestocksFull { max: 1 },
            FenceError::NeedsStock,
            FenceError::InternalOnly,
            FenceError::EvictionRisk {
                policy: "allkeys-lru".into(),
            },
            FenceError::BadInternal("x"),
            FenceError::ClockExhausted,
        ];
        for e in all {
            let m = e.message();
            assert!(
                m.starts_with("ERR ") || m.starts_with("WRONGTYPE ") || m.starts_with("STALE "),
                "{m}"
            );
            assert!(
                !m.contains('\n') && !m.contains('\r') && !m.contains('\0'),
                "{m}"
            );
        }
    }

    #[test]
    fn stale_names_both_tokens() {
        let m = FenceError::Stale {
            token: 5,
            highest: 7,
        }
        .message();
        assert_eq!(
            m,
            "STALE fencing token 5 is below the highest accepted token 7"
        );
    }

    #[test]
    fn eviction_risk_names_the_policy() {
        let m = FenceError::EvictionRisk {
            policy: "volatile-ttl".into(),
        }
        .message();
        assert_eq!(
            m,
            "ERR maxmemory-policy volatile-ttl can evict this key; set fence.allow-eviction \
             yes to accept that"
        );
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable(b"ab\r\n\0'"), "ab\\x0d\\x0a\\x00\\x27");
        let long = vec![b'a'; 100];
        assert_eq!(printable(&long).len(), 67);
    }
}
