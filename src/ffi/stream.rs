//! Redis Streams, for the `EVENTS` option: adding an entry with an automatic id, taking it
//! back, trimming, and replicating what was done as `XADD` with the explicit id and an exact
//! `XTRIM`.

use std::ffi::{c_char, c_int};

use redis_module::raw;

use super::api::call;
use super::ctx::{Ctx, OwnedStr, RStr};
use super::key::Key;

/// A stream entry's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

/// An entry added to a stream: its id and its field/value strings (kept for replication).
pub struct Entry<'c> {
    pub id: StreamId,
    strings: Vec<OwnedStr<'c>>,
}

/// Adds an entry with `fields` (name, value) and an automatic id; `None` when the stream can
/// take no more ids (nothing changed then). The key must be open for writing and empty or a
/// stream.
pub fn add<'c>(ctx: &Ctx<'c>, key: &mut Key<'_>, fields: &[(&[u8], &[u8])]) -> Option<Entry<'c>> {
    let strings: Vec<OwnedStr<'c>> = fields
        .iter()
        .flat_map(|(f, v)| [*f, *v])
        .map(|b| ctx.string(b))
        .collect();
    let raws: Vec<*mut raw::RedisModuleString> =
        strings.iter().map(|s| s.as_rstr().raw()).collect();
    let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
    let status = call!(RedisModule_StreamAdd(
        key.raw(),
        raw::REDISMODULE_STREAM_ADD_AUTOID as c_int,
        &mut id,
        raws.as_ptr().cast_mut(),
        fields.len() as i64
    ));
    if status != raw::REDISMODULE_OK as c_int {
        return None;
    }
    Some(Entry {
        id: StreamId {
            ms: id.ms,
            seq: id.seq,
        },
        strings,
    })
}

/// Deletes the entry `id` (an entry just added, taken back).
pub fn delete(key: &mut Key<'_>, id: StreamId) {
    let mut id = raw::RedisModuleStreamID {
        ms: id.ms,
        seq: id.seq,
    };
    call!(RedisModule_StreamDelete(key.raw(), &mut id));
}

/// Trims to `maxlen` entries (about that many when `approx`); returns how many went.
pub fn trim(key: &mut Key<'_>, maxlen: i64, approx: bool) -> i64 {
    let flags = if approx {
        raw::REDISMODULE_STREAM_TRIM_APPROX as c_int
    } else {
        0
    };
    call!(RedisModule_StreamTrimByLength(key.raw(), flags, maxlen))
}

/// Replicates an added entry as `XADD key <id> field value ...`.
pub fn replicate_add(ctx: &Ctx<'_>, name: RStr<'_>, entry: &Entry<'_>) {
    let id = format!("{}-{}", entry.id.ms, entry.id.seq);
    let raws: Vec<*mut raw::RedisModuleString> =
        entry.strings.iter().map(|s| s.as_rstr().raw()).collect();
    call!(RedisModule_Replicate(
        ctx.raw(),
        c"XADD".as_ptr(),
        c"sbv".as_ptr(),
        name.raw(),
        id.as_ptr().cast::<c_char>(),
        id.len(),
        raws.as_ptr(),
        raws.len()
    ));
}

/// Replicates a trim as the exact `XTRIM key MAXLEN = <left>` this server kept.
pub fn replicate_trim(ctx: &Ctx<'_>, name: RStr<'_>, left: usize) {
    let left = left.to_string();
    call!(RedisModule_Replicate(
        ctx.raw(),
        c"XTRIM".as_ptr(),
        c"sccb".as_ptr(),
        name.raw(),
        c"MAXLEN".as_ptr(),
        c"=".as_ptr(),
        left.as_ptr().cast::<c_char>(),
        left.len()
    ));
}
