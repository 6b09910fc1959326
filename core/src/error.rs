//! One error enum for every refusal the module sends, and the reply strings as constants.
//!
//! Every reply string begins with its error code (`ERR`, `WRONGTYPE`, `STALE`) because Redis
//! sends module errors verbatim.

use std::borrow::Cow;
use std::fmt;

/// The codes replies begin with: what a client matches (`RedisError::code`).
pub mod code {
    /// Every refusal but a wrong type and a stale token.
    pub const ERR: &str = "ERR";
    /// A key of another type (Redis's own code).
    pub const WRONGTYPE: &str = "WRONGTYPE";
    /// A fencing token below the highest one the stock accepted.
    pub const STALE: &str = "STALE";
    /// `STOCK.CONFIRM` of a hold whose deadline passed: its units went back.
    pub const EXPIRED: &str = "EXPIRED";
    /// `STOCK.CONFIRM` of a request that was refunded.
    pub const REFUNDED: &str = "REFUNDED";
    /// A deduction that would take a buyer past the stock's limit per buyer.
    pub const LIMIT: &str = "LIMIT";
    /// A cart item whose key does not exist.
    pub const NOKEY: &str = "NOKEY";
    /// A cart item whose stock's ledger is full.
    pub const LEDGERFULL: &str = "LEDGERFULL";
    /// A cart item whose stock has too few units.
    pub const SOLDOUT: &str = "SOLDOUT";
}

/// The most items a cart holds.
pub const MAX_CART_ITEMS: i64 = 256;

/// `numkeys` outside 1..=`MAX_CART_ITEMS`, or more than the arguments hold.
pub const NUMKEYS_RANGE: &str = "ERR numkeys must be an integer from 1 to 256";

/// A cart without `ID`.
pub const CART_NEEDS_ID: &str =
    "ERR STOCK.CART needs ID: a cart is recorded in each stock's ledger under its request id";

/// A key named twice in one cart.
pub fn repeated_key(key: &str) -> String {
    format!("ERR key {key} appears twice in the cart")
}

/// A request id that some of a cart's stocks know and others do not.
pub fn partial_cart(id: &str, index: usize, key: &str) -> String {
    format!(
        "ERR request {id} is in the ledger of some of the cart's stocks only (item {index} \
         {key} has it)"
    )
}

/// Why a cart item was refused (`<CODE> <index> <key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartCode {
    NoKey,
    Stale,
    LedgerFull,
    Limit,
    SoldOut,
}

impl CartCode {
    pub fn as_str(self) -> &'static str {
        match self {
            CartCode::NoKey => code::NOKEY,
            CartCode::Stale => code::STALE,
            CartCode::LedgerFull => code::LEDGERFULL,
            CartCode::Limit => code::LIMIT,
            CartCode::SoldOut => code::SOLDOUT,
        }
    }
}

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
/// A `LOCK.ACQUIRE … WAIT` still waiting when this server stopped being a master (failover,
/// `REPLICAOF`): word for word what Redis itself answers its blocked clients then, so a client
/// handles one error whichever server (Redis, or Valkey 9, which leaves module waiters
/// blocked in a cluster failover) it runs against.
pub const UNBLOCKED_NOT_MASTER: &str =
    "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)";
/// `MAXLEN` without a non-negative integer.
pub const BAD_MAXLEN: &str = "ERR MAXLEN needs an integer of 0 or more";

/// `HOLD` without `ID`.
pub const HOLD_NEEDS_ID: &str =
    "ERR HOLD needs ID: a hold lives in the request ledger under its request id";

/// `BUYER` without `ID`.
pub const BUYER_NEEDS_ID: &str =
    "ERR BUYER needs ID: a buyer's units are counted from the request ledger";

/// A `LIMIT` or `STOCK.LIMIT` value outside 0..=`i64::MAX`.
pub const LIMIT_RANGE: &str = "ERR limit must be an integer from 0 to 9223372036854775807";

/// More option words than any valid call has.
pub fn too_many_options(max: usize) -> String {
    format!("ERR too many options (at most {max} option words)")
}

/// A deduction without `BUYER` on a stock that limits each buyer to `limit` units.
pub fn buyer_required(limit: i64) -> String {
    format!("ERR this stock limits each buyer to {limit} units: STOCK.DEDUCT needs BUYER")
}

/// A stock recording `max` buyers (`fence.max-buyers`).
pub fn buyers_full(max: i64) -> String {
    format!(
        "ERR buyer table is full ({max} buyers, fence.max-buyers): start a new sale with \
         STOCK.SET or raise the limit"
    )
}

