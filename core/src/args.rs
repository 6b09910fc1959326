//! Argument parsing into typed values: plain Rust over byte slices, no Redis.

use crate::error::{printable, FenceError, Name};

/// An integer's decimal digits, kept on the stack: what Redis would store for it.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    /// Formats `n` (20 bytes hold every `i64`, sign included), two digits at a time.
    pub fn new(n: i64) -> Self {
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
                                    2021222324252627282930313233343536373839\
                                    4041424344454647484950515253545556575859\
                                    6061626364656667686970717273747576777879\
                                    8081828384858687888990919293949596979899";
        let mut buf = [b'0'; 20];
        let mut start = buf.len();
        let mut rest = n.unsigned_abs();
        // At most 19 digits and a sign: every slice below is inside `buf`; checked access
        // all the same, so no integer can panic inside Redis.
        while rest >= 10 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            start = start.saturating_sub(2);
            if let (Some(to), Some(from)) =
                (buf.get_mut(start..start + 2), PAIRS.get(pair..pair + 2))
            {
                to.copy_from_slice(from);
            }
        }
        if rest > 0 || start == buf.len() {
            start = start.saturating_sub(1);
            if let Some(digit) = buf.get_mut(start) {
                // A single digit, below 10.
                *digit = b'0' + rest as u8;
            }
        }
        if n < 0 {
            start = start.saturating_sub(1);
            if let Some(sign) = buf.get_mut(start) {
                *sign = b'-';
            }
        }
        Self { buf, start }
    }

    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

/// Parses an integer exactly as Redis's `string2ll` does (the syntax `INCRBY` accepts): an
/// optional `-`, digits, no leading zeros, no spaces, no `+`, within `i64`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some(_) => (false, bytes),
        None => return None,
    };
    match digits {
        [] => return None,
        [b'0'] => return if negative { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate as a negative number so that i64::MIN parses too.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// `ttl-ms`: an integer from 1 to `max`.
pub fn parse_ttl(bytes: &[u8], max: i64) -> Result<i64, FenceError> {
    match parse_i64(bytes) {
        Some(ttl) if ttl >= 1 && ttl <= max => Ok(ttl),
        _ => Err(FenceError::Ttl { max }),
    }
}

/// `quantity`: an integer from `min` (0 or 1) to `i64::MAX`.
pub fn parse_quantity(bytes: &[u8], min: i64) -> Result<i64, FenceError> {
    match parse_i64(bytes) {
        Some(q) if q >= min => Ok(q),
        _ => Err(FenceError::Quantity { min }),
    }
}

/// A fencing token: a positive integer.
pub fn parse_token(bytes: &[u8]) -> Result<u64, FenceError> {
    match parse_i64(bytes) {
        Some(t) if t > 0 => Ok(t.unsigned_abs()),
        _ => Err(FenceError::TokenNotPositive),
    }
}

/// An owner or request id: not empty and at most `max` bytes.
pub fn parse_name(bytes: &[u8], name: Name, max: i64) -> Result<&[u8], FenceError> {
    if bytes.is_empty() {
        return Err(FenceError::EmptyName(name));
    }
    if i64::try_from(bytes.len()).map_or(true, |len| len > max) {
        return Err(FenceError::NameTooLong { name, max });
    }
    Ok(bytes)
}

/// Parses a stream id `ms-seq` as Redis prints it.
pub fn parse_stream_id(bytes: &[u8]) -> Option<(u64, u64)> {
    let dash = bytes.iter().position(|&b| b == b'-')?;
    let (ms, seq) = (bytes.get(..dash)?, bytes.get(dash + 1..)?);
    let digits = |b: &[u8]| {
        if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse::<u64>().ok()
    };
    Some((digits(ms)?, digits(seq)?))
}

/// Whether a stream whose last generated id is `last` can take `n` more automatic ids.
pub fn stream_has_room(last: (u64, u64), n: u64) -> bool {
    let (ms, seq) = last;
    // Ids run (ms, seq) -> (ms, seq + 1), and (ms, MAX) -> (ms + 1, 0); only (MAX, MAX) ends.
    ms < u64::MAX || seq <= u64::MAX - n
}

/// The longest `WAIT` a client may ask for: 10 years, in milliseconds.
pub const MAX_WAIT_MS: i64 = 315_360_000_000;

/// Parses `LOCK.ACQUIRE`'s options: `[WAIT timeout-ms]`; `Some(0)` waits without limit.
pub fn parse_acquire_options(args: &[&[u8]]) -> Result<Option<i64>, FenceError> {
    let mut wait = None;
    let mut rest = args;
    while let Some((&name, tail)) = rest.split_first() {
        if !name.eq_ignore_ascii_case(b"WAIT") {
            return Err(FenceError::UnknownOption(printable(name)));
        }
        let (&value, tail) = tail.split_first().ok_or(FenceError::MissingValue("WAIT"))?;
        if wait.is_some() {
            return Err(FenceError::RepeatedOption("WAIT"));
        }
        wait = Some(
            parse_i64(value)
                .filter(|t| (0..=MAX_WAIT_MS).contains(t))
                .ok_or(FenceError::Timeout { max: MAX_WAIT_MS })?,
        );
        rest = tail;
    }
    Ok(wait)
}

/// How an `EVENTS` stream is trimmed after the append: `MAXLEN [~|=] n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxLen {
    /// `~`: trim only whole nodes, like `XADD … MAXLEN ~`.
    pub approx: bool,
    pub len: i64,
}

/// `EVENTS stream-key [MAXLEN [~|=] n]`: where to publish the order events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    /// Position of the stream key among the option words.
    pub key_index: usize,
    pub maxlen: Option<MaxLen>,
}

