//! Tests of the test harness itself: server arguments, error text helpers, death detection.

mod common;

use std::time::Duration;

use common::*;
use redis::Value;

#[test]
fn server_runs_with_the_harness_settings_and_the_module() {
    let server = Server::start();
    let mut con = server.conn();
    assert_eq!(config_get(&mut con, "port"), server.port().to_string());
    assert_eq!(config_get(&mut con, "bind"), "127.0.0.1");
    assert_eq!(config_get(&mut con, "save"), "");
    assert_eq!(config_get(&mut con, "appendonly"), "no");
    let dir = config_get(&mut con, "dir");
    assert!(dir.contains("redis-fence-test-"), "dir is {dir}");
    let modules = format!("{:?}", call(&mut con, &["MODULE", "LIST"]).unwrap());
    assert!(modules.contains("fence"), "MODULE LIST: {modules}");
    assert!(
        server.log().contains("Ready to accept connections"),
        "log: {}",
        server.log()
    );
}

#[test]
fn resp3_connection_speaks_resp3() {
    let server = Server::start();
    let mut con = server.conn_resp3();
    let hello = call(&mut con, &["HELLO", "3"]).unwrap();
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 did not reply a map: {hello:?}");
    };
    let proto = fields
        .iter()
        .find(|(k, _)| text(k) == "proto")
        .map(|(_, v)| v.clone());
    assert_eq!(proto, Some(Value::Int(3)));
}

#[test]
fn error_text_round_trips_code_and_message() {
    let server = Server::start();
    let mut con = server.conn();
    let stale = stale(5, 7);
    let script = format!("return redis.error_reply('{stale}')");
    assert_eq!(err(call(&mut con, &["EVAL", &script, "0"])), stale);
    assert_eq!(
        err(call(
            &mut con,
            &["EVAL", "return redis.error_reply('ERR some detail')", "0"]
        )),
        "ERR some detail"
    );
    okay(call(&mut con, &["SET", "s", "1"]));
    assert_eq!(err(call(&mut con, &["LPUSH", "s", "x"])), WRONGTYPE);
    assert_eq!(err(call(&mut con, &["INCR", "nope", "x"])), arity("incr"));
    assert_err(call(&mut con, &["GETRANGE", "s", "a", "b"]), NOT_INTEGER);
}

#[test]
#[should_panic(expected = "expected an error reply")]
fn err_helper_rejects_a_non_error() {
    err(Ok::<Value, redis::RedisError>(Value::Int(1)));
}

#[test]
#[should_panic(expected = "expected an integer reply")]
fn int_helper_rejects_nil() {
    int(Ok(Value::Nil));
}

#[test]
#[should_panic(expected = "redis-server died during the test")]
fn a_server_that_dies_fails_the_test() {
    let mut server = Server::start();
    let mut con = server.conn();
    let _ = call(&mut con, &["SHUTDOWN", "NOSAVE"]);
    assert!(
        server.wait_exit(Duration::from_secs(20)).is_some(),
        "server did not exit after SHUTDOWN"
    );
    // Dropping `server` must panic now.
}

#[test]
fn try_start_reports_a_server_that_cannot_start() {
    let failure = match Server::try_start(&["--no-such-directive", "1"]) {
        Ok(_) => panic!("a server with a bad directive started"),
        Err(failure) => failure,
    };
    let status = failure.status.expect("the server exits by itself");
    assert!(!status.success(), "exit status {status}");
    assert!(
        failure.log.contains("no-such-directive"),
        "log: {}",
        failure.log
    );
}

/// What `make bench` asks of a server: a module file named, another program to run under (here
/// a shell that leaves a file where the server runs, then becomes the server), more arguments,
/// its own time limits, and connections that report errors instead of panicking.
#[test]
fn a_builder_server_runs_under_another_program_with_its_settings() {
    let server = Server::builder()
        .module(module_path())
        .run_under(&[
            "sh",
            "-c",
            "echo wrapped > wrapper.txt && exec \"$0\" \"$@\"",
        ])
        .args(&["--enable-debug-command", "yes"])
        .start_timeout(Duration::from_secs(30))
        .io_timeout(Duration::from_secs(60))
        .try_start()
        .unwrap_or_else(|failure| panic!("{failure}"));
    let mut con = server.try_conn().expect("a connection");
    assert_eq!(
        std::fs::read_to_string(server.dir().join("wrapper.txt")).ok(),
        Some("wrapped\n".to_string()),
        "the wrapper did not run in the server's directory"
    );
    // The wrapper became the server: the process started is the one answering.
    assert_eq!(
        info_value(&info(&mut con, "server"), "process_id"),
        Some(server.pid().to_string())
    );
    assert_eq!(config_get(&mut con, "enable-debug-command"), "yes");
    assert!(int(call(&mut con, &["LOCK.ACQUIRE", "l", "o", "1000"])) > 0);
}

/// A panic inside a command becomes an error reply; the server and the module keep working.
#[test]
fn a_panic_in_a_command_is_an_error_not_a_crash() {
    let mut server = Server::start();
    let mut con = server.conn();
    assert_err(call(&mut con, &["FENCE.DEBUG-PANIC"]), PANIC);
    assert_eq!(simple(call(&mut con, &["PING"])), "PONG");
    assert!(int(call(&mut con, &["LOCK.ACQUIRE", "l", "o", "1000"])) > 0);
    server.assert_alive();
    assert!(
        server.log().contains("caught a panic"),
        "no log line for the panic"
    );
}
