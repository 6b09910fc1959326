//! Contexts, strings, arguments, replies, replication and the few Redis commands the module
//! runs itself (`RM_Call`).

use std::ffi::{c_char, c_int, c_long, CStr};
use std::marker::PhantomData;

use fence_core::args::{parse_stream_id, Decimal};
use fence_core::effects::{Arg, Encoded, MAX_ARGS};
use fence_core::error::FenceError;
use redis_module::raw;

use super::api::call;

/// A Redis string the module borrows (an argument, a key name in a callback).
#[derive(Clone, Copy)]
pub struct RStr<'a> {
    ptr: *mut raw::RedisModuleString,
    _life: PhantomData<&'a ()>,
}

impl<'a> RStr<'a> {
    /// Wraps a string Redis keeps alive for `'a` (the callback or command it came with).
    pub(super) fn new(ptr: *mut raw::RedisModuleString) -> RStr<'a> {
        RStr {
            ptr,
            _life: PhantomData,
        }
    }

    pub(super) fn raw(&self) -> *mut raw::RedisModuleString {
        self.ptr
    }

    /// The string's bytes (empty for none).
    pub fn bytes(&self) -> &'a [u8] {
        bytes_of(self.ptr)
    }
}

/// The bytes of a Redis string (empty for null), valid while the string is.
pub(super) fn bytes_of<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len = 0;
    let p = call!(RedisModule_StringPtrLen(s, &mut len));
    if p.is_null() {
        return &[];
    }
    // SAFETY: Redis returns `len` readable bytes that live as long as the string.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// A string the module made, freed when dropped.
pub struct OwnedStr<'c> {
    ctx: *mut raw::RedisModuleCtx,
    ptr: *mut raw::RedisModuleString,
    _life: PhantomData<&'c ()>,
}

impl<'c> OwnedStr<'c> {
    /// Borrows it as an argument-like string.
    pub fn as_rstr(&self) -> RStr<'_> {
        RStr::new(self.ptr)
    }
}

impl Drop for OwnedStr<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            call!(RedisModule_FreeString(self.ctx, self.ptr));
        }
    }
}

/// A command's arguments, borrowed from Redis without copying.
pub struct Args<'a> {
    argv: *mut *mut raw::RedisModuleString,
    argc: usize,
    _life: PhantomData<&'a ()>,
}

/// How many option words `Args::options` shows a parser: more than any valid call has
/// (`fence_core::args::MAX_DEDUCT_WORDS`).
pub const MAX_OPTION_ARGS: usize = fence_core::args::MAX_OPTION_WORDS;

/// Option words on the stack.
pub struct OptionArgs<'a> {
    items: [&'a [u8]; MAX_OPTION_ARGS],
    len: usize,
    /// More words followed than `MAX_OPTION_ARGS`.
    cut: bool,
}

impl<'a> OptionArgs<'a> {
    /// The words, in order.
    pub fn as_slice(&self) -> &[&'a [u8]] {
        self.items.get(..self.len).unwrap_or_default()
    }

    /// The words, or `TooManyOptions` when the call had more than `MAX_OPTION_ARGS` of them
    /// (none of which is then read).
    pub fn all(&self) -> Result<&[&'a [u8]], fence_core::error::FenceError> {
        if self.cut {
            return Err(fence_core::error::FenceError::TooManyOptions {
                max: MAX_OPTION_ARGS,
            });
        }
        Ok(self.as_slice())
    }
}

