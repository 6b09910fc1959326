//! `fence-lck`: a lease (owner and token) in one block; the expiry is the key's own. Its aux
//! data is the highest token issued, saved before the keyspace.

use fence_core::clock::{is_from_future, now_us, TOKENS};
use fence_core::effects::LockEffect;
use fence_core::encoding::{load_lock, Source, LOCK_ENCODING};
use fence_core::lease::LeaseView;
use redis_module::native_types::RedisType;

use crate::ffi::io::{Aof, Digest, Origin, Rdb, RdbOut};
use crate::ffi::lease::{self, LeaseBlock};
use crate::ffi::module_type::{methods, ModuleType, ValueId};
use crate::ffi::RStr;
use crate::services::{expiry, tokens};

/// The lock data type.
pub static LOCK_TYPE: RedisType = RedisType::new("fence-lck", LOCK_ENCODING, methods::<LockType>());

pub struct LockType;

impl ModuleType for LockType {
    type Value = LeaseBlock;

    fn load(rdb: &mut Rdb<'_>, encver: i32) -> Option<LeaseBlock> {
        let lock = match load_lock(rdb, encver) {
            Ok(lock) => lock,
            Err(e) => {
                tokens::warn(&format!("fence: refused to load a lock: {e}"));
                return None;
            }
        };
        // A client's RESTORE or MIGRATE on a master may not bring a token from the future.
        if rdb.origin() == Origin::Client && is_from_future(lock.token, now_us()) {
            tokens::warn(&format!(
                "fence: refused to restore a lock whose token {} is more than 24 hours ahead \
                 of this server's clock",
                lock.token
            ));
            return None;
        }
        Some(LeaseBlock::new(&lock.owner, lock.token))
    }

    fn kept(origin: Origin, id: ValueId, lease: LeaseView<'_>) {
        // A loaded grant is never issued again.
        tokens::loaded(origin, id, lease.token);
    }

    fn save(out: &mut RdbOut<'_>, lease: LeaseView<'_>) {
        out.unsigned(lease.token);
        out.bytes(lease.owner);
    }

    fn rewrite(aof: &mut Aof<'_>, key: RStr<'_>, lease: LeaseView<'_>) {
        // Expire-at 0 leaves the expiry alone: Redis writes its own PEXPIREAT after this.
        let effect = LockEffect {
            owner: lease.owner,
            token: lease.token,
            expire_at: 0,
        };
        aof.emit(key, &effect.encode());
    }

    fn mem_usage(lease: LeaseView<'_>) -> usize {
        lease::mem_usage(&lease)
    }

    fn digest(d: &mut Digest<'_>, lease: LeaseView<'_>) {
        d.bytes(lease.owner);
        d.int(i64::try_from(lease.token).unwrap_or(i64::MAX));
        d.end_sequence();
    }

    fn copy(lease: LeaseView<'_>) -> Option<LeaseBlock> {
        tokens::settle();
        Some(LeaseBlock::new(lease.owner, lease.token))
    }

    /// A lock leaves the keyspace: it was in it, so a pending restored token is observed; and
    /// the expiry accounting learns its name.
    fn unlink(key: RStr<'_>, _id: ValueId) {
        tokens::settle();
        expiry::lock_unlinked(key);
    }

    fn freed(id: ValueId) {
        tokens::forget(id);
    }

    const AUX: bool = true;

    fn aux_save(out: &mut RdbOut<'_>) {
        tokens::settle();
        out.unsigned(TOKENS.last());
    }

    /// The highest token of the server that wrote the RDB (raising the clock at most to its
    /// ceiling). Redis ignores a stream error when the callback reports success, so it is
    /// checked.
    fn aux_load(rdb: &mut Rdb<'_>, encver: i32) -> bool {
        if !(1..=LOCK_ENCODING).contains(&encver) {
            tokens::warn(&format!(
                "fence: unknown encoding version {encver} of the token high-water mark"
            ));
            return false;
        }
        let Some(last) = rdb.unsigned() else {
            tokens::warn("fence: cannot read the token high-water mark");
            return false;
        };
        tokens::observe(last);
        true
    }
}
