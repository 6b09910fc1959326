//! Order events on Redis Streams (`EVENTS stream-key [MAXLEN [~|=] n]`, and the `expire`
//! events of holds): entries are added first and published (replicated as `XADD` with their
//! explicit ids, announced as `xadd`) only once the whole call succeeds; a trim is replicated
//! as an exact `XTRIM … MAXLEN = <length>`. All of it travels in the same MULTI/EXEC as the
//! stock's own effect, so a replica or an AOF replay never has one without the other.

use fence_core::args::{stream_has_room, MaxLen};
use fence_core::error::FenceError;
use redis_module::raw;

use crate::ffi::stream::{self, Entry};
use crate::ffi::{Ctx, Key, Kind, RStr};

/// A stream key, opened for writing and checked to hold a stream (or nothing).
pub struct Stream<'k> {
    key: Key<'k>,
    name: RStr<'k>,
    maxlen: Option<MaxLen>,
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
    /// Opens the stream `name`, trimmed to `maxlen` after each publication. Any other type:
    /// `WRONGTYPE`, before anything changed.
    pub fn open(
        ctx: &Ctx<'k>,
        name: RStr<'k>,
        maxlen: Option<MaxLen>,
    ) -> Result<Stream<'k>, FenceError> {
        let key = Key::write(ctx, name);
        if !matches!(key.kind(), Kind::Empty | Kind::Stream) {
            return Err(FenceError::WrongType);
        }
        Ok(Stream { key, name, maxlen })
    }

    /// The stream's name.
    pub fn name(&self) -> RStr<'k> {
        self.name
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
        let Some(maxlen) = self.maxlen else {
            return;
        };
        if stream::trim(&mut self.key, maxlen.len, maxlen.approx) <= 0 {
            return;
        }
        stream::replicate_trim(ctx, self.name, self.key.value_length());
        ctx.notify_class(raw::REDISMODULE_NOTIFY_STREAM, c"xtrim", self.name);
    }
}