/// A deduction that would take `buyer` (holding `has`) past `max` units.
pub fn limit_reached(buyer: &str, has: i64, max: i64) -> String {
    format!("{} buyer {buyer} has {has} of at most {max}", code::LIMIT)
}

/// A `HOLD ms` outside 1..=`max` (`fence.max-hold-ms`).
pub fn hold_range(max: i64) -> String {
    format!("ERR hold ms must be an integer from 1 to {max} (fence.max-hold-ms)")
}

/// `STOCK.CONFIRM` of a hold that expired at `at` (Unix ms): its units went back.
pub fn expired(id: &str, at: u64) -> String {
    format!("{} request {id} expired at {at}", code::EXPIRED)
}

/// `STOCK.CONFIRM` of a request that was refunded.
pub fn refunded(id: &str) -> String {
    format!("{} request {id} was refunded", code::REFUNDED)
}

/// Wrong number of arguments for `command` (in lower case), as Redis itself words it.
pub fn arity(command: &str) -> String {
    format!("ERR wrong number of arguments for '{command}' command")
}

/// A `ttl-ms` outside 1..=`max` (`fence.max-ttl-ms`).
pub fn ttl_range(max: i64) -> String {
    format!("ERR ttl-ms must be an integer from 1 to {max} (fence.max-ttl-ms)")
}

/// A `WAIT timeout-ms` outside 0..=`max`.
pub fn timeout_range(max: i64) -> String {
    format!("ERR timeout-ms must be an integer from 0 to {max}")
}

/// A `quantity` outside `min`..=`i64::MAX`.
pub fn quantity_range(min: i64) -> String {
    format!("ERR quantity must be an integer from {min} to {}", i64::MAX)
}

/// An empty owner or id.
pub fn empty_name(name: Name) -> String {
    format!("ERR {} must not be empty", name.as_str())
}

/// An owner or id longer than `max` bytes (`fence.max-id-length`).
pub fn name_too_long(name: Name, max: i64) -> String {
    format!(
        "ERR {} is longer than {max} bytes (fence.max-id-length)",
        name.as_str()
    )
}

/// A fencing token below the highest accepted one.
pub fn stale(token: u64, highest: u64) -> String {
    format!(
        "{} fencing token {token} is below the highest accepted token {highest}",
        code::STALE
    )
}

/// An option the command does not know (as the client spelled it).
pub fn unknown_option(option: &str) -> String {
    format!("ERR unknown option '{option}'")
}

/// An option given twice.
pub fn repeated_option(option: &str) -> String {
    format!("ERR option '{option}' given more than once")
}

/// An option without its value.
pub fn missing_value(option: &str) -> String {
    format!("ERR option '{option}' needs a value")
}

/// A request ledger holding `max` ids (`fence.max-ledger-entries`).
pub fn ledger_full(max: i64) -> String {
    format!(
        "ERR request ledger is full ({max} entries, fence.max-ledger-entries): start a new \
         sale with STOCK.SET or raise the limit"
    )
}

/// A restock ledger holding `max` ids (`fence.max-ledger-entries`).
pub fn restocks_full(max: i64) -> String {
    format!(
        "ERR restock ledger is full ({max} entries, fence.max-ledger-entries): start a new \
         sale with STOCK.SET or raise the limit"
    )
}

/// A write the eviction policy `policy` could undo, while `fence.allow-eviction` is `no`.
pub fn eviction_risk(policy: &str) -> String {
    format!(
        "ERR maxmemory-policy {} can evict this key; set fence.allow-eviction yes to accept \
         that",
        printable(policy.as_bytes())
    )
}

/// A malformed replication-only command.
pub fn bad_internal(what: &str) -> String {
    format!("ERR malformed replication command: {what}")
}

