//! An order consumer (the application this crate's `orders` module is the reusable part of):
//! reads the order events `STOCK.DEDUCT … EVENTS stream` and `STOCK.CART … EVENTS stream`
//! append, with a consumer group, creates each order line once in a JSON-lines file (a line is
//! one stock's part of an order, keyed by stock key and request id: a cart has one per item),
//! rejects and refunds the single orders whose request id ends with `--reject-suffix` (never a
//! cart's items: a cart is accepted or cancelled whole, with `STOCK.CART.REFUND … EVENTS`),
//! cancels a line when a `refund` or an `expire` entry comes for it (an `expire` is an order
//! placed with `HOLD` and not paid by its deadline: the module already gave its units back; it
//! is handled like a `refund`), and acknowledges each entry after it is handled. Stop it at any
//! moment (or use `--crash-after`) and run it again: no line is lost, created twice or
//! cancelled twice.
//!
//! ```sh
//! make run   # another terminal: Redis with the module on 6379
//! cargo run -p redis-fence-client --example consumer -- --redis redis://127.0.0.1:6379/ \
//!     --stream '{sku:42}:orders' --group orders --consumer c1 --orders orders.jsonl --demo 20
//! ```
//!
//! Options (all but `--stream` have defaults):
//!
//! | option | default | meaning |
//! | --- | --- | --- |
//! | `--redis URL` | `redis://127.0.0.1:6379/` | the server |
//! | `--stream KEY` | | the stream the deductions write to |
//! | `--group NAME` | `orders` | the consumer group (created when missing) |
//! | `--consumer NAME` | `c1` | this consumer; keep it across restarts |
//! | `--orders PATH` | `orders.jsonl` | the order book |
//! | `--reject-suffix S` | none | reject and refund single orders whose id ends with `S` (a cart's items never) |
//! | `--refund-events` | off | refund with `EVENTS <stream>` (a `refund` entry follows) |
//! | `--idle-ms N` | 5000 | stop after N ms without a new entry |
//! | `--max-orders N` | none | stop after N new order lines |
//! | `--claim-idle-ms N` | none | take over entries other consumers left pending N ms |
//! | `--batch N` | 100 | entries per read |
//! | `--crash-after N` | none | exit with status 3 right after writing the N-th record (a line created, rejected or cancelled), before its `XACK` |
//! | `--demo N` | none | first place N orders of 1 on `--sku` (opened with 100 units when missing) |
//! | `--sku KEY` | `{sku:42}` | the stock `--demo` deducts from |

use std::process::ExitCode;
use std::time::Duration;

use redis_fence_client::{DeductOptions, Events, FenceCommands};

mod app;

use app::Config;

struct Args {
    redis: String,
    config: Config,
    demo: Option<u64>,
    sku: String,
}

fn usage() -> String {
    "usage: consumer --stream KEY [--redis URL] [--group NAME] [--consumer NAME] \
     [--orders PATH] [--reject-suffix S] [--refund-events] [--idle-ms N] [--max-orders N] \
     [--claim-idle-ms N] [--batch N] [--crash-after N] [--demo N] [--sku KEY]"
        .to_string()
}

fn parse_args(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut redis = "redis://127.0.0.1:6379/".to_string();
    let mut stream = None;
    let mut config = Config::new("", "c1", "orders.jsonl");
    let mut demo = None;
    let mut sku = "{sku:42}".to_string();
    while let Some(flag) = words.next() {
        if flag == "--refund-events" {
            config.refund_events = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a whole number: {v}"))
        };
        match flag.as_str() {
            "--redis" => redis = value,
            "--stream" => stream = Some(value),
            "--group" => config.group = value,
            "--consumer" => config.consumer = value,
            "--orders" => config.orders = value.into(),
            "--reject-suffix" => config.reject_suffix = Some(value),
            "--idle-ms" => config.idle_exit = Duration::from_millis(number(&value)?),
            "--max-orders" => config.max_orders = Some(number(&value)?),
            "--claim-idle-ms" => config.claim_idle = Some(Duration::from_millis(number(&value)?)),
            "--batch" => {
                config.batch = usize::try_from(number(&value)?).map_err(|e| e.to_string())?
            }
            "--crash-after" => config.crash_after_writes = Some(number(&value)?),
            "--demo" => demo = Some(number(&value)?),
            "--sku" => sku = value,
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    config.stream = stream.ok_or_else(|| format!("--stream is required\n{}", usage()))?;
    Ok(Args {
        redis,
        config,
        demo,
        sku,
    })
}

/// Places `n` orders of one unit on `sku`, with events on `stream`.
fn demo(con: &mut redis::Connection, sku: &str, stream: &str, n: u64) -> redis::RedisResult<()> {
    if redis::cmd("EXISTS").arg(sku).query::<i64>(con)? == 0 {
        con.stock_set(sku, 100)?;
    }
    let run = std::process::id();
    let mut placed = 0;
    for i in 0..n {
        let id = format!("demo-{run}-{i}");
        let options = DeductOptions::new().id(&id).events(Events::to(stream));
        match con.stock_deduct(sku, 1, &options)?.remaining() {
            Some(_) => placed += 1,
            None => {
                println!("demo: {sku} sold out after {placed} orders");
                break;
            }
        }
    }
    println!("demo: placed {placed} orders on {sku}");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let result = redis::Client::open(args.redis.as_str())
        .and_then(|client| client.get_connection())
        .and_then(|mut con| {
            if let Some(n) = args.demo {
                demo(&mut con, &args.sku, &args.config.stream, n)?;
            }
            app::run(&mut con, &args.config)
        });
    match result {
        Ok(summary) => {
            println!(
                "{}: created {}, rejected {} (refunded {} units), cancelled {}, already in the \
                 book {}, other events {}, claimed {}, acknowledged {}",
                args.config.consumer,
                summary.created,
                summary.rejected,
                summary.refunded_units,
                summary.cancelled,
                summary.duplicates,
                summary.other_events,
                summary.claimed,
                summary.acked
            );
            if let Some(entry) = summary.crashed_at {
                println!("crash: entry {entry} written to the book and not acknowledged");
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
