//! `EVENTS stream-key [MAXLEN [~|=] n]`: the order events a deduction or refund appends to a
//! Redis Stream in the same atomic step. The entry is replicated as `XADD` with its explicit
//! id, and a trim as an exact `XTRIM … MAXLEN = <length>`, in the same MULTI/EXEC as the stock's
//! own effect, so a replica or an AOF replay never has one without the other.

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

    /// Appends one entry with `fields` (name, value), replicated as XADD with its id.
    pub fn append(&self, ctx: Ctx, fields: &[(&[u8], &[u8])]) {
        let strings: Vec<*mut raw::RedisModuleString> = fields
            .iter()
            .flat_map(|(f, v)| [*f, *v])
            // SAFETY: ctx is live; each string is freed below.
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
        if status == raw::REDISMODULE_OK as c_int {
            let id_text = format!("{}-{}", id.ms, id.seq);
            // SAFETY: s=key, b=buffer+len, v=array+count of strings.
            unsafe {
                api!(RedisModule_Replicate)(
                    ctx.0,
                    c"XADD".as_ptr(),
                    c"sbv".as_ptr(),
                    self.name,
                    id_text.as_ptr().cast::<c_char>(),
                    id_text.len(),
                    strings.as_ptr(),
                    strings.len(),
                );
            }
            self.key.signal_modified();
        } else {
            ctx.log_warning("fence: could not append an order event to its stream");
        }
        for s in strings {
            // SAFETY: created above, no longer used (Redis copied what it keeps).
            unsafe { api!(RedisModule_FreeString)(ctx.0, s) };
        }
    }

    /// Applies `MAXLEN`, replicated as an exact trim to the length this server kept.
    pub fn trim(&self, ctx: Ctx) {
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
        let left = unsafe { api!(RedisModule_ValueLength)(self.key.raw()) };
        let left = left.to_string();
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