/// Which user-supplied name a length or emptiness error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Owner,
    RequestId,
    RestockId,
    BuyerId,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Owner => "owner",
            Name::RequestId => "request id",
            Name::RestockId => "restock id",
            Name::BuyerId => "buyer id",
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
    /// Redis refused what the module asked of it (blocking a client, a subscription).
    Internal(String),
    HoldNeedsId,
    /// `HOLD ms` outside 1..=max.
    HoldRange {
        max: i64,
    },
    /// `STOCK.CONFIRM` of an expired hold; the id as `printable` shows it.
    Expired {
        id: String,
        at: u64,
    },
    /// `STOCK.CONFIRM` of a refunded request; the id as `printable` shows it.
    Refunded {
        id: String,
    },
    BuyerNeedsId,
    /// A `LIMIT` value outside 0..=i64::MAX.
    LimitRange,
    /// More than `max` option words.
    TooManyOptions {
        max: usize,
    },
    /// A deduction without `BUYER` on a stock with a limit.
    BuyerRequired {
        limit: i64,
    },
    /// The stock records `fence.max-buyers` buyers.
    BuyersFull {
        max: i64,
    },
    /// The buyer (as `printable` shows it) holds `has` units; the limit is `max`.
    Limit {
        buyer: String,
        has: i64,
        max: i64,
    },
    /// A cart's `numkeys` out of range.
    NumKeys,
    /// A key named twice in a cart (as `printable` shows it).
    RepeatedKey(String),
    CartNeedsId,
    /// A cart item refused: its code, index (from 1) and key (as `printable` shows it).
    CartItem {
        code: CartCode,
        index: usize,
        key: String,
    },
    /// A request id only some of a cart's stocks know; the first that does.
    PartialCart {
        id: String,
        index: usize,
        key: String,
    },
}