impl<'a> Args<'a> {
    pub(super) fn new(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Args<'a> {
        let argc = if argv.is_null() {
            0
        } else {
            usize::try_from(argc).unwrap_or(0)
        };
        Args {
            argv,
            argc,
            _life: PhantomData,
        }
    }

    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.argc
    }

    /// Argument `i` (a null string past the end, whose bytes are empty).
    pub fn get(&self, i: usize) -> RStr<'a> {
        if i >= self.argc {
            return RStr::new(std::ptr::null_mut());
        }
        // SAFETY: Redis passes `argc` valid pointers in `argv`.
        RStr::new(unsafe { *self.argv.add(i) })
    }

    /// The bytes of argument `i` (empty past the end).
    pub fn bytes(&self, i: usize) -> &'a [u8] {
        self.get(i).bytes()
    }

    /// The bytes of the arguments from `from` on, at most `MAX_OPTION_ARGS` of them, without
    /// allocating. Option parsers read them in order and stop at the first error, and no
    /// command accepts that many option words, so a longer tail is always refused on what it
    /// shows.
    pub fn options(&self, from: usize) -> OptionArgs<'a> {
        let mut items: [&'a [u8]; MAX_OPTION_ARGS] = [&[]; MAX_OPTION_ARGS];
        let mut len = 0;
        for (slot, i) in items.iter_mut().zip(from..self.argc) {
            *slot = self.bytes(i);
            len += 1;
        }
        let cut = self.argc.saturating_sub(from) > MAX_OPTION_ARGS;
        OptionArgs { items, len, cut }
    }

    /// Every argument from `from` on, as bytes.
    pub fn tail(&self, from: usize) -> Vec<&'a [u8]> {
        (from..self.argc).map(|i| self.bytes(i)).collect()
    }
}

/// A value in a map reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(i64),
    Bulk(Vec<u8>),
}

/// What a command answers, built whole before anything is sent (a reply is never sent half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Int(i64),
    Nil,
    Ok,
    /// A map under RESP3, a flat field/value array under RESP2.
    Map(Vec<(&'static str, Field)>),
    /// An array of integers.
    Ints(Vec<i64>),
    /// Nothing now: the client is blocked and is answered later.
    Blocked(Blocked),
    /// Nothing: this was a key-position request (`COMMAND GETKEYS`, cluster routing), answered
    /// with `KeyAtPos`.
    KeysReported(KeysReported),
}

/// Proof that the client was blocked (only `blocked::block` makes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked(pub(super) ());

/// Proof that key positions were reported (only `Ctx::report_keys` makes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysReported(());

/// A token as a Redis integer (the clock's ceiling keeps every token below `i64::MAX`).
pub fn token_reply(token: u64) -> Reply {
    Reply::Int(i64::try_from(token).unwrap_or(i64::MAX))
}

/// A lock owner on its way to a replica: the client's own argument string (shared, not
/// copied) or bytes kept by the module (a waiter's).
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    Arg(RStr<'a>),
    Bytes(&'a [u8]),
}

impl Owner<'_> {
    /// The owner's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Owner::Arg(s) => s.bytes(),
            Owner::Bytes(b) => b,
        }
    }
}

/// A Redis context: a command's, a callback's or a timer's.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    ptr: *mut raw::RedisModuleCtx,
    _life: PhantomData<&'a ()>,
}

