//! One command and its reply, checked: the reply's kind (`int`, `nil`, `okay`, …) or an error
//! reply's full text (`err`, `assert_err`), on any connection (a server's or a cluster's).

use std::fmt::Debug;

use redis::{ConnectionLike, RedisError, RedisResult, Value};

/// `i64::MAX` as a command argument.
pub const I64_MAX: &str = "9223372036854775807";
/// One more than `i64::MAX`: an argument no integer parameter accepts.
pub const TWO_POW_63: &str = "9223372036854775808";

/// Runs one command, e.g. `call(&mut con, &["LOCK.ACQUIRE", "k", "o", "1000"])`, on a plain
/// connection or a cluster connection (which routes it by its key).
pub fn call<C: ConnectionLike>(con: &mut C, args: &[&str]) -> RedisResult<Value> {
    let (name, rest) = args.split_first().expect("a command name");
    redis::cmd(name).arg(rest).query::<Value>(con)
}

/// The full text of a server error as the server sent it: code, a space, the message.
pub fn error_text(e: &RedisError) -> String {
    let code = match e.code() {
        Some(code) => code,
        None => panic!("not an error reply from the server: {e}"),
    };
    match e.detail() {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_string(),
    }
}

/// The error reply's full text; panics when the reply is not an error.
#[track_caller]
pub fn err<T: Debug>(r: RedisResult<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error reply, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// The words of a wrong-arity reply before the command's name, which a server may echo as
/// typed or in lower case: `ERR wrong number of arguments for` (a prefix for [`assert_err`]).
pub fn arity_lead() -> String {
    let reply = fence_core::error::arity("\0");
    match reply.split_once('\0') {
        Some((lead, _)) => lead.trim_end_matches('\'').trim_end().to_string(),
        None => panic!("no command name in {reply:?}"),
    }
}

/// fence-core's `STALE` reply for tokens held as `i64` (as [`int`] returns them).
pub fn stale_reply(token: i64, highest: i64) -> String {
    let unsigned = |t: i64| match u64::try_from(t) {
        Ok(t) => t,
        Err(_) => panic!("a fencing token is positive, not {t}"),
    };
    fence_core::error::stale(unsigned(token), unsigned(highest))
}

/// True when `text` begins with `prefix` and the prefix ends there or at a non-alphanumeric
/// character, so "... from 1 to 1000" does not match "... from 1 to 10000".
pub fn begins_with(text: &str, prefix: &str) -> bool {
    match text.strip_prefix(prefix) {
        Some(rest) => !rest.starts_with(|c: char| c.is_ascii_alphanumeric()),
        None => false,
    }
}

/// Asserts an error reply that begins with `prefix` (as `begins_with` means it); returns its
/// full text.
#[track_caller]
pub fn assert_err<T: Debug>(r: RedisResult<T>, prefix: impl AsRef<str>) -> String {
    assert_err_ctx(r, prefix, "")
}

/// `assert_err` with some context for the failure message.
#[track_caller]
pub fn assert_err_ctx<T: Debug>(
    r: RedisResult<T>,
    prefix: impl AsRef<str>,
    context: impl std::fmt::Display,
) -> String {
    let prefix = prefix.as_ref();
    let text = match r {
        Ok(v) => panic!("{context}: expected an error beginning with {prefix:?}, got {v:?}"),
        Err(e) => error_text(&e),
    };
    assert!(
        begins_with(&text, prefix),
        "{context}: expected an error beginning with {prefix:?}, got {text:?}"
    );
    text
}

/// A reply for a failure message: the value, or the error reply's full text.
#[track_caller]
pub fn describe(r: &RedisResult<Value>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => match e.code() {
            Some(_) => format!("error reply {:?}", error_text(e)),
            None => format!("client error {e}"),
        },
    }
}

/// The reply must be an integer.
#[track_caller]
pub fn int(r: RedisResult<Value>) -> i64 {
    match r {
        Ok(Value::Int(n)) => n,
        other => panic!("expected an integer reply, got {}", describe(&other)),
    }
}

/// The reply must be nil.
#[track_caller]
pub fn nil(r: RedisResult<Value>) {
    match r {
        Ok(Value::Nil) => {}
        other => panic!("expected a nil reply, got {}", describe(&other)),
    }
}

/// The reply must be the status `OK`.
#[track_caller]
pub fn okay(r: RedisResult<Value>) {
    match r {
        Ok(Value::Okay) => {}
        other => panic!("expected the status reply OK, got {}", describe(&other)),
    }
}

/// The reply must be a bulk string.
#[track_caller]
pub fn bulk(r: RedisResult<Value>) -> Vec<u8> {
    match r {
        Ok(Value::BulkString(b)) => b,
        other => panic!("expected a bulk string reply, got {}", describe(&other)),
    }
}

/// The reply must be a simple (status) string.
#[track_caller]
pub fn simple(r: RedisResult<Value>) -> String {
    match r {
        Ok(Value::SimpleString(s)) => s,
        Ok(Value::Okay) => "OK".to_string(),
        other => panic!("expected a status reply, got {}", describe(&other)),
    }
}

/// A bulk or simple string value as text.
#[track_caller]
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("utf-8"),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A command in RESP, as it appears in an AOF file.
pub fn resp_command(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out
}
