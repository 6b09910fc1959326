//! Memory per item, from `INFO memory`'s used_memory: a lock against a `SET NX PX` string, a
//! stock's ledger entry against a member of the Lua dedupe set.

use std::fmt::Write as _;

use super::OWNER;
use crate::harness::{used_memory, Res};
use crate::report::{head, row, Align};

fn fill(
    con: &mut redis::Connection,
    n: usize,
    mut each: impl FnMut(&mut redis::Pipeline, usize),
) -> Res<()> {
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for j in i..(i + 10_000).min(n) {
            each(&mut pipe, j);
        }
        pipe.query::<()>(con)?;
        i += 10_000;
    }
    Ok(())
}

fn per_item(
    con: &mut redis::Connection,
    n: usize,
    each: impl FnMut(&mut redis::Pipeline, usize),
    setup: impl FnOnce(&mut redis::Connection) -> Res<()>,
) -> Res<f64> {
    redis::cmd("FLUSHALL").query::<()>(con)?;
    setup(con)?;
    let _ = redis::cmd("MEMORY").arg("PURGE").query::<()>(con);
    let before = used_memory(con)?;
    fill(con, n, each)?;
    let after = used_memory(con)?;
    Ok((after - before) as f64 / n as f64)
}

/// The section: `n` locks, strings, ledger entries and set members, each on an empty server.
pub fn memory(con: &mut redis::Connection, n: usize, out: &mut String) -> Res<()> {
    let set = per_item(
        con,
        n,
        |p, i| {
            p.cmd("SET")
                .arg(format!("lock:{i:012}"))
                .arg(OWNER)
                .arg("NX")
                .arg("PX")
                .arg(3_600_000)
                .ignore();
        },
        |_| Ok(()),
    )?;
    let lock = per_item(
        con,
        n,
        |p, i| {
            p.cmd("LOCK.ACQUIRE")
                .arg(format!("lock:{i:012}"))
                .arg(OWNER)
                .arg(3_600_000)
                .ignore();
        },
        |_| Ok(()),
    )?;
    let ledger = per_item(
        con,
        n,
        |p, i| {
            p.cmd("STOCK.DEDUCT")
                .arg("sku")
                .arg(1)
                .arg("ID")
                .arg(format!("order:{i:012}"))
                .ignore();
        },
        |c| {
            Ok(redis::cmd("STOCK.SET")
                .arg("sku")
                .arg(1_000_000_000_000i64)
                .query::<()>(c)?)
        },
    )?;
    let dedupe = per_item(
        con,
        n,
        |p, i| {
            p.cmd("SADD")
                .arg("sku:orders")
                .arg(format!("order:{i:012}"))
                .ignore();
        },
        |_| Ok(()),
    )?;
    redis::cmd("FLUSHALL").query::<()>(con)?;
    writeln!(out, "{n} keys or entries each; owner 36 bytes; key names `lock:` + 12 digits; request ids `order:` + 12 digits; from `INFO memory` used_memory.\n")?;
    head(
        out,
        &[
            ("what", Align::Left),
            ("bytes each", Align::Right),
            ("vs", Align::Right),
        ],
    )?;
    for cells in [
        [
            "SET NX PX lock".to_string(),
            format!("{set:.1}"),
            "1.00x".into(),
        ],
        [
            "LOCK.ACQUIRE lock".into(),
            format!("{lock:.1}"),
            format!("{:.2}x SET NX PX", lock / set),
        ],
        [
            "stock ledger entry (STOCK.DEDUCT … ID)".into(),
            format!("{ledger:.1}"),
            format!("{:.2}x SADD", ledger / dedupe),
        ],
        [
            "Lua dedupe-set member (SADD)".into(),
            format!("{dedupe:.1}"),
            "1.00x".into(),
        ],
    ] {
        row(out, &cells)?;
    }
    writeln!(out)?;
    Ok(())
}