impl<'a> Ctx<'a> {
    /// Wraps a context Redis passed in for the duration of a callback.
    pub(super) fn new(ptr: *mut raw::RedisModuleCtx) -> Ctx<'a> {
        Ctx {
            ptr,
            _life: PhantomData,
        }
    }

    pub(super) fn raw(&self) -> *mut raw::RedisModuleCtx {
        self.ptr
    }

    fn flags(&self) -> u32 {
        call!(RedisModule_GetContextFlags(self.ptr)) as u32
    }

    /// Whether this server is a master.
    pub fn is_master(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
    }

    /// Whether the server is loading an RDB or AOF file.
    pub fn is_loading(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_LOADING != 0
    }

    /// Whether a full sync is being loaded beside the old data (`repl-diskless-load swapdb`):
    /// keys opened now are the old data's.
    pub fn is_async_loading(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_ASYNC_LOADING != 0
    }

    /// Whether this server is part of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.flags() & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0
    }

    /// Whether the client may block here (not inside MULTI, Lua or another no-blocking context).
    pub fn may_block(&self) -> bool {
        self.flags()
            & (raw::REDISMODULE_CTX_FLAGS_MULTI
                | raw::REDISMODULE_CTX_FLAGS_LUA
                | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING)
            == 0
    }

    /// Whether the command came over the master link or from the AOF, the only sources
    /// allowed to send replication-only commands.
    pub fn is_replicated_or_loading(&self) -> bool {
        self.flags() & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
            != 0
    }

    /// Whether the command comes from an ordinary client of a master: not over the master
    /// link, not from the AOF, and not on a replica.
    pub fn is_client_on_master(&self) -> bool {
        let flags = self.flags();
        flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
            && flags & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
                == 0
    }

    /// Whether clients' writes are paused (`CLIENT PAUSE`, `FAILOVER`, a cluster manual
    /// failover): Redis then neither runs writes nor deletes expired keys.
    pub fn writes_paused(&self) -> bool {
        call!(RedisModule_AvoidReplicaTraffic()) != 0
    }

    /// The database the context has selected.
    pub fn selected_db(&self) -> i32 {
        call!(RedisModule_GetSelectedDb(self.ptr))
    }

    /// Selects database `db` (timers and callbacks start in 0).
    pub fn select_db(&self, db: i32) {
        call!(RedisModule_SelectDb(self.ptr, db));
    }

    /// A new Redis string holding `bytes`.
    pub fn string(&self, bytes: &[u8]) -> OwnedStr<'a> {
        OwnedStr {
            ctx: self.ptr,
            ptr: call!(RedisModule_CreateString(
                self.ptr,
                bytes.as_ptr().cast::<c_char>(),
                bytes.len()
            )),
            _life: PhantomData,
        }
    }

    /// Sends a handler's result.
    pub fn send(&self, result: Result<Reply, FenceError>) {
        match result {
            Ok(reply) => self.reply(&reply),
            Err(e) => self.reply_error(&e.message()),
        }
    }

    /// Sends a reply.
    pub fn reply(&self, reply: &Reply) {
        match reply {
            Reply::Int(n) => {
                call!(RedisModule_ReplyWithLongLong(self.ptr, *n));
            }
            Reply::Nil => {
                call!(RedisModule_ReplyWithNull(self.ptr));
            }
            Reply::Ok => {
                call!(RedisModule_ReplyWithSimpleString(self.ptr, c"OK".as_ptr()));
            }
            Reply::Map(fields) => {
                call!(RedisModule_ReplyWithMap(self.ptr, fields.len() as c_long));
                for (name, value) in fields {
                    self.reply_bulk(name.as_bytes());
                    match value {
                        Field::Int(n) => {
                            call!(RedisModule_ReplyWithLongLong(self.ptr, *n));
                        }
                        Field::Bulk(b) => self.reply_bulk(b),
                    }
                }
            }
            Reply::Ints(items) => {
                call!(RedisModule_ReplyWithArray(self.ptr, items.len() as c_long));
                for n in items {
                    call!(RedisModule_ReplyWithLongLong(self.ptr, *n));
                }
            }
            Reply::Blocked(_) | Reply::KeysReported(_) => {}
        }
    }

    fn reply_bulk(&self, bytes: &[u8]) {
        call!(RedisModule_ReplyWithStringBuffer(
            self.ptr,
            bytes.as_ptr().cast::<c_char>(),
            bytes.len()
        ));
    }

    /// Sends an error reply; the text must begin with its code.
    pub fn reply_error(&self, msg: &str) {
        let mut buf = Vec::with_capacity(msg.len() + 1);
        buf.extend(msg.bytes().filter(|&b| b != 0 && b != b'\r' && b != b'\n'));
        buf.push(0);
        call!(RedisModule_ReplyWithError(
            self.ptr,
            buf.as_ptr().cast::<c_char>()
        ));
    }

    /// Reports key positions when this is a key-position request (`COMMAND GETKEYS`, cluster
    /// routing, ACL checks): `positions` are argument indexes. None when it is not one.
    pub fn report_keys(&self, positions: &[usize]) -> Option<KeysReported> {
        if call!(RedisModule_IsKeysPositionRequest(self.ptr)) == 0 {
            return None;
        }
        for &pos in positions {
            if let Ok(pos) = c_int::try_from(pos) {
                call!(RedisModule_KeyAtPos(self.ptr, pos));
            }
        }
        Some(KeysReported(()))
    }

    /// Sends a module keyspace event (`notify-keyspace-events` class `d`) for `key`.
    pub fn notify(&self, event: &CStr, key: RStr<'_>) {
        self.notify_class(raw::REDISMODULE_NOTIFY_MODULE, event, key);
    }

    /// Sends a keyspace event of class `class` for `key`.
    pub fn notify_class(&self, class: c_int, event: &CStr, key: RStr<'_>) {
        call!(RedisModule_NotifyKeyspaceEvent(
            self.ptr,
            class,
            event.as_ptr(),
            key.raw()
        ));
    }

    /// Writes a warning to the server log.
    pub fn log_warning(&self, msg: &str) {
        super::api::log(self.ptr, "warning", msg);
    }

    /// Writes a line to the server log at `level`.
    pub fn log(&self, level: &str, msg: &str) {
        super::api::log(self.ptr, level, msg);
    }

    /// Replicates an effect on `key` (see `fence_core::effects`). With `owner`, the owner
    /// (`FENCE.LOCK`'s first argument) goes as that string, shared instead of copied.
    pub fn replicate(&self, key: RStr<'_>, effect: &Encoded<'_>, owner: Option<RStr<'_>>) {
        replicate_args(self.ptr, key, effect, owner);
    }

    /// Propagates the running command as it is (for replication-only commands, so a
    /// replica's own AOF gets them too).
    pub fn replicate_verbatim(&self) {
        call!(RedisModule_ReplicateVerbatim(self.ptr));
    }

    /// Replicates `command key arg...` with every argument a buffer.
    pub fn replicate_command(&self, command: &CStr, key: RStr<'_>, args: &[&[u8]]) {
        let mut strings: Vec<OwnedStr<'_>> = args.iter().map(|a| self.string(a)).collect();
        let mut raws: Vec<*mut raw::RedisModuleString> = Vec::with_capacity(strings.len() + 1);
        raws.push(key.raw());
        raws.extend(strings.iter_mut().map(|s| s.ptr));
        call!(RedisModule_Replicate(
            self.ptr,
            command.as_ptr(),
            c"v".as_ptr(),
            raws.as_ptr(),
            raws.len()
        ));
    }

    /// A string key's value read through `GET`, which (unlike direct access) leaves the stored
    /// object as it is. The key must not be open.
    pub fn get_string(&self, key: RStr<'_>) -> Vec<u8> {
        let reply = call!(RedisModule_Call(
            self.ptr,
            c"GET".as_ptr(),
            c"s".as_ptr(),
            key.raw()
        ));
        let bytes = reply_bytes(reply).map(<[u8]>::to_vec).unwrap_or_default();
        free_reply(reply);
        bytes
    }

    /// Sets a string key through `SET key value KEEPTTL` (not replicated here). The key must
    /// not be open.
    pub fn set_string_keepttl(&self, key: RStr<'_>, value: &[u8]) {
        let reply = call!(RedisModule_Call(
            self.ptr,
            c"SET".as_ptr(),
            c"sbc".as_ptr(),
            key.raw(),
            value.as_ptr().cast::<c_char>(),
            value.len(),
            c"KEEPTTL".as_ptr()
        ));
        free_reply(reply);
    }

    /// The last id a stream generated (`XINFO STREAM`'s `last-generated-id`), which may lie past
    /// its last entry; `None` when the key holds no stream.
    pub fn stream_last_id(&self, key: RStr<'_>) -> Option<(u64, u64)> {
        let reply = call!(RedisModule_Call(
            self.ptr,
            c"XINFO".as_ptr(),
            c"cs".as_ptr(),
            c"STREAM".as_ptr(),
            key.raw()
        ));
        let n = if reply.is_null() {
            0
        } else {
            call!(RedisModule_CallReplyLength(reply))
        };
        let mut found = None;
        let mut i = 0;
        while i + 1 < n {
            let name = call!(RedisModule_CallReplyArrayElement(reply, i));
            if reply_bytes(name) == Some(b"last-generated-id") {
                let value = call!(RedisModule_CallReplyArrayElement(reply, i + 1));
                found = reply_bytes(value).and_then(parse_stream_id);
                break;
            }
            i += 2;
        }
        free_reply(reply);
        found
    }

    /// A server setting's value (`CONFIG GET name`), None when it cannot be read.
    pub fn config_get(&self, name: &CStr) -> Option<Vec<u8>> {
        let reply = call!(RedisModule_Call(
            self.ptr,
            c"CONFIG".as_ptr(),
            c"cc".as_ptr(),
            c"GET".as_ptr(),
            name.as_ptr()
        ));
        // A flat name, value array (RESP2).
        let value = if reply.is_null() {
            std::ptr::null_mut()
        } else {
            call!(RedisModule_CallReplyArrayElement(reply, 1))
        };
        let bytes = reply_bytes(value).map(<[u8]>::to_vec);
        free_reply(reply);
        bytes
    }

    /// The hash slot of `key` and this node's `CLUSTER NODES` text, for deciding whether this
    /// node may create the key now; None when either cannot be read.
    pub fn cluster_view(&self, key: &[u8]) -> Option<(u16, String)> {
        let slot_reply = call!(RedisModule_Call(
            self.ptr,
            c"CLUSTER".as_ptr(),
            c"cb".as_ptr(),
            c"KEYSLOT".as_ptr(),
            key.as_ptr().cast::<c_char>(),
            key.len()
        ));
        let slot = if slot_reply.is_null() {
            None
        } else {
            u16::try_from(call!(RedisModule_CallReplyInteger(slot_reply))).ok()
        };
        free_reply(slot_reply);
        let nodes_reply = call!(RedisModule_Call(
            self.ptr,
            c"CLUSTER".as_ptr(),
            c"c".as_ptr(),
            c"NODES".as_ptr()
        ));
        let nodes = reply_bytes(nodes_reply).map(|b| String::from_utf8_lossy(b).into_owned());
        free_reply(nodes_reply);
        Some((slot?, nodes?))
    }
}