/// The options of `STOCK.DEDUCT`, validated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeductOptions<'a> {
    pub id: Option<&'a [u8]>,
    pub fence: Option<u64>,
    pub events: Option<Events>,
    /// `HOLD ms`: a positive integer (its upper bound, `fence.max-hold-ms`, is the command's
    /// to check); only with `ID`.
    pub hold: Option<i64>,
    /// `BUYER buyer-id`: not empty (a new buyer's length is checked where it is recorded);
    /// only with `ID`.
    pub buyer: Option<&'a [u8]>,
}

/// The most option words any `STOCK.DEDUCT` has: `ID x BUYER b HOLD ms FENCE t EVENTS s MAXLEN
/// ~ n` is 13; a command shows its parser at most `MAX_OPTION_WORDS` and refuses a longer
/// tail outright.
pub const MAX_DEDUCT_WORDS: usize = 13;
/// How many option words a command reads before refusing the call as too long.
pub const MAX_OPTION_WORDS: usize = 16;

/// `LIMIT per-buyer` / `STOCK.LIMIT key per-buyer`: an integer from 0 (no limit) to `i64::MAX`.
pub fn parse_limit(bytes: &[u8]) -> Result<i64, FenceError> {
    parse_i64(bytes)
        .filter(|n| *n >= 0)
        .ok_or(FenceError::LimitRange)
}

/// Parses `STOCK.SET`'s options: nothing, or `LIMIT per-buyer`.
pub fn parse_set_options(args: &[&[u8]]) -> Result<Option<i64>, FenceError> {
    match parse_one_option(args, "LIMIT")? {
        Some(value) => parse_limit(value).map(Some),
        None => Ok(None),
    }
}

/// Parses `EVENTS stream-key [MAXLEN [~|=] n]` starting at `words[at]` (the word after
/// `EVENTS`); returns the option and how many words it took.
fn parse_events(words: &[&[u8]], at: usize) -> Result<(Events, usize), FenceError> {
    if words.get(at).is_none() {
        return Err(FenceError::MissingValue("EVENTS"));
    }
    let mut used = 1;
    let mut maxlen = None;
    if words
        .get(at + 1)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"MAXLEN"))
    {
        used += 1;
        let mut approx = false;
        if let Some(&w) = words.get(at + 2) {
            if w == b"~" || w == b"=" {
                approx = w == b"~";
                used += 1;
            }
        }
        let len = words
            .get(at + used)
            .and_then(|w| parse_i64(w))
            .filter(|n| *n >= 0)
            .ok_or(FenceError::MaxLen)?;
        used += 1;
        maxlen = Some(MaxLen { approx, len });
    }
    Ok((
        Events {
            key_index: at,
            maxlen,
        },
        used,
    ))
}

