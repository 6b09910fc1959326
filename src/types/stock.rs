//! `fence-stk`: a `Stock` (available, fence, deducted, the ledger of request ids with their
//! holds, the restock ledger, the expire stream).

use fence_core::clock::{is_from_future, now_us};
use fence_core::effects::{ExpireStreamEffect, LimitEffect, RestockEffect, StockEffect};
use fence_core::encoding::{expire_stream_saved, load_stock, STOCK_ENCODING};
use fence_core::stock::Stock;
use redis_module::native_types::RedisType;

use crate::ffi::io::{Aof, Digest, Origin, Rdb, RdbOut};
use crate::ffi::module_type::{methods, ModuleType, ValueId};
use crate::ffi::RStr;
use crate::services::{holds, tokens};

/// The stock data type.
pub static STOCK_TYPE: RedisType =
    RedisType::new("fence-stk", STOCK_ENCODING, methods::<StockType>());

pub struct StockType;

impl ModuleType for StockType {
    type Value = Box<Stock>;

    fn load(rdb: &mut Rdb<'_>, encver: i32) -> Option<Box<Stock>> {
        let stock = match load_stock(rdb, encver) {
            Ok(stock) => stock,
            Err(e) => {
                tokens::warn(&format!("fence: refused to load a stock: {e}"));
                return None;
            }
        };
        if rdb.origin() == Origin::Client && is_from_future(stock.fence, now_us()) {
            tokens::warn(&format!(
                "fence: refused to restore a stock whose fence {} is more than 24 hours ahead \
                 of this server's clock",
                stock.fence
            ));
            return None;
        }
        Some(Box::new(stock))
    }

    fn kept(origin: Origin, id: ValueId, stock: &Stock) {
        // A token a stock accepted is never issued again by this server.
        tokens::loaded(origin, id, stock.fence);
        // Its holds are indexed by the `loaded` or `restore` event that follows.
        holds::loaded(stock);
    }

    /// Encoding 5: the scalars, the expire stream, the limit, the buyer table, then each
    /// ledger, each table as its count and its blobs of records.
    fn save(out: &mut RdbOut<'_>, stock: &Stock) {
        out.signed(stock.available);
        out.unsigned(stock.fence);
        out.signed(stock.deducted);
        let (key, mode, len) = expire_stream_saved(stock.expire_stream.as_ref());
        out.bytes(key);
        out.unsigned(mode);
        if let Some(len) = len {
            out.signed(len);
        }
        out.unsigned(stock.limit.unsigned_abs());
        out.unsigned(stock.buyers_len() as u64);
        stock.save_buyer_blobs(|blob| out.bytes(blob));
        out.unsigned(stock.ledger_len() as u64);
        stock.save_entry_blobs(|blob| out.bytes(blob));
        out.unsigned(stock.restocks_len() as u64);
        stock.save_restock_blobs(|blob| out.bytes(blob));
    }

    fn rewrite(aof: &mut Aof<'_>, key: RStr<'_>, stock: &Stock) {
        let state = StockEffect {
            available: stock.available,
            fence: stock.fence,
            deducted: stock.deducted,
            reset: true,
        };
        aof.emit(key, &state.encode(None));
        // One command per entry, in the order the entries were made, so two rewrites of one
        // stock are byte-identical.
        if stock.limit > 0 {
            aof.emit(key, &LimitEffect { limit: stock.limit }.encode());
        }
        for (id, value) in stock.entries() {
            aof.emit(key, &stock.entry_effect(id, value).encode());
        }
        if let Some(stream) = &stock.expire_stream {
            let effect = ExpireStreamEffect {
                key: Some(&stream.key),
                maxlen: stream.maxlen,
            };
            aof.emit(key, &effect.encode());
        }
        for (id, quantity) in stock.restock_entries() {
            let effect = RestockEffect {
                available: stock.available,
                id,
                quantity,
            };
            aof.emit(key, &effect.encode());
        }
    }

    fn mem_usage(stock: &Stock) -> usize {
        stock.mem_usage()
    }

    /// The scalars and an order-independent 128-bit summary of each ledger (the module's own
    /// hash of every entry; Redis's SHA-1 per entry would cost four blocks each), so two
    /// servers that made the same entries in another order agree.
    fn digest(d: &mut Digest<'_>, stock: &Stock) {
        d.int(stock.available);
        d.int(i64::try_from(stock.fence).unwrap_or(i64::MAX));
        d.int(stock.deducted);
        let (ledger, restocks) = stock.summaries();
        d.int(i64::try_from(stock.ledger_len()).unwrap_or(i64::MAX));
        d.bytes(&ledger);
        d.int(i64::try_from(stock.restocks_len()).unwrap_or(i64::MAX));
        d.bytes(&restocks);
        d.int(stock.limit);
        d.int(i64::try_from(stock.buyers_len()).unwrap_or(i64::MAX));
        d.end_sequence();
    }

    fn copy(stock: &Stock) -> Option<Box<Stock>> {
        tokens::settle();
        Some(Box::new(stock.clone()))
    }

    /// A stock leaves the keyspace: it was in it, so a pending restored fence is observed.
    fn unlink(_key: RStr<'_>, _id: ValueId) {
        tokens::settle();
    }

    fn freed(id: ValueId) {
        tokens::forget(id);
    }

    /// Lets UNLINK and lazyfree free a large ledger in the background.
    fn free_effort(stock: &Stock) -> usize {
        stock.free_effort()
    }
}