/// The bytes of a call reply or element (None for null).
fn reply_bytes<'r>(reply: *mut raw::RedisModuleCallReply) -> Option<&'r [u8]> {
    if reply.is_null() {
        return None;
    }
    let mut len = 0;
    let p = call!(RedisModule_CallReplyStringPtr(reply, &mut len));
    if p.is_null() {
        return None;
    }
    // SAFETY: Redis returns `len` readable bytes that live as long as the reply.
    Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

fn free_reply(reply: *mut raw::RedisModuleCallReply) {
    if !reply.is_null() {
        call!(RedisModule_FreeCallReply(reply));
    }
}

/// The bytes of one encoded argument.
fn arg_bytes(a: &Arg<'_>) -> (*const c_char, usize) {
    let b = a.bytes();
    (b.as_ptr().cast::<c_char>(), b.len())
}

/// The format strings of `call_with_effect`: "s" (the key) and one "b" per buffer.
const EFFECT_FORMATS: [&CStr; MAX_ARGS + 1] = [
    c"s",
    c"sb",
    c"sbb",
    c"sbbb",
    c"sbbbb",
    c"sbbbbb",
    c"sbbbbbb",
    c"sbbbbbbb",
    c"sbbbbbbbb",
    c"sbbbbbbbbb",
    c"sbbbbbbbbbb",
];

/// Calls a variadic API function (`RedisModule_Replicate`, `RedisModule_EmitAOF`) with
/// `first` (a context or an AOF stream), the command, the format "s" + "b" * n, the key and the
/// effect's n buffers (n at most `MAX_ARGS`, which every effect keeps to). The call always
/// passes `MAX_ARGS` buffers; Redis reads as many as the format names (C variadic arguments
/// past those are never read). Numbers go as buffers: Redis makes one embedded string of
/// each, where `l` costs two allocations. Returns false for more than `MAX_ARGS` arguments.
macro_rules! call_with_effect {
    ($api:ident, $first:expr, $cmd:expr, $key:expr, $a:expr) => {{
        let a = $a;
        let b = |i: usize| a.get(i).map_or((c"".as_ptr(), 0), arg_bytes);
        match EFFECT_FORMATS.get(a.len()) {
            Some(format) => {
                let (p, q, r, s, t, u, v, w) = (b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7));
                let (x, y) = (b(8), b(9));
                call!($api(
                    $first,
                    $cmd,
                    format.as_ptr(),
                    $key,
                    p.0,
                    p.1,
                    q.0,
                    q.1,
                    r.0,
                    r.1,
                    s.0,
                    s.1,
                    t.0,
                    t.1,
                    u.0,
                    u.1,
                    v.0,
                    v.1,
                    w.0,
                    w.1,
                    x.0,
                    x.1,
                    y.0,
                    y.1
                ));
                true
            }
            None => false,
        }
    }};
}