/// Parses `[ID request-id] [BUYER buyer-id] [HOLD ms] [FENCE token] [EVENTS stream-key [MAXLEN
/// [~|=] n]]` in any order, case-insensitively, each at most once.
pub fn parse_deduct_options<'a>(args: &[&'a [u8]]) -> Result<DeductOptions<'a>, FenceError> {
    let mut options = DeductOptions::default();
    let mut i = 0;
    while let Some(&name) = args.get(i) {
        let value = args.get(i + 1).copied();
        if name.eq_ignore_ascii_case(b"ID") {
            let value = value.ok_or(FenceError::MissingValue("ID"))?;
            if options.id.is_some() {
                return Err(FenceError::RepeatedOption("ID"));
            }
            // `fence.max-id-length` bounds new ids only (checked where a new entry is made), so
            // an id taken before the limit was lowered still replays.
            options.id = Some(parse_name(value, Name::RequestId, i64::MAX)?);
            i += 2;
        } else if name.eq_ignore_ascii_case(b"FENCE") {
            let value = value.ok_or(FenceError::MissingValue("FENCE"))?;
            if options.fence.is_some() {
                return Err(FenceError::RepeatedOption("FENCE"));
            }
            options.fence = Some(parse_token(value)?);
            i += 2;
        } else if name.eq_ignore_ascii_case(b"EVENTS") {
            if options.events.is_some() {
                return Err(FenceError::RepeatedOption("EVENTS"));
            }
            let (events, used) = parse_events(args, i + 1)?;
            options.events = Some(events);
            i += 1 + used;
        } else if name.eq_ignore_ascii_case(b"HOLD") {
            let value = value.ok_or(FenceError::MissingValue("HOLD"))?;
            if options.hold.is_some() {
                return Err(FenceError::RepeatedOption("HOLD"));
            }
            let ms = parse_i64(value)
                .filter(|ms| *ms >= 1)
                .ok_or(FenceError::HoldRange {
                    max: crate::config::MAX_HOLD_MS.get(),
                })?;
            options.hold = Some(ms);
            i += 2;
        } else if name.eq_ignore_ascii_case(b"BUYER") {
            let value = value.ok_or(FenceError::MissingValue("BUYER"))?;
            if options.buyer.is_some() {
                return Err(FenceError::RepeatedOption("BUYER"));
            }
            options.buyer = Some(parse_name(value, Name::BuyerId, i64::MAX)?);
            i += 2;
        } else {
            return Err(FenceError::UnknownOption(printable(name)));
        }
    }
    if options.hold.is_some() && options.id.is_none() {
        return Err(FenceError::HoldNeedsId);
    }
    if options.buyer.is_some() && options.id.is_none() {
        return Err(FenceError::BuyerNeedsId);
    }
    Ok(options)
}

/// Parses `STOCK.REQUEST`'s options: nothing, or `DETAIL`.
pub fn parse_request_options(args: &[&[u8]]) -> Result<bool, FenceError> {
    match args {
        [] => Ok(false),
        [w] if w.eq_ignore_ascii_case(b"DETAIL") => Ok(true),
        [w, rest @ ..] => {
            if !w.eq_ignore_ascii_case(b"DETAIL") {
                return Err(FenceError::UnknownOption(printable(w)));
            }
            match rest.first() {
                Some(&w) if w.eq_ignore_ascii_case(b"DETAIL") => {
                    Err(FenceError::RepeatedOption("DETAIL"))
                }
                Some(&w) => Err(FenceError::UnknownOption(printable(w))),
                None => Ok(true),
            }
        }
    }
}

/// Parses at most one option `NAME value` (e.g. `[ID restock-id]`, `[TOKEN token]`): its value,
/// or None when there are no option words.
pub fn parse_one_option<'a>(
    args: &[&'a [u8]],
    name: &'static str,
) -> Result<Option<&'a [u8]>, FenceError> {
    let Some((&word, rest)) = args.split_first() else {
        return Ok(None);
    };
    if !word.eq_ignore_ascii_case(name.as_bytes()) {
        return Err(FenceError::UnknownOption(printable(word)));
    }
    let (&value, rest) = rest.split_first().ok_or(FenceError::MissingValue(name))?;
    match rest.first() {
        None => Ok(Some(value)),
        Some(&w) if w.eq_ignore_ascii_case(name.as_bytes()) => {
            Err(FenceError::RepeatedOption(name))
        }
        Some(&w) => Err(FenceError::UnknownOption(printable(w))),
    }
}

/// Parses `STOCK.REFUND`'s options: `[EVENTS stream-key [MAXLEN [~|=] n]]`.
pub fn parse_refund_options(args: &[&[u8]]) -> Result<Option<Events>, FenceError> {
    match args.split_first() {
        None => Ok(None),
        Some((&name, _)) if name.eq_ignore_ascii_case(b"EVENTS") => {
            let (events, used) = parse_events(args, 1)?;
            match args.get(1 + used) {
                None => Ok(Some(events)),
                Some(&w) if w.eq_ignore_ascii_case(b"EVENTS") => {
                    Err(FenceError::RepeatedOption("EVENTS"))
                }
                Some(&w) => Err(FenceError::UnknownOption(printable(w))),
            }
        }
        Some((&name, _)) => Err(FenceError::UnknownOption(printable(name))),
    }
}

