//! `EVENTS stream-key [MAXLEN [~|=] n]`: where a command's stream key is, for Redis (key
//! positions) and for the command (opening it). The writing is `crate::services::streams`.

use fence_core::args::Events;
use fence_core::error::FenceError;

use crate::ffi::{Args, Ctx, KeysReported};
use crate::services::streams::Stream;

/// Opens the `EVENTS` stream of a command; `options_from` is where the option words begin in
/// `args`. Any other type: `WRONGTYPE`, before anything changed.
pub fn open<'k>(
    ctx: &Ctx<'k>,
    args: &Args<'k>,
    options_from: usize,
    events: Events,
) -> Result<Stream<'k>, FenceError> {
    Stream::open(
        ctx,
        args.get(options_from + events.key_index),
        events.maxlen,
    )
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