/// Replicates an effect on `key`; the key (and the owner, when given) go as the client's own
/// strings, shared instead of copied.
fn replicate_args(
    ctx: *mut raw::RedisModuleCtx,
    key: RStr<'_>,
    effect: &Encoded<'_>,
    owner: Option<RStr<'_>>,
) {
    let cmd = effect.command.as_ptr();
    let a = effect.args();
    if let (Some(o), 3) = (owner, a.len()) {
        // FENCE.LOCK key owner token expire-at: the owner as the client's argument.
        let b = |i: usize| a.get(i).map_or((c"".as_ptr(), 0), arg_bytes);
        let (t, at) = (b(1), b(2));
        call!(RedisModule_Replicate(
            ctx,
            cmd,
            c"ssbb".as_ptr(),
            key.raw(),
            o.raw(),
            t.0,
            t.1,
            at.0,
            at.1
        ));
        return;
    }
    if !call_with_effect!(RedisModule_Replicate, ctx, cmd, key.raw(), a) {
        let words: Vec<&[u8]> = a.iter().map(Arg::bytes).collect();
        Ctx::new(ctx).replicate_command(effect.command, key, &words);
    }
}

/// `replicate_args` for an AOF rewrite: the same effect, emitted into the rewrite.
pub(super) fn emit_args(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    effect: &Encoded<'_>,
) {
    call_with_effect!(
        RedisModule_EmitAOF,
        aof,
        effect.command.as_ptr(),
        key,
        effect.args()
    );
}

/// Replicates a deletion: `DEL key`.
pub fn replicate_del(ctx: &Ctx<'_>, key: RStr<'_>) {
    call!(RedisModule_Replicate(
        ctx.raw(),
        c"DEL".as_ptr(),
        c"s".as_ptr(),
        key.raw()
    ));
}

/// Replicates a plain string stock's new value: `SET key value KEEPTTL`.
pub fn replicate_set_keepttl(ctx: &Ctx<'_>, key: RStr<'_>, value: &Decimal) {
    let v = value.as_bytes();
    let keepttl: &[u8] = b"KEEPTTL";
    call!(RedisModule_Replicate(
        ctx.raw(),
        c"SET".as_ptr(),
        c"sbb".as_ptr(),
        key.raw(),
        v.as_ptr().cast::<c_char>(),
        v.len(),
        keepttl.as_ptr().cast::<c_char>(),
        keepttl.len()
    ));
}
