//! A crash under load: 20 clients deduct from a stock of 10,000 with unique request ids, and
//! the server is killed with SIGKILL the moment a randomly chosen share (20–80 %) of the stock
//! has been acknowledged: the client whose acknowledgement reaches that share sends the signal
//! itself, so the kill always hits a running load whatever the machine's speed (and the test
//! checks that it did). After a restart on the same directory, with `appendfsync always`, no
//! acknowledged deduction is lost, nothing is oversold, and every acknowledged request id is
//! still in the ledger.

mod common;

use std::sync::Mutex;
use std::thread;

use common::*;
use rand::RngExt;
use redis::Value;

const STOCK: i64 = 10_000;
const CLIENTS: usize = 20;

/// What one client saw before the server died.
#[derive(Default)]
struct ClientRecord {
    /// Request ids whose deduction the server acknowledged.
    acknowledged: Vec<String>,
    /// The request sent when the connection broke, if any (at most one per client).
    in_flight: Option<String>,
    /// The stock ran out before the kill (this client got nil).
    sold_out: bool,
}

/// The figures of one crash.
struct Figures {
    acknowledged: Vec<String>,
    in_flight: Vec<String>,
    remaining: i64,
    /// In-flight requests the server had applied (their id is in the ledger).
    in_flight_applied: usize,
    /// The share of the stock (percent) whose acknowledgement triggered the kill.
    kill_at_percent: i64,
    /// The load at the kill.
    moment: KillMoment,
}

/// Runs the load and kills the server the moment `kill_at_percent` of the stock has been
/// acknowledged, restarts it on the same directory and reads the stock back. Checks that the
/// kill hit a running load, and what holds whatever `appendfsync` is: nothing oversold, and
/// every unit gone from the stock belongs to a request id in the ledger.
fn crash_under_load(appendfsync: &str, kill_at_percent: i64) -> (Server, Figures) {
    let mut server = Server::start_with(&["--appendonly", "yes", "--appendfsync", appendfsync]);
    let mut con = server.conn();
    okay(call(&mut con, &["STOCK.SET", "sku", &STOCK.to_string()]));

    let records: Vec<Mutex<ClientRecord>> = (0..CLIENTS)
        .map(|_| Mutex::new(ClientRecord::default()))
        .collect();
    let cons: Vec<redis::Connection> = (0..CLIENTS).map(|_| server.conn()).collect();
    let target = u64::try_from(STOCK * kill_at_percent / 100).unwrap();
    let killer = LoadKiller::new(&mut server, target);
    thread::scope(|s| {
        for ((client, record), mut con) in records.iter().enumerate().zip(cons) {
            let load = killer.client();
            s.spawn(move || {
                for n in 0.. {
                    let id = format!("c{client}-{n}");
                    record.lock().unwrap().in_flight = Some(id.clone());
                    load.sending();
                    let reply = redis::cmd("STOCK.DEDUCT")
                        .arg("sku")
                        .arg(1)
                        .arg("ID")
                        .arg(&id)
                        .query::<Value>(&mut con);
                    let mut r = record.lock().unwrap();
                    match reply {
                        Ok(Value::Int(_)) => {
                            r.in_flight = None;
                            r.acknowledged.push(id);
                            drop(r);
                            load.acknowledged(1);
                        }
                        Ok(Value::Nil) => {
                            // Sold out (only a live server answers: before the kill).
                            r.in_flight = None;
                            r.sold_out = true;
                            load.answered();
                            return;
                        }
                        // The server died under this request: it may or may not be applied.
                        Err(e) if e.code().is_none() => return,
                        other => panic!("STOCK.DEDUCT {id}: unexpected reply {other:?}"),
                    }
                }
            });
        }
    });
    let moment = killer.moment();
    let acknowledged_units = killer.acknowledged();

    let sold_out = records
        .iter()
        .filter(|r| r.lock().unwrap().sold_out)
        .count();
    let mut acknowledged = Vec::new();
    let mut in_flight = Vec::new();
    for record in records {
        let r = record.into_inner().unwrap();
        acknowledged.extend(r.acknowledged);
        in_flight.extend(r.in_flight);
    }
    // The kill hit a running load: it happened, no client had seen the stock sold out or
    // left its loop, and stock was left that even every in-flight request could not sell.
    let Some(moment) = moment else {
        panic!(
            "no kill: the load ended after {acknowledged_units} acknowledged units, before \
             {kill_at_percent}% of the stock ({target}) was acknowledged ({sold_out} clients saw \
             it sold out)"
        );
    };
    println!(
        "appendfsync {appendfsync}: SIGKILL at {kill_at_percent}% of the stock, after \
         {:?}: {} units acknowledged, {} requests on the wire, {} of {CLIENTS} clients running",
        moment.after, moment.acknowledged, moment.outstanding, moment.running
    );
    assert_eq!(
        sold_out, 0,
        "{sold_out} clients saw the stock sold out before the kill: it hit no running load"
    );
    assert_eq!(
        moment.running, CLIENTS,
        "only {} of {CLIENTS} clients were running at the kill",
        moment.running
    );
    let unsold = STOCK - (acknowledged.len() + in_flight.len()) as i64;
    assert!(
        unsold > 0,
        "{} acknowledged and {} in flight: nothing was left to sell at the kill",
        acknowledged.len(),
        in_flight.len()
    );

    server.restart();
    let mut con = server.conn();
    let remaining = stock(&mut con, "sku");
    let requests = |con: &mut redis::Connection, ids: &[String]| -> Vec<Value> {
        if ids.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("STOCK.REQUEST").arg("sku").arg(id);
        }
        pipe.query(con).expect("STOCK.REQUEST pipeline")
    };
    let in_flight_applied = requests(&mut con, &in_flight)
        .iter()
        .zip(&in_flight)
        .filter(|(v, id)| match v {
            Value::Int(1) => true,
            Value::Nil => false,
            other => panic!("STOCK.REQUEST {id} (in flight) replied {other:?}"),
        })
        .count();
    let sold = STOCK - remaining;
    assert!(
        sold <= (acknowledged.len() + in_flight.len()) as i64,
        "oversold: {sold} gone, {} acknowledged, {} in flight",
        acknowledged.len(),
        in_flight.len()
    );
    let figures = Figures {
        acknowledged,
        in_flight,
        remaining,
        in_flight_applied,
        kill_at_percent,
        moment,
    };
    (server, figures)
}

