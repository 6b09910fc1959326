//! Thin, safe wrappers over the raw Redis module API: arguments, keys, replies, replication.
//! Nothing here decides anything; it only translates between Redis and the plain-Rust logic.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::ManuallyDrop;
use std::ptr;

use redis_module::raw;

use crate::args::Decimal;
use crate::error::FenceError;
use crate::lease::Lease;
use crate::stock::Stock;
use crate::types;

/// Calls a Redis module API function. Every function used through this macro is checked to
/// be present when the module loads (see `REQUIRED_APIS`), so the lookup cannot fail here.
macro_rules! api {
    ($name:ident) => {{
        // SAFETY: the module refuses to load unless `missing_apis` finds this pointer set,
        // and Redis never changes it afterwards.
        #[allow(unused_unsafe)]
        let f = unsafe { redis_module::raw::$name.unwrap_unchecked() };
        f
    }};
}
pub(crate) use api;

/// Whether each API function this module calls is exported by the running server.
pub fn missing_apis() -> Option<&'static str> {
    macro_rules! require {
        ($($name:ident),* $(,)?) => {
            // SAFETY: reading the API table Redis filled in at load time.
            $(if unsafe { raw::$name }.is_none() { return Some(stringify!($name)); })*
        };
    }
    require!(
        RedisModule_CreateCommand,
        RedisModule_StringPtrLen,
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_ModuleTypeGetType,
        RedisModule_ModuleTypeGetValue,
        RedisModule_ModuleTypeSetValue,
        RedisModule_GetExpire,
        RedisModule_GetAbsExpire,
        RedisModule_SetAbsExpire,
        RedisModule_DeleteKey,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithError,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_ReplyWithMap,
        RedisModule_Replicate,
        RedisModule_ReplicateVerbatim,
        RedisModule_SignalModifiedKey,
        RedisModule_GetContextFlags,
        RedisModule_SetModuleOptions,
        RedisModule_SaveUnsigned,
        RedisModule_SaveSigned,
        RedisModule_SaveStringBuffer,
        RedisModule_LoadUnsigned,
        RedisModule_LoadSigned,
        RedisModule_LoadStringBuffer,
        RedisModule_IsIOError,
        RedisModule_GetContextFromIO,
        RedisModule_EmitAOF,
        RedisModule_DigestAddStringBuffer,
        RedisModule_DigestAddLongLong,
        RedisModule_DigestEndSequence,
        RedisModule_Free,
        RedisModule_Log,
        RedisModule_BlockClient,
        RedisModule_UnblockClient,
        RedisModule_SetDisconnectCallback,
        RedisModule_GetBlockedClientPrivateData,
        RedisModule_GetBlockedClientHandle,
        RedisModule_CreateTimer,
        RedisModule_GetDetachedThreadSafeContext,
        RedisModule_StopTimer,
        RedisModule_GetSelectedDb,
        RedisModule_SelectDb,
        RedisModule_CreateString,
        RedisModule_FreeString,
        RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_SubscribeToServerEvent,
        RedisModule_RegisterInfoFunc,
        RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_StreamAdd,
        RedisModule_StreamDelete,
        RedisModule_StreamTrimByLength,
        RedisModule_ValueLength,
        RedisModule_IsKeysPositionRequest,
        RedisModule_KeyAtPos,
        RedisModule_Call,
        RedisModule_AvoidReplicaTraffic,
        RedisModule_CallReplyInteger,
        RedisModule_CallReplyStringPtr,
        RedisModule_CallReplyLength,
        RedisModule_CallReplyArrayElement,
        RedisModule_FreeCallReply,
        RedisModule_InfoAddFieldCString,
    );
    None
}

/// The command context.
#[derive(Clone, Copy)]
pub struct Ctx(pub *mut raw::RedisModuleCtx);

/// A command's arguments, borrowed from Redis without copying.
pub struct Args {
    argv: *mut *mut raw::RedisModuleString,
    argc: usize,
}