impl FenceError {
    /// The reply text, code first.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            FenceError::Arity(cmd) => arity(cmd).into(),
            FenceError::WrongType => WRONGTYPE.into(),
            FenceError::NotInteger => NOT_INTEGER.into(),
            FenceError::Ttl { max } => ttl_range(*max).into(),
            FenceError::Timeout { max } => timeout_range(*max).into(),
            FenceError::MaxLen => BAD_MAXLEN.into(),
            FenceError::StreamFull => STREAM_FULL.into(),
            FenceError::Quantity { min } => quantity_range(*min).into(),
            FenceError::EmptyName(name) => empty_name(*name).into(),
            FenceError::NameTooLong { name, max } => name_too_long(*name, *max).into(),
            FenceError::TokenNotPositive => TOKEN_NOT_POSITIVE.into(),
            FenceError::TokenFromFuture => TOKEN_FROM_FUTURE.into(),
            FenceError::Stale { token, highest } => stale(*token, *highest).into(),
            FenceError::UnknownOption(opt) => unknown_option(opt).into(),
            FenceError::RepeatedOption(opt) => repeated_option(opt).into(),
            FenceError::MissingValue(opt) => missing_value(opt).into(),
            FenceError::Overflow => OVERFLOW.into(),
            FenceError::LedgerFull { max } => ledger_full(*max).into(),
            FenceError::RestocksFull { max } => restocks_full(*max).into(),
            FenceError::NeedsStock => NEEDS_STOCK.into(),
            FenceError::InternalOnly => INTERNAL_ONLY.into(),
            FenceError::EvictionRisk { policy } => eviction_risk(policy).into(),
            FenceError::BadInternal(what) => bad_internal(what).into(),
            FenceError::ClockExhausted => CLOCK_EXHAUSTED.into(),
            FenceError::Internal(what) => format!("ERR {what}").into(),
            FenceError::HoldNeedsId => HOLD_NEEDS_ID.into(),
            FenceError::HoldRange { max } => hold_range(*max).into(),
            FenceError::Expired { id, at } => expired(id, *at).into(),
            FenceError::Refunded { id } => refunded(id).into(),
            FenceError::BuyerNeedsId => BUYER_NEEDS_ID.into(),
            FenceError::LimitRange => LIMIT_RANGE.into(),
            FenceError::TooManyOptions { max } => too_many_options(*max).into(),
            FenceError::BuyerRequired { limit } => buyer_required(*limit).into(),
            FenceError::BuyersFull { max } => buyers_full(*max).into(),
            FenceError::Limit { buyer, has, max } => limit_reached(buyer, *has, *max).into(),
            FenceError::NumKeys => NUMKEYS_RANGE.into(),
            FenceError::RepeatedKey(key) => repeated_key(key).into(),
            FenceError::CartNeedsId => CART_NEEDS_ID.into(),
            FenceError::CartItem { code, index, key } => {
                format!("{} {index} {key}", code.as_str()).into()
            }
            FenceError::PartialCart { id, index, key } => partial_cart(id, *index, key).into(),
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
            FenceError::Internal("cannot block this client".into()),
            FenceError::HoldNeedsId,
            FenceError::HoldRange { max: 5 },
            FenceError::Expired {
                id: "o1".into(),
                at: 5,
            },
            FenceError::Refunded { id: "o1".into() },
            FenceError::BuyerNeedsId,
            FenceError::LimitRange,
            FenceError::TooManyOptions { max: 16 },
            FenceError::BuyerRequired { limit: 1 },
            FenceError::BuyersFull { max: 1 },
            FenceError::Limit {
                buyer: "user 7".into(),
                has: 1,
                max: 1,
            },
            FenceError::NumKeys,
            FenceError::RepeatedKey("k".into()),
            FenceError::CartNeedsId,
            FenceError::CartItem {
                code: CartCode::NoKey,
                index: 1,
                key: "k".into(),
            },
            FenceError::CartItem {
                code: CartCode::LedgerFull,
                index: 1,
                key: "k".into(),
            },
            FenceError::CartItem {
                code: CartCode::SoldOut,
                index: 3,
                key: "k".into(),
            },
            FenceError::PartialCart {
                id: "o".into(),
                index: 2,
                key: "k".into(),
            },
        ];
        for e in all {
            let m = e.message();
            assert!(
                [
                    "ERR ",
                    "WRONGTYPE ",
                    "STALE ",
                    "EXPIRED ",
                    "REFUNDED ",
                    "LIMIT ",
                    "NOKEY ",
                    "LEDGERFULL ",
                    "SOLDOUT "
                ]
                .iter()
                .any(|c| m.starts_with(c)),
                "{m}"
            );
            assert!(
                !m.contains('\n') && !m.contains('\r') && !m.contains('\0'),
                "{m}"
            );
        }
    }

    #[test]
    fn limit_names_the_buyer_and_both_counts() {
        let m = FenceError::Limit {
            buyer: "user 7".into(),
            has: 2,
            max: 3,
        }
        .message();
        assert_eq!(m, "LIMIT buyer user 7 has 2 of at most 3");
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
    fn codes_begin_their_replies() {
        assert!(WRONGTYPE.starts_with(&format!("{} ", code::WRONGTYPE)));
        assert!(stale(1, 2).starts_with(&format!("{} ", code::STALE)));
        for m in [NOT_INTEGER, NEEDS_STOCK, OVERFLOW, PANIC, BAD_MAXLEN] {
            assert!(m.starts_with(&format!("{} ", code::ERR)), "{m}");
        }
    }

    /// The texts the builders make, pinned: tests and clients compare replies with them.
    #[test]
    fn built_messages_keep_their_text() {
        assert_eq!(
            arity("lock.acquire"),
            "ERR wrong number of arguments for 'lock.acquire' command"
        );
        assert_eq!(
            ttl_range(1000),
            "ERR ttl-ms must be an integer from 1 to 1000 (fence.max-ttl-ms)"
        );
        assert_eq!(
            timeout_range(5),
            "ERR timeout-ms must be an integer from 0 to 5"
        );
        assert_eq!(
            quantity_range(0),
            "ERR quantity must be an integer from 0 to 9223372036854775807"
        );
        assert_eq!(
            empty_name(Name::RestockId),
            "ERR restock id must not be empty"
        );
        assert_eq!(
            name_too_long(Name::Owner, 512),
            "ERR owner is longer than 512 bytes (fence.max-id-length)"
        );
        assert_eq!(unknown_option("X"), "ERR unknown option 'X'");
        assert_eq!(
            repeated_option("ID"),
            "ERR option 'ID' given more than once"
        );
        assert_eq!(missing_value("ID"), "ERR option 'ID' needs a value");
        assert_eq!(
            ledger_full(3),
            "ERR request ledger is full (3 entries, fence.max-ledger-entries): start a new \
             sale with STOCK.SET or raise the limit"
        );
        assert_eq!(
            restocks_full(0),
            "ERR restock ledger is full (0 entries, fence.max-ledger-entries): start a new \
             sale with STOCK.SET or raise the limit"
        );
        assert_eq!(bad_internal("x"), "ERR malformed replication command: x");
        assert_eq!(expired("o1", 17), "EXPIRED request o1 expired at 17");
        assert_eq!(refunded("o1"), "REFUNDED request o1 was refunded");
        assert_eq!(
            hold_range(9),
            "ERR hold ms must be an integer from 1 to 9 (fence.max-hold-ms)"
        );
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable(b"ab\r\n\0'"), "ab\\x0d\\x0a\\x00\\x27");
        let long = vec![b'a'; 100];
        assert_eq!(printable(&long).len(), 67);
    }
}
