//! `EVENTS stream-key [MAXLEN [~|=] n]`: the order events a deduction or refund appends to a
//! Redis Stream in the same atomic step. Entries are added first and published (replicated as
//! `XADD` with their explicit ids, announced as `xadd`) only once the whole call succeeds; a
//! trim is replicated as an exact `XTRIM … MAXLEN = <length>`. All of it travels in the same
//! MULTI/EXEC as the stock's own effect, so a replica or an AOF replay never has one without
//! the other.

use fence_core::args::{stream_has_room, Events};
use fence_core::error::FenceError;
use redis_module::raw;

use crate::ffi::stream::{self, Entry};
use crate::ffi::{Args, Ctx, Key, KeysReported, Kind, RStr};

/// A stream key named in `EVENTS`, opened for writing and checked to hold a stream (or
/// nothing).
pub struct Stream<'k> {
    key: Key<'k>,
    name: RStr<'k>,
    events: Events,
}

/// The entries one call adds, published together or taken back together.
pub struct Batch<'c> {
    added: Vec<Entry<'c>>,
}

impl Batch<'_> {
    pub fn new() -> Self {
        Batch { added: Vec::new() }
    }
}

impl<'k> Stream<'k> {
    /// Opens the `EVENTS` stream; `options_from` is where the option words begin in `args`.
    /// Any other type: `WRONGTYPE`, before anything changed.
    pub fn open(
        ctx: &Ctx<'k>,
        args: &Args<'k>,
        options_from: usize,
        events: Events,
    ) -> Result<Stream<'k>, FenceError> {
        let name = args.get(options_from + events.key_index);
        let key = Key::write(ctx, name);
        if !matches!(key.kind(), Kind::Empty | Kind::Stream) {
            return Err(FenceError::WrongType);
        }
        Ok(Stream { key, name, events })
    }

    /// Whether the stream can take `n` more entries. A call that adds more than one entry asks
    /// first: a second entry refused after the first was added would leave the stream's last
    /// id and its entries-added count moved on this server only, even once the first is
    /// taken back.
    pub fn has_room(&self, ctx: &Ctx<'_>, n: u64) -> bool {
        if self.key.kind() != Kind::Stream {
            return true;
        }
        ctx.stream_last_id(self.name)
            .is_none_or(|last| stream_has_room(last, n))
    }

    /// Adds one entry with `fields` (name, value) to `batch`. Fails only when the stream can
    /// take no more ids; the caller then undoes the batch and its own change.
    pub fn add<'c>(
        &mut self,
        ctx: &Ctx<'c>,
        batch: &mut Batch<'c>,
        fields: &[(&[u8], &[u8])],
    ) -> Result<(), FenceError> {
        let entry = stream::add(ctx, &mut self.key, fields).ok_or(FenceError::StreamFull)?;
        batch.added.push(entry);
        Ok(())
    }

    /// Takes back every entry of `batch` (the call failed).
    pub fn undo(&mut self, batch: Batch<'_>) {
        for entry in batch.added {
            stream::delete(&mut self.key, entry.id);
        }
    }

    /// Publishes `batch` (replicated as XADD with explicit ids, announced as `xadd`), then
    /// applies `MAXLEN`.
    pub fn publish(&mut self, ctx: &Ctx<'_>, batch: Batch<'_>) {
        if batch.added.is_empty() {
            return;
        }
        for entry in &batch.added {
            stream::replicate_add(ctx, self.name, entry);
        }
        self.key.signal_modified();
        ctx.notify_class(raw::REDISMODULE_NOTIFY_STREAM, c"xadd", self.name);
        self.trim(ctx);
    }

    /// Applies `MAXLEN`, replicated as an exact trim to the length this server kept.
    fn trim(&mut self, ctx: &Ctx<'_>) {
        let Some(maxlen) = self.events.maxlen else {
            return;
        };
        if stream::trim(&mut self.key, maxlen.len, maxlen.approx) <= 0 {
            return;
        }
        stream::replicate_trim(ctx, self.name, self.key.value_length());
        ctx.notify_class(raw::REDISMODULE_NOTIFY_STREAM, c"xtrim", self.name);
    }
}

/// Tells Redis where the keys are for a command with an optional `EVENTS` key (cluster
/// routing, ACL key patterns, `COMMAND GETKEYS`): the stock at 1, the stream where `EVENTS`
/// names it. `None` when this is not a key-position request.
pub fn report_keys(
    ctx: &Ctx<'_>,
    args: &Args<'_>,
    events: Option<(usize, Events)>,
) -> Option<KeysReported> {
    let stream = events
        .map(|(from, e)| from + e.key_index)
        .filter(|&pos| pos < args.len());
    match stream {
        Some(pos) => ctx.report_keys(&[1, pos]),
        None => ctx.report_keys(&[1]),
    }
}
