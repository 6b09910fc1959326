//! `COMMAND DOCS` and `COMMAND INFO` for every command: summary, complexity, arity, key spec
//! and arguments (set through `crate::ffi::command::set_docs`, Redis 7.0+). A server without
//! that API keeps the plain registration (first key 1, last key 1, step 1).

use std::ffi::CStr;

use crate::ffi::command::{ArgKind, Doc, DocArg, KeyAccess};

const fn key() -> DocArg {
    DocArg {
        name: c"key",
        kind: ArgKind::Key,
        token: None,
        optional: false,
    }
}

const fn string(name: &'static CStr) -> DocArg {
    DocArg {
        name,
        kind: ArgKind::String,
        token: None,
        optional: false,
    }
}

const fn integer(name: &'static CStr) -> DocArg {
    DocArg {
        name,
        kind: ArgKind::Integer,
        token: None,
        optional: false,
    }
}

const fn option(name: &'static CStr, token: &'static CStr, kind: ArgKind) -> DocArg {
    DocArg {
        name,
        kind,
        token: Some(token),
        optional: true,
    }
}

/// An argument after its token that may not be left out (a cart's `ID`).
const fn required(name: &'static CStr, token: &'static CStr, kind: ArgKind) -> DocArg {
    DocArg {
        name,
        kind,
        token: Some(token),
        optional: false,
    }
}