/// A cart as `STOCK.CART` reads it: the items (key, quantity) in order, the options, and where
/// in the words (after the command name) the options begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartArgs<'a> {
    pub items: Vec<(&'a [u8], i64)>,
    pub options: DeductOptions<'a>,
    /// The request id (`ID` is required).
    pub id: &'a [u8],
    pub options_at: usize,
}

/// `numkeys`: an integer from 1 to `MAX_CART_ITEMS`, with `per_key` words for each key among
/// the `available` words after it.
fn parse_numkeys(word: &[u8], available: usize, per_key: usize) -> Result<usize, FenceError> {
    let n = parse_i64(word)
        .filter(|n| (1..=crate::error::MAX_CART_ITEMS).contains(n))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(FenceError::NumKeys)?;
    if n.saturating_mul(per_key) > available {
        return Err(FenceError::NumKeys);
    }
    Ok(n)
}

/// The first key of `keys` that an earlier one repeats.
fn repeated<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut seen = std::collections::HashSet::new();
    keys.into_iter().find(|k| !seen.insert(*k))
}

/// Parses `numkeys key quantity [key quantity ...] ID request-id [BUYER b] [HOLD ms] [FENCE t]
/// [EVENTS stream-key [MAXLEN [~|=] n]]` (the words after `STOCK.CART`). Checks, in order:
/// numkeys, each quantity, a repeated key, the options (at most `MAX_OPTION_WORDS`), `ID`.
pub fn parse_cart<'a>(words: &[&'a [u8]]) -> Result<CartArgs<'a>, FenceError> {
    let (&first, rest) = words.split_first().ok_or(FenceError::NumKeys)?;
    let n = parse_numkeys(first, rest.len(), 2)?;
    let (pairs, option_words) = rest.split_at_checked(2 * n).ok_or(FenceError::NumKeys)?;
    let items = pairs
        .chunks_exact(2)
        .map(|p| match p {
            [key, quantity] => Ok((*key, parse_quantity(quantity, 1)?)),
            _ => Err(FenceError::NumKeys),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(key) = repeated(items.iter().map(|(k, _)| *k)) {
        return Err(FenceError::RepeatedKey(printable(key)));
    }
    if option_words.len() > MAX_OPTION_WORDS {
        return Err(FenceError::TooManyOptions {
            max: MAX_OPTION_WORDS,
        });
    }
    // Without `ID`, that is the error (not what `HOLD` or `BUYER` would need it for).
    let options = parse_deduct_options(option_words).map_err(|e| match e {
        FenceError::HoldNeedsId | FenceError::BuyerNeedsId => FenceError::CartNeedsId,
        e => e,
    })?;
    let id = options.id.ok_or(FenceError::CartNeedsId)?;
    Ok(CartArgs {
        items,
        options,
        id,
        options_at: 1 + 2 * n,
    })
}

/// Parses `numkeys key [key ...] request-id` (the words after `STOCK.CART.REFUND` or
/// `STOCK.CART.CONFIRM`): the keys and the request id (not empty; any length).
pub fn parse_cart_keys<'a>(
    words: &[&'a [u8]],
    command: &'static str,
) -> Result<(Vec<&'a [u8]>, &'a [u8]), FenceError> {
    let (&first, rest) = words.split_first().ok_or(FenceError::NumKeys)?;
    let n = parse_numkeys(first, rest.len().saturating_sub(1), 1)?;
    let (keys, tail) = rest.split_at_checked(n).ok_or(FenceError::NumKeys)?;
    let [id] = tail else {
        return Err(FenceError::Arity(command));
    };
    if let Some(key) = repeated(keys.iter().copied()) {
        return Err(FenceError::RepeatedKey(printable(key)));
    }
    let id = parse_name(id, Name::RequestId, i64::MAX)?;
    Ok((keys.to_vec(), id))
}

/// A cart refund as `STOCK.CART.REFUND` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRefundArgs<'a> {
    pub keys: Vec<&'a [u8]>,
    pub id: &'a [u8],
    pub events: Option<Events>,
    /// Where in the words (after the command name) the options begin.
    pub options_at: usize,
}

