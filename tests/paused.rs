//! The scenario fencing tokens exist for, end to end, with real processes.
//!
//! Client A is a separate OS process (this test binary, run as the ignored test
//! `client_a_process`): it takes a lock, prints its token, "works" until the test ends its
//! work (a line on its stdin) and then deducts with `FENCE <its token>`. The test freezes it
//! with `SIGSTOP` during its work, ends the work while A is frozen (from then on only the
//! freeze holds A back), lets A's lease expire, lets client B take the lock and deduct, and
//! resumes A with `SIGCONT`: A's deduction must be refused with `STALE` and the stock must show
//! only B's write. No timer decides whether A is still working when it is frozen. The second
//! test does the same across a failover that loses A's grant: the replica's link is cut (and
//! the test waits until the replica has tried to get back in and been refused), A is granted
//! on the master, the master is killed (`SIGKILL`), the replica is promoted, B is granted there
//! with a larger token (the wall-clock floor), and A's deduction on the new master is refused.

mod common;

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use redis::Value;

const LOCK: &str = "lock:sku:42";
const SKU: &str = "sku:42";

/// Client A, as a child process of the test.
struct ClientA {
    child: Child,
    /// A's stdin: a line ends its work.
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ClientA {
    /// Starts client A: it acquires `LOCK` for `ttl_ms` at `acquire_url`, prints the token,
    /// works until `end_work`, then deducts 1 from `SKU` with its token at `deduct_url`.
    fn spawn(acquire_url: &str, deduct_url: &str, ttl_ms: u64) -> ClientA {
        let exe = env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args([
                "client_a_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("FENCE_CLIENT_A_ACQUIRE", acquire_url)
            .env("FENCE_CLIENT_A_DEDUCT", deduct_url)
            .env("FENCE_CLIENT_A_TTL_MS", ttl_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client A");
        let stdout = child.stdout.take().expect("client A's stdout");
        let stdin = child.stdin.take().expect("client A's stdin");
        ClientA {
            child,
            stdin: Some(stdin),
            lines: BufReader::new(stdout).lines(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line client A reports (`CLIENT-A ...`), without the prefix.
    fn report(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read client A's output");
            // libtest may print "test client_a_process ... " on the same line first.
            if let Some(at) = line.find("CLIENT-A ") {
                return line[at + "CLIENT-A ".len()..].to_string();
            }
        }
        let status = self.child.wait().expect("wait for client A");
        panic!("client A exited ({status}) without reporting");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// The process state letter from /proc (`T`: stopped).
    fn state(&self) -> char {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read stat");
        let after = &stat[stat.rfind(')').expect("comm field") + 2..];
        after.chars().next().expect("state letter")
    }

    /// Freezes A (`SIGSTOP`) and checks the kernel reports it stopped.
    fn freeze(&self) {
        self.signal("STOP");
        let stopped = wait_until(Duration::from_secs(2), || self.state() == 'T');
        assert!(stopped, "client A is not stopped: state {}", self.state());
    }

    fn resume(&self) {
        self.signal("CONT");
    }

    /// Ends A's work: once it runs, A goes on to its deduction.
    fn end_work(&mut self) {
        let mut stdin = self.stdin.take().expect("A's work ends once");
        stdin
            .write_all(b"done\n")
            .and_then(|()| stdin.flush())
            .expect("write to client A's stdin");
    }

    fn finish(mut self) {
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let status = self.child.wait().expect("wait for client A");
        assert!(
            status.success(),
            "client A failed ({status}):\n{}",
            rest.join("\n")
        );
    }
}

impl Drop for ClientA {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Client A's program (run as a child process by the tests below; does nothing otherwise).
#[test]
#[ignore = "client A of the paused-client tests: they run it as a separate process"]
fn client_a_process() {
    let (Ok(acquire), Ok(deduct)) = (
        env::var("FENCE_CLIENT_A_ACQUIRE"),
        env::var("FENCE_CLIENT_A_DEDUCT"),
    ) else {
        return;
    };
    let ttl: u64 = env::var("FENCE_CLIENT_A_TTL_MS").unwrap().parse().unwrap();
    let open = |url: &str| {
        let con = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("client A cannot connect to {url}: {e}"));
        con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        con
    };
    let mut con = open(&acquire);
    let token: i64 = redis::cmd("LOCK.ACQUIRE")
        .arg(LOCK)
        .arg("client-a")
        .arg(ttl)
        .query(&mut con)
        .expect("client A's LOCK.ACQUIRE");
    println!("CLIENT-A TOKEN {token}");
    // The work the lock protects: it lasts until the test ends it with a line on stdin (the
    // test freezes this process in the middle of it).
    let started = Instant::now();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("client A reads the end of its work");
    assert_eq!(line.trim(), "done", "client A's stdin");
    println!("CLIENT-A WORKED {} ms", started.elapsed().as_millis());
    if deduct != acquire {
        con = open(&deduct);
    }
    let reply = redis::cmd("STOCK.DEDUCT")
        .arg(SKU)
        .arg(1)
        .arg("ID")
        .arg("order-a")
        .arg("FENCE")
        .arg(token)
        .query::<Value>(&mut con);
    let shown = match reply {
        Ok(Value::Int(n)) => format!("int {n}"),
        Ok(Value::Nil) => "nil".to_string(),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", error_text(&e)),
    };
    println!("CLIENT-A DEDUCT {shown}");
}

fn token_of(report: &str) -> i64 {
    report
        .strip_prefix("TOKEN ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("client A reported {report:?}, not its token"))
}

/// STOCK.INFO as (available, deducted, requests, fence).
fn stock_info(con: &mut redis::Connection, key: &str) -> (i64, i64, i64, i64) {
    let items = match call(con, &["STOCK.INFO", key]) {
        Ok(Value::Array(items)) if items.len() == 20 => items,
        other => panic!("STOCK.INFO {key}: {other:?}"),
    };
    let field = |name: &str| -> i64 {
        let i = items
            .chunks(2)
            .position(|p| text(&p[0]) == name)
            .unwrap_or_else(|| panic!("no {name} in {items:?}"));
        match items[2 * i + 1] {
            Value::Int(n) => n,
            ref other => panic!("{name} is {other:?}"),
        }
    };
    (
        field("available"),
        field("deducted"),
        field("requests"),
        field("fence"),
    )
}

/// What A's resumed deduction must get once B deducted with `tb`.
fn expect_stale(report: &str, ta: i64, tb: i64) {
    let expected = format!("DEDUCT error {}", stale_reply(ta, tb));
    assert_eq!(report, expected, "client A's deduction after its pause");
}

#[test]
fn a_client_paused_past_its_ttl_is_fenced_off() {
    let server = Server::start();
    let mut b = server.conn();
    okay(call(&mut b, &["STOCK.SET", SKU, "10"]));

    let ttl_ms = 300;
    let spawned_at = Instant::now();
    let mut a = ClientA::spawn(&server.url(), &server.url(), ttl_ms);
    let ta = token_of(&a.report());
    a.freeze();
    let frozen_at = Instant::now();
    // A's lease, seen from B (it may already have run out if the test was slow to get here;
    // either way the lease cannot have ended before its TTL).
    let read_at = Instant::now();
    let held = lock_status(&mut b, LOCK);
    match &held {
        Some((owner, token, left)) => {
            assert_eq!((owner.as_str(), *token), ("client-a", ta));
            assert!(
                0 < *left && *left <= ttl_ms as i64,
                "A's lease has {left} ms left of {ttl_ms}"
            );
        }
        None => assert!(
            spawned_at.elapsed() >= Duration::from_millis(ttl_ms),
            "A's lease of {ttl_ms} ms is gone {:?} after A was started",
            spawned_at.elapsed()
        ),
    }
    // A's work is over: from now on only the freeze keeps it from writing.
    a.end_work();

    // A stays frozen until its lease is gone.
    let expired = wait_until(Duration::from_secs(20), || {
        lock_status(&mut b, LOCK).is_none()
    });
    assert!(expired, "client A's lock did not expire");
    let expired_after = spawned_at.elapsed();
    if let Some((_, _, left)) = held {
        // The lease ran out no earlier than its TTL said when it was read.
        assert!(
            read_at.elapsed() >= Duration::from_millis(left.unsigned_abs() - 1),
            "the lock expired {:?} after it showed {left} ms left",
            read_at.elapsed()
        );
    }
    assert_eq!(a.state(), 'T', "client A must still be frozen");
    nil(call(&mut b, &["STOCK.REQUEST", SKU, "order-a"]));

    // B takes the lock with a larger token and deducts with it.
    let tb = int(call(&mut b, &["LOCK.ACQUIRE", LOCK, "client-b", "5000"]));
    assert!(tb > ta, "B's token {tb} is not above A's {ta}");
    let left = int(call(
        &mut b,
        &[
            "STOCK.DEDUCT",
            SKU,
            "1",
            "ID",
            "order-b",
            "FENCE",
            &tb.to_string(),
        ],
    ));
    assert_eq!(left, 9);

    // A wakes up, finishes its work and writes with its old token: refused.
    let paused = frozen_at.elapsed();
    a.resume();
    let worked = a.report();
    expect_stale(&a.report(), ta, tb);
    a.finish();
    println!(
        "paused: client A frozen for {} ms; its {ttl_ms} ms lease was seen gone {} ms after A \
         started ({worked} when resumed); token A {ta} < token B {tb}: A's write refused with \
         STALE",
        paused.as_millis(),
        expired_after.as_millis()
    );

    // Only B's write is in the stock.
    assert_eq!(stock(&mut b, SKU), 9);
    assert_eq!(stock_info(&mut b, SKU), (9, 1, 1, tb));
    nil(call(&mut b, &["STOCK.REQUEST", SKU, "order-a"]));
    assert_eq!(int(call(&mut b, &["STOCK.REQUEST", SKU, "order-b"])), 1);
    assert_eq!(
        lock_status(&mut b, LOCK).map(|(o, t, _)| (o, t)),
        Some(("client-b".to_string(), tb))
    );
}

#[test]
fn a_grant_lost_in_a_failover_is_fenced_off_by_the_promoted_replica() {
    let mut master = Server::start_with(&["--repl-diskless-sync-delay", "0"]);
    let port = master.port().to_string();
    let replica = Server::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut m = master.conn();
    let mut r = replica.conn();
    okay(call(&mut m, &["STOCK.SET", SKU, "10"]));
    // An earlier grant the replica does see, released again.
    let earlier = int(call(&mut m, &["LOCK.ACQUIRE", LOCK, "someone", "10000"]));
    assert_eq!(int(call(&mut m, &["LOCK.RELEASE", LOCK, "someone"])), 1);
    wait_for_sync(&master, &replica, Duration::from_secs(10));
    assert_eq!(stock(&mut r, SKU), 10);

    // Cut the replica off: a password it does not know, then its link killed. `m` stays
    // authenticated (it connected before the password was set).
    okay(call(
        &mut m,
        &["CONFIG", "SET", "requirepass", "fence-secret"],
    ));
    let refusals = |replica: &Server| replica.log().matches("NOAUTH").count();
    let refused_before = refusals(&replica);
    let killed = int(call(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]));
    assert!(killed >= 1, "no replica link to kill");
    let down = wait_until(Duration::from_secs(20), || {
        let rep = info(&mut r, "replication");
        info_value(&rep, "master_link_status").as_deref() == Some("down")
    });
    assert!(down, "the replica's link did not go down");
    // ... and stays down: the replica tries to get back in and is refused (NOAUTH in its log).
    let refused = wait_until(Duration::from_secs(20), || {
        refusals(&replica) > refused_before
    });
    assert!(
        refused,
        "the replica did not try to reconnect\n--- replica log (tail) ---\n{}",
        tail(&replica.log())
    );
    let rep = info(&mut r, "replication");
    assert_eq!(
        info_value(&rep, "master_link_status").as_deref(),
        Some("down")
    );
    assert_eq!(
        info_value(&info(&mut m, "replication"), "connected_slaves").as_deref(),
        Some("0")
    );

    // A is granted the lock on the master, then freezes while it works.
    let master_url = format!("redis://:fence-secret@127.0.0.1:{port}/");
    let mut a = ClientA::spawn(&master_url, &replica.url(), 30_000);
    let ta = token_of(&a.report());
    a.freeze();
    a.end_work();
    assert!(ta > earlier);
    assert_eq!(
        lock_status(&mut m, LOCK).map(|(o, t, _)| (o, t)),
        Some(("client-a".to_string(), ta))
    );
    // The grant never reached the replica.
    assert_eq!(lock_status(&mut r, LOCK), None);

    // The master dies; the replica is promoted and B is granted the (free) lock there.
    master.kill();
    okay(call(&mut r, &["REPLICAOF", "NO", "ONE"]));
    let tb = int(call(&mut r, &["LOCK.ACQUIRE", LOCK, "client-b", "5000"]));
    assert!(
        tb > ta,
        "the promoted replica issued {tb}, not above the lost token {ta}"
    );
    let left = int(call(
        &mut r,
        &[
            "STOCK.DEDUCT",
            SKU,
            "1",
            "ID",
            "order-b",
            "FENCE",
            &tb.to_string(),
        ],
    ));
    assert_eq!(left, 9);

    // A resumes and writes to the new master with the lost grant's token: refused.
    a.resume();
    let _worked = a.report();
    expect_stale(&a.report(), ta, tb);
    a.finish();
    println!(
        "paused: failover lost A's grant (token {ta}); the promoted replica granted B {tb} \
         (+{} µs): A's write refused with STALE",
        tb - ta
    );
    assert_eq!(stock_info(&mut r, SKU), (9, 1, 1, tb));
    nil(call(&mut r, &["STOCK.REQUEST", SKU, "order-a"]));
}