impl Args {
    /// Wraps the `argv`/`argc` pair Redis passes to a command.
    pub fn new(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Self {
        let argc = if argv.is_null() {
            0
        } else {
            usize::try_from(argc).unwrap_or(0)
        };
        Self { argv, argc }
    }

    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.argc
    }

    /// The raw string at `i`, or null past the end.
    pub fn raw(&self, i: usize) -> *mut raw::RedisModuleString {
        if i >= self.argc {
            return ptr::null_mut();
        }
        // SAFETY: Redis passes `argc` valid pointers in `argv`.
        unsafe { *self.argv.add(i) }
    }

    /// The bytes of argument `i` (empty past the end).
    pub fn bytes(&self, i: usize) -> &[u8] {
        string_bytes(self.raw(i))
    }

    /// The bytes of the arguments from `from` on, at most `MAX_OPTION_ARGS` of them, without
    /// allocating. Option parsers read them in order and stop at the first error, and no
    /// command accepts that many option words, so a longer tail is always refused on what it
    /// shows.
    pub fn options(&self, from: usize) -> OptionArgs<'_> {
        let mut items: [&[u8]; MAX_OPTION_ARGS] = [&[]; MAX_OPTION_ARGS];
        let mut len = 0;
        for (slot, i) in items.iter_mut().zip(from..self.argc) {
            *slot = self.bytes(i);
            len += 1;
        }
        OptionArgs { items, len }
    }
}

/// How many option words `Args::options` shows a parser.
pub const MAX_OPTION_ARGS: usize = 12;

/// Option words on the stack.
pub struct OptionArgs<'a> {
    items: [&'a [u8]; MAX_OPTION_ARGS],
    len: usize,
}

impl<'a> OptionArgs<'a> {
    /// The words, in order.
    pub fn as_slice(&self) -> &[&'a [u8]] {
        self.items.get(..self.len).unwrap_or_default()
    }
}

/// The bytes of a Redis string (empty for null).
pub fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len = 0;
    // SAFETY: `s` is a live string owned by Redis for the duration of the call.
    let p = unsafe { api!(RedisModule_StringPtrLen)(s, &mut len) };
    if p.is_null() {
        return &[];
    }
    // SAFETY: Redis returns a pointer to `len` readable bytes.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// What a key holds, as far as this module is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Empty,
    Lock,
    Stock,
    String,
    Stream,
    Other,
}

/// An open key, closed on drop.
pub struct Key {
    ctx: Ctx,
    name: *mut raw::RedisModuleString,
    ptr: *mut raw::RedisModuleKey,
    /// What the key holds, asked of Redis once and kept until something may change it.
    kind: Cell<Option<Kind>>,
}

impl Key {
    /// Opens `name` for reading.
    pub fn read(ctx: Ctx, name: *mut raw::RedisModuleString) -> Self {
        Self::open(ctx, name, raw::REDISMODULE_READ)
    }

    /// Opens `name` for reading and writing.
    pub fn write(ctx: Ctx, name: *mut raw::RedisModuleString) -> Self {
        Self::open(ctx, name, raw::REDISMODULE_READ | raw::REDISMODULE_WRITE)
    }

    fn open(ctx: Ctx, name: *mut raw::RedisModuleString, mode: u32) -> Self {
        // SAFETY: ctx and name come from the running command.
        let ptr = unsafe { api!(RedisModule_OpenKey)(ctx.0, name, mode as c_int) };
        Self {
            ctx,
            name,
            ptr: ptr.cast(),
            kind: Cell::new(None),
        }
    }

    /// The raw key handle (null for a missing key opened for reading). Whatever the caller
    /// does with it may change the key's type, so the kept kind is dropped.
    pub fn raw(&self) -> *mut raw::RedisModuleKey {
        self.kind.set(None);
        self.ptr
    }

    /// What the key holds.
    pub fn kind(&self) -> Kind {
        if let Some(kind) = self.kind.get() {
            return kind;
        }
        let kind = self.ask_kind();
        self.kind.set(Some(kind));
        kind
    }

