//! `EVENTS stream-key [MAXLEN [~|=] n]`: the order events a deduction or refund appends to a
//! Redis Stream in the same atomic step. Entries are added first and published (replicated as
//! `XADD` with their explicit ids, announced as `xadd`) only once the whole call succeeds; a
//! trim is replicated as an exact `XTRIM … MAXLEN = <length>`. All of it travels in the same
//! MULTI/EXEC as the stock's own effect, so a replica or an AOF replay never has one without
//! the other.

use std::ffi::{c_char, c_int};

use redis_module::raw;

use crate::args::Events;
use crate::error::FenceError;
use crate::glue::{api, Args, Ctx, Key, Kind};

/// A stream key named in `EVENTS`, opened for writing and checked to hold a stream (or
/// nothing).
pub struct Stream {
    key: Key,
    name: *mut raw::RedisModuleString,
    events: Events,
}

/// An entry added to the stream but not yet published.
pub struct Added {
    id: raw::RedisModuleStreamID,
    strings: Vec<*mut raw::RedisModuleString>,
}

/// The entries one call adds, published together or taken back together.
#[derive(Default)]
pub struct Batch {
    added: Vec<Added>,
}

impl Stream {
    /// Opens the `EVENTS` stream; `options_from` is where the option words begin in `args`.
    /// Any other type: `WRONGTYPE`, before anything changed.
    pub fn open(
        ctx: Ctx,
        args: &Args,
        options_from: usize,
        events: Events,
    ) -> Result<Self, FenceError> {
        let name = args.raw(options_from + events.key_index);
        let key = Key::write(ctx, name);
        if !matches!(key.kind(), Kind::Empty | Kind::Stream) {
            return Err(FenceError::WrongType);
        }
        Ok(Self { key, name, events })
    }

    /// Whether the stream can take `n` more entries. A call that adds more than one entry asks
    /// first: a second entry refused after the first was added would leave the stream's last
    /// id and its entries-added count moved on this server only, even once the first is
    /// taken back.
    pub fn has_room(&self, ctx: Ctx, n: u64) -> bool {
        if self.key.kind() != Kind::Stream {
            return true;
        }
        ctx.stream_last_id(self.name)
            .is_none_or(|last| crate::args::stream_has_room(last, n))
    }

    /// Adds one entry with `fields` (name, value) to `batch`. Fails only when the stream can
    /// take no more ids; the caller then undoes the batch and its own change.
    pub fn add(
        &self,
        ctx: Ctx,
        batch: &mut Batch,
        fields: &[(&[u8], &[u8])],
    ) -> Result<(), FenceError> {
        let strings: Vec<*mut raw::RedisModuleString> = fields
            .iter()
            .flat_map(|(f, v)| [*f, *v])
            // SAFETY: ctx is live; each string is freed when the batch ends.
            .map(|b| unsafe {
                api!(RedisModule_CreateString)(ctx.0, b.as_ptr().cast::<c_char>(), b.len())
            })
            .collect();
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        // SAFETY: the key is open for writing and empty or a stream; argv holds 2 * n strings.
        let status = unsafe {
            api!(RedisModule_StreamAdd)(
                self.key.raw(),
                raw::REDISMODULE_STREAM_ADD_AUTOID as c_int,
                &mut id,
                strings.as_ptr().cast_mut(),
                fields.len() as i64,
            )
        };
        let added = Added { id, strings };
        if status != raw::REDISMODULE_OK as c_int {
            free_strings(ctx, added);
            return Err(FenceError::StreamFull);
        }
        batch.added.push(added);
        Ok(())
    }

    /// Takes back every entry of `batch` (the call failed).
    pub fn undo(&self, ctx: Ctx, batch: Batch) {
        for mut added in batch.added {
            // SAFETY: the key is open for writing; the id was just added.
            unsafe { api!(RedisModule_StreamDelete)(self.key.raw(), &mut added.id) };
            free_strings(ctx, added);
        }
    }

    /// Publishes `batch` (replicated as XADD with explicit ids, announced as `xadd`), then
    /// applies `MAXLEN`.
    pub fn publish(&self, ctx: Ctx, batch: Batch) {
        let any = !batch.added.is_empty();
        for added in batch.added {
            let id_text = format!("{}-{}", added.id.ms, added.id.seq);
            // SAFETY: s=key, b=buffer+len, v=array+count of strings.
            unsafe {
                api!(RedisModule_Replicate)(
                    ctx.0,
                    c"XADD".as_ptr(),
                    c"sbv".as_ptr(),
                    self.name,
                    id_text.as_ptr().cast::<c_char>(),
                    id_text.len(),
                    added.strings.as_ptr(),
                    added.strings.len(),
                );
            }
            free_strings(ctx, added);
        }
        if any {
            self.key.signal_modified();
            self.notify(ctx, c"xadd");
            self.trim(ctx);
        }
    }

    fn notify(&self, ctx: Ctx, event: &std::ffi::CStr) {
        // SAFETY: ctx and the key name are live; the event is a static C string.
        unsafe {
            api!(RedisModule_NotifyKeyspaceEvent)(
                ctx.0,
                raw::REDISMODULE_NOTIFY_STREAM as c_int,
                event.as_ptr(),
                self.name,
            )
        };
    }

    /// Applies `MAXLEN`, replicated as an exact trim to the length this server kept.
    fn trim(&self, ctx: Ctx) {
        let Some(maxlen) = self.events.maxlen else {
            return;
        };
        let flags = if maxlen.approx {
            raw::REDISMODULE_STREAM_TRIM_APPROX as c_int
        } else {
            0
        };
        // SAFETY: the key is open for writing and holds a stream.
        let trimmed =
            unsafe { api!(RedisModule_StreamTrimByLength)(self.key.raw(), flags, maxlen.len) };
        if trimmed <= 0 {
            return;
        }
        // SAFETY: the key is open.
        let left = unsafe { api!(RedisModule_ValueLength)(self.key.raw()) }.to_string();
        // SAFETY: s=key, c=C strings, b=buffer+len.
        unsafe {
            api!(RedisModule_Replicate)(
                ctx.0,
                c"XTRIM".as_ptr(),
                c"sccb".as_ptr(),
                self.name,
                c"MAXLEN".as_ptr(),
                c"=".as_ptr(),
                left.as_ptr().cast::<c_char>(),
                left.len(),
            );
        }
        self.notify(ctx, c"xtrim");
    }
}

fn free_strings(ctx: Ctx, added: Added) {
    for s in added.strings {
        // SAFETY: created in `add`, not used after this (Redis copied what it keeps).
        unsafe { api!(RedisModule_FreeString)(ctx.0, s) };
    }
}

/// Tells Redis where the keys are for a command with an optional `EVENTS` key (cluster
/// routing, ACL key patterns, `COMMAND GETKEYS`): the stock at 1, the stream where `EVENTS`
/// names it. Returns false when this is not a key-position request.
pub fn report_keys(ctx: Ctx, args: &Args, events: Option<(usize, Events)>) -> bool {
    // SAFETY: ctx is live.
    if unsafe { api!(RedisModule_IsKeysPositionRequest)(ctx.0) } == 0 {
        return false;
    }
    // SAFETY: a key-position request; positions are within argv.
    unsafe {
        api!(RedisModule_KeyAtPos)(ctx.0, 1);
        if let Some((from, e)) = events {
            let pos = from + e.key_index;
            if pos < args.len() {
                api!(RedisModule_KeyAtPos)(ctx.0, pos as c_int);
            }
        }
    }
    true
}