/// Parses `numkeys key [key ...] request-id [EVENTS stream-key [MAXLEN [~|=] n]]` (the words
/// after `STOCK.CART.REFUND`).
pub fn parse_cart_refund<'a>(words: &[&'a [u8]]) -> Result<CartRefundArgs<'a>, FenceError> {
    let (&first, rest) = words.split_first().ok_or(FenceError::NumKeys)?;
    let n = parse_numkeys(first, rest.len().saturating_sub(1), 1)?;
    let (keys, tail) = rest.split_at_checked(n).ok_or(FenceError::NumKeys)?;
    let (&id, options) = tail.split_first().ok_or(FenceError::NumKeys)?;
    if let Some(key) = repeated(keys.iter().copied()) {
        return Err(FenceError::RepeatedKey(printable(key)));
    }
    let id = parse_name(id, Name::RequestId, i64::MAX)?;
    let events = parse_refund_options(options)?;
    Ok(CartRefundArgs {
        keys: keys.to_vec(),
        id,
        events,
        options_at: 2 + n,
    })
}

/// Where `STOCK.CART.CONFIRM`'s keys are (keys in a row, no option): as `cart_key_positions`.
pub fn cart_confirm_key_positions(words: &[&[u8]]) -> Vec<usize> {
    let mut out = cart_key_positions(words, false);
    let n = words
        .first()
        .and_then(|w| parse_i64(w))
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    out.retain(|&p| p <= n);
    out
}