    fn ask_kind(&self) -> Kind {
        if self.ptr.is_null() {
            return Kind::Empty;
        }
        // SAFETY: the key is open.
        let t = unsafe { api!(RedisModule_KeyType)(self.ptr) } as isize;
        match t {
            raw::REDISMODULE_KEYTYPE_EMPTY => Kind::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
            raw::REDISMODULE_KEYTYPE_STREAM => Kind::Stream,
            raw::REDISMODULE_KEYTYPE_MODULE => {
                // SAFETY: the key is open and holds a module value.
                let mt = unsafe { api!(RedisModule_ModuleTypeGetType)(self.ptr) };
                if mt == types::lock_type() {
                    Kind::Lock
                } else if mt == types::stock_type() {
                    Kind::Stock
                } else {
                    Kind::Other
                }
            }
            _ => Kind::Other,
        }
    }

    fn value<T>(&self) -> *mut T {
        if self.ptr.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: the key is open; callers check the module type first.
        unsafe { api!(RedisModule_ModuleTypeGetValue)(self.ptr).cast::<T>() }
    }

    /// The lease held in this key: `Ok(None)` when empty, `WRONGTYPE` for any other type.
    pub fn lease(&self) -> Result<Option<ManuallyDrop<Lease>>, FenceError> {
        match self.kind() {
            Kind::Empty => Ok(None),
            // SAFETY: the value of a lock key is a block from `Lease::into_raw`, alive while
            // the key is open and unchanged.
            Kind::Lock => Ok(unsafe { Lease::borrow_raw(self.value::<u8>()) }),
            _ => Err(FenceError::WrongType),
        }
    }

    /// The stock held in this key, if it holds one.
    pub fn stock(&mut self) -> Option<&mut Stock> {
        if self.kind() != Kind::Stock {
            return None;
        }
        // SAFETY: the value of a stock key is a `Stock` we boxed.
        unsafe { self.value::<Stock>().as_mut() }
    }

    /// Stores a new lease (the key must be empty or a lock).
    pub fn set_lease(&self, lease: Lease) {
        if self.ptr.is_null() {
            return;
        }
        let p = lease.into_raw().cast::<c_void>();
        self.kind.set(None);
        // SAFETY: the key is open for writing; Redis frees the old value with its type's free.
        let status =
            unsafe { api!(RedisModule_ModuleTypeSetValue)(self.ptr, types::lock_type(), p) };
        if status != raw::REDISMODULE_OK as c_int {
            // SAFETY: Redis did not take the block, so it is still ours.
            drop(unsafe { Lease::from_raw(p.cast()) });
        }
    }

    /// Stores a new stock (the key must be empty or a stock).
    pub fn set_stock(&self, stock: Stock) {
        self.set_value(types::stock_type(), Box::new(stock));
    }

    fn set_value<T>(&self, t: *mut raw::RedisModuleType, value: Box<T>) {
        if self.ptr.is_null() {
            return;
        }
        // Stocks are boxed structs; leases have their own one-block layout (`set_lease`).
        let p = Box::into_raw(value).cast::<c_void>();
        self.kind.set(None);
        // SAFETY: the key is open for writing; Redis frees the old value with its type's free.
        let status = unsafe { api!(RedisModule_ModuleTypeSetValue)(self.ptr, t, p) };
        if status != raw::REDISMODULE_OK as c_int {
            // SAFETY: Redis did not take ownership, so the box is still ours.
            drop(unsafe { Box::from_raw(p.cast::<T>()) });
        }
    }

    /// Milliseconds left before the key expires, or -1 without expiry (or without a value:
    /// Redis 8 must not be asked about an empty key opened for writing).
    pub fn ttl_ms(&self) -> i64 {
        if self.ptr.is_null() || self.kind() == Kind::Empty {
            return -1;
        }
        // SAFETY: the key is open.
        let t = unsafe { api!(RedisModule_GetExpire)(self.ptr) };
        if t < 0 {
            -1
        } else {
            t
        }
    }

