//! `COMMAND DOCS` and `COMMAND INFO` for every command: summary, complexity, arity, key spec
//! and arguments, through `RedisModule_SetCommandInfo` (Redis 7.0+). A server without that API
//! keeps the plain registration (first key 1, last key 1, step 1).

use std::ffi::{c_char, c_int, CStr};
use std::mem::size_of;
use std::ptr;

use redis_module::raw;

/// One argument of a command's syntax.
struct Arg {
    name: &'static CStr,
    kind: raw::RedisModuleCommandArgType,
    token: Option<&'static CStr>,
    optional: bool,
}

const fn key() -> Arg {
    Arg {
        name: c"key",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
        token: None,
        optional: false,
    }
}

const fn string(name: &'static CStr) -> Arg {
    Arg {
        name,
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        token: None,
        optional: false,
    }
}

const fn integer(name: &'static CStr) -> Arg {
    Arg {
        name,
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
        token: None,
        optional: false,
    }
}

const fn option(
    name: &'static CStr,
    token: &'static CStr,
    kind: raw::RedisModuleCommandArgType,
) -> Arg {
    Arg {
        name,
        kind,
        token: Some(token),
        optional: true,
    }
}

/// One command's documentation.
struct Doc {
    name: &'static CStr,
    summary: &'static CStr,
    complexity: &'static CStr,
    arity: c_int,
    key_flags: u32,
    /// Whether an optional `EVENTS stream-key` names a second key.
    events_key: bool,
    args: &'static [Arg],
}

const RO: u32 = raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS;
const RW: u32 =
    raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_ACCESS | raw::REDISMODULE_CMD_KEY_UPDATE;
// Redis accepts one of INSERT, UPDATE, DELETE: a grant or a new stock may create the key, but
// like SET it is described as an update.
const RW_INSERT: u32 = RW;
const RW_DELETE: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE;
const INT: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER;
const STR: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING;
const KEY: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;

const DOCS: &[Doc] = &[
    Doc {
        name: c"LOCK.ACQUIRE",
        summary: c"Takes a lock for an owner and returns its fencing token; nil when another owner holds it (with WAIT, waits in a fair queue).",
        complexity: c"O(1)",
        arity: -4,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[key(), string(c"owner"), integer(c"ttl-ms"), option(c"timeout-ms", c"WAIT", INT)],
    },
    Doc {
        name: c"LOCK.RENEW",
        summary: c"Resets the TTL of a lock the owner holds (with TOKEN: that grant) and returns its token; nil otherwise.",
        complexity: c"O(1)",
        arity: -4,
        key_flags: RW,
        events_key: false,
        args: &[
            key(),
            string(c"owner"),
            integer(c"ttl-ms"),
            option(
                c"token",
                c"TOKEN",
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ),
        ],
    },
    Doc {
        name: c"LOCK.RELEASE",
        summary: c"Frees a lock the owner holds (with TOKEN: that grant) (1) and hands it to the first waiter; 0 otherwise.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: RW_DELETE,
        events_key: false,
        args: &[
            key(),
            string(c"owner"),
            option(
                c"token",
                c"TOKEN",
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ),
        ],
    },
    Doc {
        name: c"LOCK.STATUS",
        summary: c"Returns a lock's owner, token, ttl and waiters; nil when free.",
        complexity: c"O(1)",
        arity: 2,
        key_flags: RO,
        events_key: false,
        args: &[key()],
    },
    Doc {
        name: c"STOCK.SET",
        summary: c"Creates a stock or starts a new sale: available set, ledger cleared, fence kept.",
        complexity: c"O(1), plus O(N) to free a ledger of N request ids",
        arity: 3,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[key(), integer(c"quantity")],
    },
    Doc {
        name: c"STOCK.ADD",
        summary: c"Adds to a stock's available quantity (with ID: once per restock id) and returns the new quantity.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[
            key(),
            integer(c"quantity"),
            option(
                c"restock-id",
                c"ID",
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ),
        ],
    },
    Doc {
        name: c"STOCK.GET",
        summary: c"Returns a stock's available quantity; nil when the key does not exist.",
        complexity: c"O(1)",
        arity: 2,
        key_flags: RO,
        events_key: false,
        args: &[key()],
    },
    Doc {
        name: c"STOCK.DEDUCT",
        summary: c"Deducts atomically and returns the quantity left; nil when too few are available. ID makes it idempotent, FENCE refuses stale lock holders.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: RW,
        events_key: true,
        args: &[
            key(),
            integer(c"quantity"),
            option(c"request-id", c"ID", STR),
            option(c"token", c"FENCE", INT),
            option(c"stream-key", c"EVENTS", KEY),
            option(c"count", c"MAXLEN", INT),
        ],
    },
    Doc {
        name: c"STOCK.REFUND",
        summary: c"Returns what a request deducted, exactly once; 0 when there is nothing to return.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: RW,
        events_key: true,
        args: &[key(), string(c"request-id"), option(c"stream-key", c"EVENTS", KEY), option(c"count", c"MAXLEN", INT)],
    },
    Doc {
        name: c"STOCK.REQUEST",
        summary: c"Returns the quantity a request holds, 0 when refunded, nil when unknown.",
        complexity: c"O(1)",
        arity: 3,
        key_flags: RO,
        events_key: false,
        args: &[key(), string(c"request-id")],
    },
    Doc {
        name: c"STOCK.INFO",
        summary: c"Returns a stock's available, deducted, requests, fence and restocks.",
        complexity: c"O(1)",
        arity: 2,
        key_flags: RO,
        events_key: false,
        args: &[key()],
    },
    Doc {
        name: c"FENCE.LOCK",
        summary: c"Replication only: applies a lock grant decided by the master.",
        complexity: c"O(1)",
        arity: 5,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[key(), string(c"owner"), integer(c"token"), integer(c"expire-at-ms")],
    },
    Doc {
        name: c"FENCE.STOCK",
        summary: c"Replication only: applies a stock change decided by the master.",
        complexity: c"O(N) where N is the number of ledger entries given",
        arity: -6,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[key(), integer(c"available"), integer(c"fence"), integer(c"deducted"), string(c"mode")],
    },
    Doc {
        name: c"FENCE.RESTOCK",
        summary: c"Replication only: applies a restock with an id decided by the master.",
        complexity: c"O(1)",
        arity: 5,
        key_flags: RW_INSERT,
        events_key: false,
        args: &[key(), integer(c"available"), string(c"restock-id"), integer(c"quantity")],
    },
];