/// Where a cart command's keys are among the words after its name, for Redis's key-position
/// requests: never fails (garbage reports no key, or the keys the words do hold).
/// `pairs`: `STOCK.CART` (key quantity pairs, then an `EVENTS` stream); else keys in a row
/// (`STOCK.CART.REFUND`: then its `EVENTS` stream after the request id).
pub fn cart_key_positions(words: &[&[u8]], pairs: bool) -> Vec<usize> {
    let Some((&first, rest)) = words.split_first() else {
        return Vec::new();
    };
    let Some(n) = parse_i64(first)
        .filter(|n| (1..=crate::error::MAX_CART_ITEMS).contains(n))
        .and_then(|n| usize::try_from(n).ok())
    else {
        return Vec::new();
    };
    let step = if pairs { 2 } else { 1 };
    let mut out: Vec<usize> = (0..n)
        .map(|i| 1 + step * i)
        .filter(|&p| p <= rest.len())
        .collect();
    if !pairs {
        // A refund's `EVENTS` stream, after the request id.
        let at = 2 + n;
        if let Some(Ok(Some(e))) = words.get(at..).map(parse_refund_options) {
            out.push(at + e.key_index);
        }
    }
    if pairs {
        let at = 1 + 2 * n;
        if let Some(option_words) = words.get(at..) {
            if let Ok(o) = parse_deduct_options(option_words) {
                if let Some(e) = o.events {
                    out.push(at + e.key_index);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_option() {
        assert_eq!(parse_one_option(&[], "ID"), Ok(None));
        assert_eq!(
            parse_one_option(&[b"id", b"r1"], "ID"),
            Ok(Some(&b"r1"[..]))
        );
        assert_eq!(
            parse_one_option(&[b"ID"], "ID"),
            Err(FenceError::MissingValue("ID"))
        );
        assert_eq!(
            parse_one_option(&[b"ID", b"a", b"ID", b"b"], "ID"),
            Err(FenceError::RepeatedOption("ID"))
        );
        assert_eq!(
            parse_one_option(&[b"ID", b"a", b"X"], "ID"),
            Err(FenceError::UnknownOption("X".into()))
        );
        assert_eq!(
            parse_one_option(&[b"TOKEN", b"5"], "ID"),
            Err(FenceError::UnknownOption("TOKEN".into()))
        );
    }

    #[test]
    fn stream_ids_and_room() {
        assert_eq!(parse_stream_id(b"1-2"), Some((1, 2)));
        assert_eq!(
            parse_stream_id(b"18446744073709551615-18446744073709551615"),
            Some((u64::MAX, u64::MAX))
        );
        for bad in [
            &b""[..],
            b"1",
            b"-1",
            b"1-",
            b"a-1",
            b"1-2-3",
            b"18446744073709551616-0",
        ] {
            assert_eq!(parse_stream_id(bad), None, "{bad:?}");
        }
        assert!(stream_has_room((5, u64::MAX), 2));
        assert!(stream_has_room((u64::MAX, u64::MAX - 2), 2));
        assert!(!stream_has_room((u64::MAX, u64::MAX - 1), 2));
        assert!(stream_has_room((u64::MAX, u64::MAX - 1), 1));
        assert!(!stream_has_room((u64::MAX, u64::MAX), 1));
    }

    #[test]
    fn decimal_formats_every_i64_as_redis_does() {
        for n in [0, 7, -7, 10, -10, 99, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
            assert_eq!(parse_i64(Decimal::new(n).as_bytes()), Some(n));
        }
    }

    #[test]
    fn integers_follow_redis_syntax() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"1", Some(1)),
            (b"-1", Some(-1)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"", None),
            (b"-", None),
            (b"-0", None),
            (b"01", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1.5", None),
            (b"abc", None),
            (b"1e3", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_i64(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl(b"1", 10), Ok(1));
        assert_eq!(parse_ttl(b"10", 10), Ok(10));
        for bad in [&b"0"[..], b"11", b"-1", b"x", b"1.5"] {
            assert_eq!(parse_ttl(bad, 10), Err(FenceError::Ttl { max: 10 }));
        }
    }

    #[test]
    fn quantity_bounds() {
        assert_eq!(parse_quantity(b"0", 0), Ok(0));
        assert_eq!(
            parse_quantity(b"0", 1),
            Err(FenceError::Quantity { min: 1 })
        );
        assert_eq!(
            parse_quantity(b"-1", 0),
            Err(FenceError::Quantity { min: 0 })
        );
        assert_eq!(parse_quantity(b"9223372036854775807", 1), Ok(i64::MAX));
        assert_eq!(
            parse_quantity(b"9223372036854775808", 1),
            Err(FenceError::Quantity { min: 1 })
        );
    }

    #[test]
    fn tokens_are_positive() {
        assert_eq!(parse_token(b"7"), Ok(7));
        for bad in [&b"0"[..], b"-5", b"abc", b"1.5", b""] {
            assert_eq!(parse_token(bad), Err(FenceError::TokenNotPositive));
        }
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(parse_name(b"abc", Name::Owner, 3), Ok(&b"abc"[..]));
        assert_eq!(
            parse_name(b"", Name::Owner, 3),
            Err(FenceError::EmptyName(Name::Owner))
        );
        assert_eq!(
            parse_name(b"abcd", Name::RequestId, 3),
            Err(FenceError::NameTooLong {
                name: Name::RequestId,
                max: 3
            })
        );
    }

    #[test]
    fn acquire_options() {
        assert_eq!(parse_acquire_options(&[]), Ok(None));
        assert_eq!(parse_acquire_options(&[b"wait", b"0"]), Ok(Some(0)));
        assert_eq!(parse_acquire_options(&[b"WAIT", b"20"]), Ok(Some(20)));
        let bad = FenceError::Timeout { max: MAX_WAIT_MS };
        assert_eq!(parse_acquire_options(&[b"WAIT", b"-1"]), Err(bad.clone()));
        assert_eq!(parse_acquire_options(&[b"WAIT", b"x"]), Err(bad));
        assert_eq!(
            parse_acquire_options(&[b"WAIT"]),
            Err(FenceError::MissingValue("WAIT"))
        );
        assert_eq!(
            parse_acquire_options(&[b"WAIT", b"1", b"WAIT", b"2"]),
            Err(FenceError::RepeatedOption("WAIT"))
        );
        assert_eq!(
            parse_acquire_options(&[b"NX", b"1"]),
            Err(FenceError::UnknownOption("NX".into()))
        );
    }

    #[test]
    fn deduct_options_any_order_any_case() {
        let args: Vec<&[u8]> = vec![b"fence", b"9", b"Id", b"order-1"];
        let o = parse_deduct_options(&args).unwrap_or_default();
        assert_eq!(
            o,
            DeductOptions {
                hold: None,
                id: Some(b"order-1"),
                fence: Some(9),
                events: None,
                buyer: None,
            }
        );
        assert_eq!(parse_deduct_options(&[]), Ok(DeductOptions::default()));
    }

    #[test]
    fn events_options() {
        let args: Vec<&[u8]> = vec![b"ID", b"a", b"events", b"s", b"MAXLEN", b"~", b"100"];
        let o = parse_deduct_options(&args).unwrap_or_default();
        assert_eq!(
            o.events,
            Some(Events {
                key_index: 3,
                maxlen: Some(MaxLen {
                    approx: true,
                    len: 100
                })
            })
        );
        let args: Vec<&[u8]> = vec![b"EVENTS", b"s", b"maxlen", b"5", b"FENCE", b"3"];
        let o = parse_deduct_options(&args).unwrap_or_default();
        assert_eq!(
            o.events.and_then(|e| e.maxlen),
            Some(MaxLen {
                approx: false,
                len: 5
            })
        );
        assert_eq!(o.fence, Some(3));
        let args: Vec<&[u8]> = vec![b"EVENTS", b"s", b"ID", b"x"];
        let o = parse_deduct_options(&args).unwrap_or_default();
        assert_eq!(o.events.map(|e| e.key_index), Some(1));
        assert_eq!(o.id, Some(&b"x"[..]));
        assert_eq!(
            parse_refund_options(&[b"EVENTS", b"s"]).map(|e| e.map(|e| e.key_index)),
            Ok(Some(1))
        );
        assert_eq!(parse_refund_options(&[]), Ok(None));
        for bad in [
            &[&b"EVENTS"[..]][..],
            &[b"EVENTS", b"s", b"MAXLEN"],
            &[b"EVENTS", b"s", b"MAXLEN", b"~"],
            &[b"EVENTS", b"s", b"MAXLEN", b"-1"],
            &[b"EVENTS", b"s", b"EVENTS", b"t"],
            &[b"EVENTS", b"s", b"X"],
            &[b"ID", b"a"],
        ] {
            assert!(parse_refund_options(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_deduct_options(&[b"EVENTS", b"s", b"EVENTS", b"t"]),
            Err(FenceError::RepeatedOption("EVENTS"))
        );
    }

    #[test]
    fn deduct_option_errors() {
        let cases: &[(&[&[u8]], FenceError)] = &[
            (
                &[b"ID", b"a", b"ID", b"b"],
                FenceError::RepeatedOption("ID"),
            ),
            (
                &[b"FENCE", b"1", b"fence", b"2"],
                FenceError::RepeatedOption("FENCE"),
            ),
            (&[b"ID"], FenceError::MissingValue("ID")),
            (&[b"FENCE"], FenceError::MissingValue("FENCE")),
            (&[b"NOPE", b"1"], FenceError::UnknownOption("NOPE".into())),
            (&[b"FENCE", b"0"], FenceError::TokenNotPositive),
            (&[b"ID", b""], FenceError::EmptyName(Name::RequestId)),
            (&[b"BUYER", b"u"], FenceError::BuyerNeedsId),
            (&[b"BUYER"], FenceError::MissingValue("BUYER")),
            (
                &[b"ID", b"a", b"BUYER", b""],
                FenceError::EmptyName(Name::BuyerId),
            ),
            (
                &[b"ID", b"a", b"BUYER", b"u", b"buyer", b"v"],
                FenceError::RepeatedOption("BUYER"),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse_deduct_options(args).as_ref(), Err(want));
        }
    }

    #[test]
    fn every_option_together_fits_the_bound() {
        let all: Vec<&[u8]> = vec![
            b"ID", b"o", b"BUYER", b"b", b"HOLD", b"1000", b"FENCE", b"7", b"EVENTS", b"s",
            b"MAXLEN", b"~", b"10",
        ];
        assert_eq!(all.len(), MAX_DEDUCT_WORDS);
        const { assert!(MAX_DEDUCT_WORDS <= MAX_OPTION_WORDS) };
        // Every rotation of the five options parses to the same thing.
        let groups: Vec<&[&[u8]]> = vec![&all[0..2], &all[2..4], &all[4..6], &all[6..8], &all[8..]];
        for r in 0..groups.len() {
            let words: Vec<&[u8]> = groups[r..]
                .iter()
                .chain(groups[..r].iter())
                .flat_map(|g| g.iter().copied())
                .collect();
            let o = parse_deduct_options(&words).unwrap_or_default();
            assert_eq!(
                (o.id, o.buyer, o.hold, o.fence),
                (Some(&b"o"[..]), Some(&b"b"[..]), Some(1000), Some(7)),
                "rotation {r}"
            );
            assert_eq!(o.events.and_then(|e| e.maxlen).map(|m| m.len), Some(10));
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(b"0"), Ok(0));
        assert_eq!(parse_limit(b"9223372036854775807"), Ok(i64::MAX));
        for bad in [&b"-1"[..], b"x", b"", b"1.5", b"9223372036854775808"] {
            assert_eq!(parse_limit(bad), Err(FenceError::LimitRange), "{bad:?}");
        }
        assert_eq!(parse_set_options(&[]), Ok(None));
        assert_eq!(parse_set_options(&[b"limit", b"3"]), Ok(Some(3)));
        assert_eq!(
            parse_set_options(&[b"LIMIT"]),
            Err(FenceError::MissingValue("LIMIT"))
        );
        assert_eq!(
            parse_set_options(&[b"LIMIT", b"1", b"LIMIT", b"2"]),
            Err(FenceError::RepeatedOption("LIMIT"))
        );
        assert_eq!(
            parse_set_options(&[b"X", b"1"]),
            Err(FenceError::UnknownOption("X".into()))
        );
    }

    #[test]
    fn carts() {
        let w: Vec<&[u8]> = vec![b"2", b"a", b"1", b"b", b"3", b"ID", b"o", b"EVENTS", b"s"];
        let c = parse_cart(&w).unwrap();
        assert_eq!(c.items, vec![(&b"a"[..], 1), (&b"b"[..], 3)]);
        assert_eq!((c.id, c.options_at), (&b"o"[..], 5));
        assert_eq!(cart_key_positions(&w, true), vec![1, 3, 8]);
        let cases: &[(&[&[u8]], FenceError)] = &[
            (&[], FenceError::NumKeys),
            (&[b"0", b"a", b"1", b"ID", b"o"], FenceError::NumKeys),
            (&[b"257"], FenceError::NumKeys),
            (&[b"x", b"a", b"1"], FenceError::NumKeys),
            (&[b"2", b"a", b"1", b"ID"], FenceError::NumKeys),
            (
                &[b"1", b"a", b"0", b"ID", b"o"],
                FenceError::Quantity { min: 1 },
            ),
            (
                &[b"2", b"a", b"1", b"a", b"1", b"ID", b"o"],
                FenceError::RepeatedKey("a".into()),
            ),
            (&[b"1", b"a", b"1"], FenceError::CartNeedsId),
            (&[b"1", b"a", b"1", b"BUYER", b"u"], FenceError::CartNeedsId),
            (&[b"1", b"a", b"1", b"HOLD", b"5"], FenceError::CartNeedsId),
            (
                &[b"1", b"a", b"1", b"X"],
                FenceError::UnknownOption("X".into()),
            ),
        ];
        for (words, want) in cases {
            assert_eq!(
                parse_cart(words).as_ref().map(|_| ()),
                Err(want),
                "{words:?}"
            );
        }
        let mut long: Vec<&[u8]> = vec![b"1", b"a", b"1"];
        long.extend(std::iter::repeat_n(&b"x"[..], 17));
        assert_eq!(
            parse_cart(&long).map(|_| ()),
            Err(FenceError::TooManyOptions { max: 16 })
        );
        // Keys in a row, then the id.
        assert_eq!(
            parse_cart_keys(&[b"2", b"a", b"b", b"o"], "x"),
            Ok((vec![&b"a"[..], b"b"], &b"o"[..]))
        );
        assert_eq!(
            parse_cart_keys(&[b"2", b"a", b"b"], "x"),
            Err(FenceError::NumKeys)
        );
        assert_eq!(
            parse_cart_keys(&[b"1", b"a", b"o", b"p"], "x"),
            Err(FenceError::Arity("x"))
        );
        assert_eq!(
            parse_cart_keys(&[b"2", b"a", b"a", b"o"], "x"),
            Err(FenceError::RepeatedKey("a".into()))
        );
        assert_eq!(
            parse_cart_keys(&[b"1", b"a", b""], "x"),
            Err(FenceError::EmptyName(Name::RequestId))
        );
        assert_eq!(
            cart_key_positions(&[b"2", b"a", b"b", b"o"], false),
            vec![1, 2]
        );
        let refund: Vec<&[u8]> = vec![b"2", b"a", b"b", b"o", b"EVENTS", b"s"];
        assert_eq!(cart_key_positions(&refund, false), vec![1, 2, 5]);
        assert_eq!(cart_confirm_key_positions(&refund), vec![1, 2]);
        let r = parse_cart_refund(&refund).unwrap();
        assert_eq!((r.keys.len(), r.id, r.options_at), (2, &b"o"[..], 4));
        assert_eq!(r.events.map(|e| e.key_index), Some(1));
        assert_eq!(
            parse_cart_refund(&[b"1", b"a", b"o", b"X"]).map(|_| ()),
            Err(FenceError::UnknownOption("X".into()))
        );
        assert_eq!(
            parse_cart_refund(&[b"2", b"a", b"o"]).map(|_| ()),
            Err(FenceError::NumKeys)
        );
        // Garbage never fails: it reports what the words hold.
        for garbage in [
            &[][..],
            &[&b"-1"[..]],
            &[b"99999999999999999999"],
            &[b"256", b"a"],
            &[b"3", b"a", b"1"],
        ] {
            let p = cart_key_positions(garbage, true);
            assert!(p.iter().all(|&i| i < garbage.len()), "{garbage:?} {p:?}");
            let p = cart_key_positions(garbage, false);
            assert!(p.iter().all(|&i| i < garbage.len()), "{garbage:?} {p:?}");
        }
    }
}