    /// The absolute expiry in Unix milliseconds, or -1 without expiry (or without a value).
    pub fn expire_at_ms(&self) -> i64 {
        if self.ptr.is_null() || self.kind() == Kind::Empty {
            return -1;
        }
        // SAFETY: the key is open.
        let t = unsafe { api!(RedisModule_GetAbsExpire)(self.ptr) };
        if t < 0 {
            -1
        } else {
            t
        }
    }

    /// Sets the absolute expiry in Unix milliseconds.
    pub fn set_expire_at_ms(&self, at: i64) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: the key is open for writing and not empty.
        unsafe { api!(RedisModule_SetAbsExpire)(self.ptr, at) };
    }

    /// Deletes the key.
    pub fn delete(&self) {
        if self.ptr.is_null() {
            return;
        }
        self.kind.set(Some(Kind::Empty));
        // SAFETY: the key is open for writing.
        unsafe { api!(RedisModule_DeleteKey)(self.ptr) };
    }

    /// Tells Redis the key changed (WATCH, client-side caching); the module opts out of the
    /// implicit signal so that reads and refused writes do not invalidate anything.
    pub fn signal_modified(&self) {
        // SAFETY: ctx and the key name are live for the command.
        unsafe { api!(RedisModule_SignalModifiedKey)(self.ctx.0, self.name) };
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by `open`, closed once.
            unsafe { api!(RedisModule_CloseKey)(self.ptr) };
        }
    }
}

/// A lock owner on its way to a replica: the client's own argument string (shared, not
/// copied) or bytes kept by the module (a waiter's).
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    Arg(*mut raw::RedisModuleString),
    Bytes(&'a [u8]),
}

impl Owner<'_> {
    /// The owner's bytes.
    pub fn bytes(&self) -> &[u8] {
        match *self {
            Owner::Arg(s) => string_bytes(s),
            Owner::Bytes(b) => b,
        }
    }
}

/// A reply a command handler sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Int(i64),
    Nil,
    Ok,
    /// The handler has already written its reply.
    Sent,
}

/// A token as a Redis integer (tokens never pass `i64::MAX` in practice; clamp rather than wrap).
pub fn token_reply(token: u64) -> Reply {
    Reply::Int(i64::try_from(token).unwrap_or(i64::MAX))
}

impl Ctx {
    /// Sends a handler's result.
    pub fn send(self, result: Result<Reply, FenceError>) {
        // SAFETY: ctx is the live command context.
        unsafe {
            match result {
                Ok(Reply::Int(n)) => {
                    api!(RedisModule_ReplyWithLongLong)(self.0, n);
                }
                Ok(Reply::Nil) => {
                    api!(RedisModule_ReplyWithNull)(self.0);
                }
                Ok(Reply::Ok) => {
                    api!(RedisModule_ReplyWithSimpleString)(self.0, c"OK".as_ptr());
                }
                Ok(Reply::Sent) => {}
                Err(e) => self.reply_error(&e.message()),
            }
        }
    }

    /// Sends an error reply; the text must begin with its code.
    pub fn reply_error(self, msg: &str) {
        let mut buf = Vec::with_capacity(msg.len() + 1);
        buf.extend(msg.bytes().filter(|&b| b != 0 && b != b'\r' && b != b'\n'));
        buf.push(0);
        // SAFETY: buf is NUL-terminated with no interior NUL.
        unsafe { api!(RedisModule_ReplyWithError)(self.0, buf.as_ptr().cast::<c_char>()) };
    }

    /// Starts a map reply of `len` pairs (a flat array under RESP2).
    pub fn reply_map(self, len: usize) {
        // SAFETY: ctx is live.
        unsafe { api!(RedisModule_ReplyWithMap)(self.0, len as std::ffi::c_long) };
    }

    /// Sends a bulk string.
    pub fn reply_bulk(self, bytes: &[u8]) {
        // SAFETY: ctx is live; bytes are readable.
        unsafe {
            api!(RedisModule_ReplyWithStringBuffer)(self.0, bytes.as_ptr().cast(), bytes.len())
        };
    }