pub const DOCS: &[Doc] = &[
    Doc {
        name: c"LOCK.ACQUIRE",
        summary: c"Takes a lock for an owner and returns its fencing token; nil when another owner holds it (with WAIT, waits in a fair queue).",
        complexity: c"O(1)",
        arity: -4,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), string(c"owner"), integer(c"ttl-ms"), option(c"timeout-ms", c"WAIT", ArgKind::Integer)],
    },
    Doc {
        name: c"LOCK.RENEW",
        summary: c"Resets the TTL of a lock the owner holds (with TOKEN: that grant) and returns its token; nil otherwise.",
        complexity: c"O(1)",
        arity: -4,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[
            key(),
            string(c"owner"),
            integer(c"ttl-ms"),
            option(
                c"token",
                c"TOKEN",
                ArgKind::Integer,
            ),
        ],
    },
    Doc {
        name: c"LOCK.RELEASE",
        summary: c"Frees a lock the owner holds (with TOKEN: that grant) (1) and hands it to the first waiter; 0 otherwise.",
        complexity: c"O(1)",
        arity: -3,
        access: KeyAccess::Delete,
        events_key: false,
        numkeys: false,
        args: &[
            key(),
            string(c"owner"),
            option(
                c"token",
                c"TOKEN",
                ArgKind::Integer,
            ),
        ],
    },
    Doc {
        name: c"LOCK.STATUS",
        summary: c"Returns a lock's owner, token, ttl and waiters; nil when free.",
        complexity: c"O(1)",
        arity: 2,
        access: KeyAccess::Read,
        events_key: false,
        numkeys: false,
        args: &[key()],
    },
    Doc {
        name: c"STOCK.SET",
        summary: c"Creates a stock or starts a new sale: available set, ledger and buyers cleared, fence kept; LIMIT sets the most units each buyer may hold.",
        complexity: c"O(1), plus O(N) to free a ledger of N request ids",
        arity: -3,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"quantity"), option(c"per-buyer", c"LIMIT", ArgKind::Integer)],
    },
    Doc {
        name: c"STOCK.LIMIT",
        summary: c"Sets a stock's limit per buyer without touching its ledger (0: none): 1, or 0 when the key does not exist.",
        complexity: c"O(1)",
        arity: 3,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"per-buyer")],
    },
    Doc {
        name: c"STOCK.BUYER",
        summary: c"Returns the units a buyer holds in a stock's sale (0 for none); nil when the key does not exist.",
        complexity: c"O(1), plus O(N) for N holds due and not yet returned",
        arity: 3,
        access: KeyAccess::Read,
        events_key: false,
        numkeys: false,
        args: &[key(), string(c"buyer-id")],
    },
    Doc {
        name: c"STOCK.ADD",
        summary: c"Adds to a stock's available quantity (with ID: once per restock id) and returns the new quantity.",
        complexity: c"O(1)",
        arity: -3,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[
            key(),
            integer(c"quantity"),
            option(
                c"restock-id",
                c"ID",
                ArgKind::String,
            ),
        ],
    },
    Doc {
        name: c"STOCK.GET",
        summary: c"Returns a stock's available quantity; nil when the key does not exist.",
        complexity: c"O(1)",
        arity: 2,
        access: KeyAccess::Read,
        events_key: false,
        numkeys: false,
        args: &[key()],
    },
    Doc {
        name: c"STOCK.DEDUCT",
        summary: c"Deducts atomically and returns the quantity left; nil when too few are available. ID makes it idempotent, BUYER counts it against the stock's limit per buyer, FENCE refuses stale lock holders.",
        complexity: c"O(1)",
        arity: -3,
        access: KeyAccess::Update,
        events_key: true,
        numkeys: false,
        args: &[
            key(),
            integer(c"quantity"),
            option(c"request-id", c"ID", ArgKind::String),
            option(c"buyer-id", c"BUYER", ArgKind::String),
            option(c"ms", c"HOLD", ArgKind::Integer),
            option(c"token", c"FENCE", ArgKind::Integer),
            option(c"stream-key", c"EVENTS", ArgKind::Key),
            option(c"count", c"MAXLEN", ArgKind::Integer),
        ],
    },
    Doc {
        name: c"STOCK.REFUND",
        summary: c"Returns what a request deducted, exactly once; 0 when there is nothing to return.",
        complexity: c"O(1)",
        arity: -3,
        access: KeyAccess::Update,
        events_key: true,
        numkeys: false,
        args: &[key(), string(c"request-id"), option(c"stream-key", c"EVENTS", ArgKind::Key), option(c"count", c"MAXLEN", ArgKind::Integer)],
    },
    Doc {
        name: c"STOCK.REQUEST",
        summary: c"Returns the quantity a request holds, 0 when refunded or expired, nil when unknown; with DETAIL its state, quantity, deadline and buyer.",
        complexity: c"O(1)",
        arity: -3,
        access: KeyAccess::Read,
        events_key: false,
        numkeys: false,
        args: &[key(), string(c"request-id"), option(c"detail", c"DETAIL", ArgKind::PureToken)],
    },
    Doc {
        name: c"STOCK.CONFIRM",
        summary: c"Confirms a held request (its units stay sold): 1, or 0 when unknown; EXPIRED or REFUNDED when the hold already ended.",
        complexity: c"O(1)",
        arity: 3,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), string(c"request-id")],
    },
    Doc {
        name: c"STOCK.CART",
        summary: c"Deducts from several stocks in one step, all or nothing, under one request id: the quantity left in each, or the first item refused (NOKEY, STALE, LEDGERFULL, LIMIT, SOLDOUT with its index and key).",
        complexity: c"O(N) for N items",
        arity: -6,
        access: KeyAccess::Update,
        events_key: true,
        numkeys: true,
        args: &[
            integer(c"numkeys"),
            key(),
            integer(c"quantity"),
            required(c"request-id", c"ID", ArgKind::String),
            option(c"buyer-id", c"BUYER", ArgKind::String),
            option(c"ms", c"HOLD", ArgKind::Integer),
            option(c"token", c"FENCE", ArgKind::Integer),
            option(c"stream-key", c"EVENTS", ArgKind::Key),
            option(c"count", c"MAXLEN", ArgKind::Integer),
        ],
    },
    Doc {
        name: c"STOCK.CART.REFUND",
        summary: c"Refunds a cart on all its stocks at once: the quantity each got back.",
        complexity: c"O(N) for N items",
        arity: -4,
        access: KeyAccess::Update,
        events_key: true,
        numkeys: true,
        args: &[
            integer(c"numkeys"),
            key(),
            string(c"request-id"),
            option(c"stream-key", c"EVENTS", ArgKind::Key),
            option(c"count", c"MAXLEN", ArgKind::Integer),
        ],
    },
    Doc {
        name: c"STOCK.CART.CONFIRM",
        summary: c"Confirms a cart's holds on all its stocks at once: 1, 0 when unknown; EXPIRED or REFUNDED when an item's hold already ended.",
        complexity: c"O(N) for N items",
        arity: -4,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: true,
        args: &[integer(c"numkeys"), key(), string(c"request-id")],
    },
    Doc {
        name: c"STOCK.INFO",
        summary: c"Returns a stock's available, deducted, requests, fence, restocks, held, held-units, next-deadline, limit and buyers.",
        complexity: c"O(1)",
        arity: 2,
        access: KeyAccess::Read,
        events_key: false,
        numkeys: false,
        args: &[key()],
    },
    Doc {
        name: c"FENCE.LOCK",
        summary: c"Replication only: applies a lock grant decided by the master.",
        complexity: c"O(1)",
        arity: 5,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), string(c"owner"), integer(c"token"), integer(c"expire-at-ms")],
    },
    Doc {
        name: c"FENCE.STOCK",
        summary: c"Replication only: applies a stock change decided by the master.",
        complexity: c"O(N) where N is the number of ledger entries given",
        arity: -6,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"available"), integer(c"fence"), integer(c"deducted"), string(c"mode")],
    },
    Doc {
        name: c"FENCE.RESTOCK",
        summary: c"Replication only: applies a restock with an id decided by the master.",
        complexity: c"O(1)",
        arity: 5,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"available"), string(c"restock-id"), integer(c"quantity")],
    },
    Doc {
        name: c"FENCE.ENTRY",
        summary: c"Replication only: applies a request-ledger entry (deduction, hold, confirmation, refund, expiry) decided by the master.",
        complexity: c"O(1)",
        arity: -8,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"available"), integer(c"fence"), integer(c"deducted"), string(c"request-id"), integer(c"quantity"), string(c"state")],
    },
    Doc {
        name: c"FENCE.EXPIRESTREAM",
        summary: c"Replication only: sets where a stock announces expired holds.",
        complexity: c"O(1)",
        arity: -2,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key()],
    },
    Doc {
        name: c"FENCE.LIMIT",
        summary: c"Replication only: sets a stock's limit per buyer.",
        complexity: c"O(1)",
        arity: 3,
        access: KeyAccess::Update,
        events_key: false,
        numkeys: false,
        args: &[key(), integer(c"per-buyer")],
    },
];