/// A share of the stock, 20–80 %, whose acknowledgement triggers the kill.
fn random_kill_point() -> i64 {
    rand::rng().random_range(20..=80)
}

/// Every acknowledged id is in the ledger with 1, and replaying each deducts nothing.
#[track_caller]
fn check_acknowledged(server: &Server, f: &Figures) {
    let mut con = server.conn();
    let mut pipe = redis::pipe();
    for id in &f.acknowledged {
        pipe.cmd("STOCK.REQUEST").arg("sku").arg(id);
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("STOCK.REQUEST pipeline");
    for (id, reply) in f.acknowledged.iter().zip(replies) {
        assert_eq!(
            reply,
            Value::Int(1),
            "acknowledged request {id} is not in the ledger"
        );
    }
    let mut pipe = redis::pipe();
    for id in &f.acknowledged {
        pipe.cmd("STOCK.DEDUCT").arg("sku").arg(1).arg("ID").arg(id);
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("replay pipeline");
    for (id, reply) in f.acknowledged.iter().zip(replies) {
        assert_eq!(
            reply,
            Value::Int(f.remaining),
            "a replay of acknowledged request {id}"
        );
    }
    assert_eq!(
        stock(&mut con, "sku"),
        f.remaining,
        "replays deducted something"
    );
    // The stock still sells to new requests.
    assert_eq!(
        int(call(
            &mut con,
            &["STOCK.DEDUCT", "sku", "1", "ID", "after-restart"]
        )),
        f.remaining - 1
    );
}

#[test]
fn no_acknowledged_deduction_is_lost_with_appendfsync_always() {
    let (server, f) = crash_under_load("always", random_kill_point());
    let acknowledged = f.acknowledged.len() as i64;
    let in_flight = f.in_flight.len() as i64;
    let sold = STOCK - f.remaining;
    println!(
        "appendfsync always, SIGKILL at {}% of the stock ({} units acknowledged, {} requests \
         on the wire): acknowledged {acknowledged}, in flight {in_flight} (applied {}), \
         remaining {} (sold {sold})",
        f.kill_at_percent,
        f.moment.acknowledged,
        f.moment.outstanding,
        f.in_flight_applied,
        f.remaining
    );
    assert!(in_flight <= CLIENTS as i64);
    assert!(
        acknowledged <= sold && sold <= acknowledged + in_flight,
        "acknowledged {acknowledged} <= sold {sold} <= acknowledged + in flight {} fails",
        acknowledged + in_flight
    );
    // Every unit sold is accounted for by an id in the ledger: exactly the acknowledged ones
    // plus the in-flight ones the server applied before it died.
    assert_eq!(sold, acknowledged + f.in_flight_applied as i64);
    check_acknowledged(&server, &f);
}

/// With `appendfsync everysec` Redis still writes each change to the AOF before it replies, so
/// a process crash (SIGKILL, unlike a power cut) normally loses nothing either. The figure is
/// reported; what must hold whatever the fsync policy is checked: nothing oversold, and the
/// ledger accounts for every unit sold.
#[test]
fn a_crash_with_appendfsync_everysec_oversells_nothing() {
    let (server, f) = crash_under_load("everysec", random_kill_point());
    let mut con = server.conn();
    let acknowledged = f.acknowledged.len() as i64;
    let sold = STOCK - f.remaining;
    let mut pipe = redis::pipe();
    for id in &f.acknowledged {
        pipe.cmd("STOCK.REQUEST").arg("sku").arg(id);
    }
    let replies: Vec<Value> = pipe.query(&mut con).expect("STOCK.REQUEST pipeline");
    let kept = replies.iter().filter(|v| **v == Value::Int(1)).count() as i64;
    println!(
        "appendfsync everysec, SIGKILL at {}% of the stock ({} units acknowledged, {} requests \
         on the wire): acknowledged {acknowledged}, in flight {} (applied {}), remaining {} \
         (sold {sold}); acknowledged but lost: {}",
        f.kill_at_percent,
        f.moment.acknowledged,
        f.moment.outstanding,
        f.in_flight.len(),
        f.in_flight_applied,
        f.remaining,
        acknowledged - kept
    );
    assert_eq!(
        sold,
        kept + f.in_flight_applied as i64,
        "units sold without a ledger entry, or ledger entries without a unit"
    );
}