/// Sets the documentation of every command; returns how many got it (0 on a server without
/// `RedisModule_SetCommandInfo`).
pub fn register(ctx: *mut raw::RedisModuleCtx) -> usize {
    // SAFETY: reading the API table Redis filled in at load time.
    let (Some(get), Some(set)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandInfo
    }) else {
        return 0;
    };
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
    };
    let mut done = 0;
    for doc in DOCS {
        // SAFETY: ctx is the load context and the command was registered.
        let command = unsafe { get(ctx, doc.name.as_ptr()) };
        if command.is_null() {
            continue;
        }
        // SAFETY: all-zero is the documented terminator (and a valid value) for these structs.
        let mut spec: [raw::RedisModuleCommandKeySpec; 3] = unsafe { std::mem::zeroed() };
        spec[0].flags = u64::from(doc.key_flags);
        spec[0].begin_search_type =
            raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        spec[0].bs.index.pos = 1;
        spec[0].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        spec[0].fk.range.lastkey = 0;
        spec[0].fk.range.keystep = 1;
        spec[0].fk.range.limit = 0;
        if doc.events_key {
            // The stream after `EVENTS`. Marked incomplete (an ID could itself be the word
            // EVENTS), so Redis asks the command itself for exact positions (getkeys-api).
            spec[1].flags = u64::from(
                raw::REDISMODULE_CMD_KEY_RW
                    | raw::REDISMODULE_CMD_KEY_INSERT
                    | raw::REDISMODULE_CMD_KEY_INCOMPLETE,
            );
            spec[1].begin_search_type =
                raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_KEYWORD;
            spec[1].bs.keyword.keyword = c"EVENTS".as_ptr();
            spec[1].bs.keyword.startfrom = 3;
            spec[1].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
            spec[1].fk.range.lastkey = 0;
            spec[1].fk.range.keystep = 1;
            spec[1].fk.range.limit = 0;
        }
        let mut args: Vec<raw::RedisModuleCommandArg> = doc
            .args
            .iter()
            .map(|a| {
                // SAFETY: as above, zero is a valid start.
                let mut arg: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
                arg.name = a.name.as_ptr();
                arg.type_ = a.kind;
                // The stock is key spec 0; a stream after EVENTS is key spec 1.
                arg.key_spec_index = match (a.kind == KEY, a.token) {
                    (true, None) => 0,
                    (true, Some(_)) => 1,
                    _ => -1,
                };
                arg.token = a.token.map_or(ptr::null(), CStr::as_ptr);
                arg.flags = if a.optional {
                    raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
                } else {
                    0
                };
                arg
            })
            .collect();
        // SAFETY: the terminator.
        args.push(unsafe { std::mem::zeroed() });
        let info = raw::RedisModuleCommandInfo {
            version: &version,
            summary: doc.summary.as_ptr(),
            complexity: doc.complexity.as_ptr(),
            since: c"0.1.0".as_ptr(),
            history: ptr::null_mut(),
            tips: ptr::null::<c_char>(),
            arity: doc.arity,
            key_specs: spec.as_mut_ptr(),
            args: args.as_mut_ptr(),
        };
        // SAFETY: every pointer is valid for the call; Redis copies what it keeps.
        if unsafe { set(command, &info) } == raw::REDISMODULE_OK as c_int {
            done += 1;
        }
    }
    done
}