    /// Sends a nil.
    pub fn reply_null(self) {
        // SAFETY: ctx is live.
        unsafe { api!(RedisModule_ReplyWithNull)(self.0) };
    }

    /// Sends an integer.
    pub fn reply_int(self, n: i64) {
        // SAFETY: ctx is live.
        unsafe { api!(RedisModule_ReplyWithLongLong)(self.0, n) };
    }

    /// Whether the command came over the master link or from the AOF, the only sources
    /// allowed to send replication-only commands.
    pub fn is_replicated_or_loading(self) -> bool {
        // SAFETY: ctx is live.
        let flags = unsafe { api!(RedisModule_GetContextFlags)(self.0) } as u32;
        flags & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) != 0
    }

    /// Whether the command comes from an ordinary client of a master: not over the master
    /// link, not from the AOF, and not on a replica.
    pub fn is_client_on_master(self) -> bool {
        // SAFETY: ctx is live.
        let flags = unsafe { api!(RedisModule_GetContextFlags)(self.0) } as u32;
        flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
            && flags & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
                == 0
    }

    /// A server setting's value (`CONFIG GET name`), None when it cannot be read.
    pub fn config_get(self, name: &CStr) -> Option<Vec<u8>> {
        // SAFETY: RM_Call with two C strings; the reply (and the element borrowed from it) is
        // freed below.
        unsafe {
            let reply = api!(RedisModule_Call)(
                self.0,
                c"CONFIG".as_ptr(),
                c"cc".as_ptr(),
                c"GET".as_ptr(),
                name.as_ptr(),
            );
            if reply.is_null() {
                return None;
            }
            // A flat name, value array (RESP2).
            let value = api!(RedisModule_CallReplyArrayElement)(reply, 1);
            let mut bytes = None;
            if !value.is_null() {
                let mut len = 0;
                let p = api!(RedisModule_CallReplyStringPtr)(value, &mut len);
                if !p.is_null() {
                    bytes = Some(std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec());
                }
            }
            api!(RedisModule_FreeCallReply)(reply);
            bytes
        }
    }

    /// Replicates a lock's effect: `FENCE.LOCK key owner token expire-at-ms`. Numbers go
    /// as buffers: Redis makes one embedded string of each, where `l` costs two allocations.
    pub fn replicate_lock(
        self,
        key: *mut raw::RedisModuleString,
        owner: Owner<'_>,
        token: u64,
        expire_at: i64,
    ) {
        let token = Decimal::new(i64::try_from(token).unwrap_or(i64::MAX));
        let at = Decimal::new(expire_at);
        let (token, at) = (token.as_bytes(), at.as_bytes());
        let f = api!(RedisModule_Replicate);
        // SAFETY: each format matches its arguments: s=string, b=buffer+len.
        unsafe {
            match owner {
                Owner::Arg(s) => f(
                    self.0,
                    c"FENCE.LOCK".as_ptr(),
                    c"ssbb".as_ptr(),
                    key,
                    s,
                    token.as_ptr().cast::<c_char>(),
                    token.len(),
                    at.as_ptr().cast::<c_char>(),
                    at.len(),
                ),
                Owner::Bytes(b) => f(
                    self.0,
                    c"FENCE.LOCK".as_ptr(),
                    c"sbbb".as_ptr(),
                    key,
                    b.as_ptr().cast::<c_char>(),
                    b.len(),
                    token.as_ptr().cast::<c_char>(),
                    token.len(),
                    at.as_ptr().cast::<c_char>(),
                    at.len(),
                ),
            };
        }
    }

    /// Propagates the running command as it is (for replication-only commands, so a
    /// replica's own AOF gets them too).
    pub fn replicate_verbatim(self) {
        // SAFETY: ctx is live.
        unsafe { api!(RedisModule_ReplicateVerbatim)(self.0) };
    }

    /// Replicates a deletion: `DEL key`.
    pub fn replicate_del(self, key: *mut raw::RedisModuleString) {
        // SAFETY: one string argument.
        unsafe { api!(RedisModule_Replicate)(self.0, c"DEL".as_ptr(), c"s".as_ptr(), key) };
    }

    /// Replicates a stock's scalar state and at most one ledger entry:
    /// `FENCE.STOCK key available fence deducted KEEP|RESET [id quantity]`.
    pub fn replicate_stock(
        self,
        key: *mut raw::RedisModuleString,
        stock: &Stock,
        reset: bool,
        entry: Option<(&[u8], i64)>,
    ) {
        let mode: &[u8] = if reset { b"RESET" } else { b"KEEP" };
        let available = Decimal::new(stock.available);
        let fence = Decimal::new(i64::try_from(stock.fence).unwrap_or(i64::MAX));
        let deducted = Decimal::new(stock.deducted);
        let (a, f, d) = (available.as_bytes(), fence.as_bytes(), deducted.as_bytes());
        let r = api!(RedisModule_Replicate);
        // SAFETY: each format matches its arguments: s=string, b=buffer+len.
        unsafe {
            match entry {
                None => r(
                    self.0,
                    c"FENCE.STOCK".as_ptr(),
                    c"sbbbb".as_ptr(),
                    key,
                    a.as_ptr().cast::<c_char>(),
                    a.len(),
                    f.as_ptr().cast::<c_char>(),
                    f.len(),
                    d.as_ptr().cast::<c_char>(),
                    d.len(),
                    mode.as_ptr().cast::<c_char>(),
                    mode.len(),
                ),
                Some((id, qty)) => {
                    let qty = Decimal::new(qty);
                    let q = qty.as_bytes();
                    r(
                        self.0,
                        c"FENCE.STOCK".as_ptr(),
                        c"sbbbbbb".as_ptr(),
                        key,
                        a.as_ptr().cast::<c_char>(),
                        a.len(),
                        f.as_ptr().cast::<c_char>(),
                        f.len(),
                        d.as_ptr().cast::<c_char>(),
                        d.len(),
                        mode.as_ptr().cast::<c_char>(),
                        mode.len(),
                        id.as_ptr().cast::<c_char>(),
                        id.len(),
                        q.as_ptr().cast::<c_char>(),
                        q.len(),
                    )
                }
            };
        }
    }

    /// Replicates a restock with an id: `FENCE.RESTOCK key available restock-id quantity`.
    pub fn replicate_restock(
        self,
        key: *mut raw::RedisModuleString,
        available: i64,
        id: &[u8],
        quantity: i64,
    ) {
        let (a, q) = (Decimal::new(available), Decimal::new(quantity));
        let (a, q) = (a.as_bytes(), q.as_bytes());
        // SAFETY: s=string, b=buffer+len.
        unsafe {
            api!(RedisModule_Replicate)(
                self.0,
                c"FENCE.RESTOCK".as_ptr(),
                c"sbbb".as_ptr(),
                key,
                a.as_ptr().cast::<c_char>(),
                a.len(),
                id.as_ptr().cast::<c_char>(),
                id.len(),
                q.as_ptr().cast::<c_char>(),
                q.len(),
            )
        };
    }

    /// Replicates a plain string stock's new value: `SET key value KEEPTTL`.
    pub fn replicate_string(self, key: *mut raw::RedisModuleString, value: &[u8]) {
        let keepttl: &[u8] = b"KEEPTTL";
        // SAFETY: s=string, b=buffer+len.
        unsafe {
            api!(RedisModule_Replicate)(
                self.0,
                c"SET".as_ptr(),
                c"sbb".as_ptr(),
                key,
                value.as_ptr().cast::<c_char>(),
                value.len(),
                keepttl.as_ptr().cast::<c_char>(),
                keepttl.len(),
            )
        };
    }

    /// A string key's value read through `GET`, which (unlike `RedisModule_StringDMA`) leaves
    /// the stored object as it is: read-only commands must not re-encode a user's string.
    pub fn get_string(self, key: *mut raw::RedisModuleString) -> Vec<u8> {
        // SAFETY: RM_Call with one string argument; the reply is freed below.
        unsafe {
            let reply = api!(RedisModule_Call)(self.0, c"GET".as_ptr(), c"s".as_ptr(), key);
            if reply.is_null() {
                return Vec::new();
            }
            let mut len = 0;
            let p = api!(RedisModule_CallReplyStringPtr)(reply, &mut len);
            let bytes = if p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
            };
            api!(RedisModule_FreeCallReply)(reply);
            bytes
        }
    }

    /// The last id a stream generated (`XINFO STREAM`'s `last-generated-id`), which may lie past
    /// its last entry; `None` when the key holds no stream.
    pub fn stream_last_id(self, key: *mut raw::RedisModuleString) -> Option<(u64, u64)> {
        // SAFETY: RM_Call with one C string and one string argument; the reply is freed below
        // and its elements are read only while it lives.
        unsafe {
            let reply = api!(RedisModule_Call)(
                self.0,
                c"XINFO".as_ptr(),
                c"cs".as_ptr(),
                c"STREAM".as_ptr(),
                key,
            );
            if reply.is_null() {
                return None;
            }
            let text = |r: *mut raw::RedisModuleCallReply| -> &[u8] {
                let mut len = 0;
                let p = api!(RedisModule_CallReplyStringPtr)(r, &mut len);
                if p.is_null() {
                    &[]
                } else {
                    std::slice::from_raw_parts(p.cast::<u8>(), len)
                }
            };
            let mut found = None;
            let n = api!(RedisModule_CallReplyLength)(reply);
            let mut i = 0;
            while i + 1 < n {
                let name = api!(RedisModule_CallReplyArrayElement)(reply, i);
                if !name.is_null() && text(name) == b"last-generated-id" {
                    let value = api!(RedisModule_CallReplyArrayElement)(reply, i + 1);
                    if !value.is_null() {
                        found = crate::args::parse_stream_id(text(value));
                    }
                    break;
                }
                i += 2;
            }
            api!(RedisModule_FreeCallReply)(reply);
            found
        }
    }

    /// Sets a string key through `SET key value KEEPTTL` (not replicated here).
    pub fn set_string_keepttl(self, key: *mut raw::RedisModuleString, value: &[u8]) {
        // SAFETY: RM_Call with s=string, b=buffer+len, c=C string; the reply is freed.
        unsafe {
            let reply = api!(RedisModule_Call)(
                self.0,
                c"SET".as_ptr(),
                c"sbc".as_ptr(),
                key,
                value.as_ptr().cast::<c_char>(),
                value.len(),
                c"KEEPTTL".as_ptr(),
            );
            if !reply.is_null() {
                api!(RedisModule_FreeCallReply)(reply);
            }
        }
    }

    /// Sends a module keyspace event (`notify-keyspace-events` class `d`) for `key`.
    pub fn notify(self, event: &CStr, key: *mut raw::RedisModuleString) {
        // SAFETY: ctx and key are live; event is a static C string.
        unsafe {
            api!(RedisModule_NotifyKeyspaceEvent)(
                self.0,
                raw::REDISMODULE_NOTIFY_MODULE as c_int,
                event.as_ptr(),
                key,
            )
        };
    }

    /// Writes a warning to the server log.
    pub fn log_warning(self, msg: &str) {
        log(self.0, "warning", msg);
    }
}

/// Writes to the server log at `level` ("warning", "notice", ...).
pub fn log(ctx: *mut raw::RedisModuleCtx, level: &str, msg: &str) {
    let level: Vec<u8> = level.bytes().chain(std::iter::once(0)).collect();
    let msg: Vec<u8> = msg
        .bytes()
        .filter(|&b| b != 0)
        .chain(std::iter::once(0))
        .collect();
    // SAFETY: both strings are NUL-terminated; "%s" keeps the message from being a format.
    unsafe {
        api!(RedisModule_Log)(
            ctx,
            level.as_ptr().cast(),
            c"%s".as_ptr(),
            msg.as_ptr().cast::<c_char>(),
        )
    };
}
