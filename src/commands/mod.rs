//! The command table. Each command is a handler `fn(&Ctx, &Args) -> CommandResult`: parse,
//! decide (`fence_core`), apply and replicate (through `crate::services` and `crate::ffi`),
//! and return the whole reply; `crate::ffi::command::run` sends it, inside a panic guard.

pub mod cart;
pub mod docs;
pub mod events;
pub mod internal;
pub mod lock;
pub mod stock;

use std::ffi::CStr;

use fence_core::error::FenceError;

use crate::ffi::command::{self, entry_points, EntryPoint};
use crate::ffi::{Ctx, Reply};

/// What every command handler returns.
pub type CommandResult = Result<Reply, FenceError>;

entry_points! {
    lock_acquire => lock::acquire,
    lock_renew => lock::renew,
    lock_release => lock::release,
    lock_status => lock::status,
    stock_set => stock::set,
    stock_add => stock::add,
    stock_get => stock::get,
    stock_deduct => stock::deduct,
    stock_refund => stock::refund,
    stock_request => stock::request,
    stock_info => stock::info,
    stock_confirm => stock::confirm,
    stock_limit => stock::limit,
    stock_buyer => stock::buyer,
    stock_cart => cart::cart,
    stock_cart_refund => cart::refund,
    stock_cart_confirm => cart::confirm,
    fence_lock => internal::lock,
    fence_stock => internal::stock,
    fence_restock => internal::restock,
    fence_entry => internal::entry,
    fence_expire_stream => internal::expire_stream,
    fence_limit => internal::limit,
}

/// Name, entry point, flags and ACL categories (besides `@fence`) of every command. Each
/// takes one key, at position 1, but the cart commands (`CART_COMMANDS`).
const COMMANDS: &[(&CStr, EntryPoint, &CStr, &CStr)] = &[
    (
        c"LOCK.ACQUIRE",
        lock_acquire,
        c"write deny-oom fast",
        c"fence write fast",
    ),
    (
        c"LOCK.RENEW",
        lock_renew,
        c"write fast",
        c"fence write fast",
    ),
    (
        c"LOCK.RELEASE",
        lock_release,
        c"write fast",
        c"fence write fast",
    ),
    (
        c"LOCK.STATUS",
        lock_status,
        c"readonly fast",
        c"fence read fast",
    ),
    (c"STOCK.SET", stock_set, c"write deny-oom", c"fence write"),
    (
        c"STOCK.ADD",
        stock_add,
        c"write deny-oom fast",
        c"fence write fast",
    ),
    (
        c"STOCK.GET",
        stock_get,
        c"readonly fast",
        c"fence read fast",
    ),
    (
        c"STOCK.DEDUCT",
        stock_deduct,
        c"write deny-oom fast getkeys-api",
        c"fence write fast",
    ),
    (
        c"STOCK.REFUND",
        stock_refund,
        c"write fast getkeys-api",
        c"fence write fast",
    ),
    (
        c"STOCK.REQUEST",
        stock_request,
        c"readonly fast",
        c"fence read fast",
    ),
    (
        c"STOCK.INFO",
        stock_info,
        c"readonly fast",
        c"fence read fast",
    ),
    (
        c"STOCK.CONFIRM",
        stock_confirm,
        c"write fast",
        c"fence write fast",
    ),
    (
        c"STOCK.LIMIT",
        stock_limit,
        c"write fast",
        c"fence write fast",
    ),
    (
        c"STOCK.BUYER",
        stock_buyer,
        c"readonly fast",
        c"fence read fast",
    ),
    // The cart commands: `numkeys` keys from position 2, reported by the commands themselves.
    (
        c"STOCK.CART",
        stock_cart,
        c"write deny-oom getkeys-api",
        c"fence write",
    ),
    (
        c"STOCK.CART.REFUND",
        stock_cart_refund,
        c"write getkeys-api",
        c"fence write",
    ),
    (
        c"STOCK.CART.CONFIRM",
        stock_cart_confirm,
        c"write getkeys-api",
        c"fence write",
    ),
    // Replication-only forms: refused unless they come from the master link or the AOF.
    (c"FENCE.LOCK", fence_lock, c"write", c"fence write"),
    (c"FENCE.STOCK", fence_stock, c"write", c"fence write"),
    (c"FENCE.RESTOCK", fence_restock, c"write", c"fence write"),
    (c"FENCE.ENTRY", fence_entry, c"write", c"fence write"),
    (
        c"FENCE.EXPIRESTREAM",
        fence_expire_stream,
        c"write",
        c"fence write",
    ),
    (c"FENCE.LIMIT", fence_limit, c"write", c"fence write"),
];

/// The commands whose keys are `numkeys` keys from position 2 (`getkeys-api`: the command
/// reports them; the first is declared).
const CART_COMMANDS: &[&CStr] = &[c"STOCK.CART", c"STOCK.CART.REFUND", c"STOCK.CART.CONFIRM"];

/// Registers every command with Redis, its ACL categories and its documentation.
pub fn register(ctx: &Ctx<'_>) -> Result<(), String> {
    for (name, entry, flags, _) in COMMANDS {
        let keys = if CART_COMMANDS.contains(name) {
            (2, 2, 1)
        } else {
            (1, 1, 1)
        };
        command::create(ctx, name, *entry, flags, keys)?;
    }
    register_debug(ctx)?;
    // On servers that can add a category (Redis 7.4+): `ACL SETUSER … +@fence` works, with
    // `@read`/`@write`/`@fast` as fits; older servers keep the plain registration.
    let categories: Vec<(&CStr, &CStr)> = COMMANDS.iter().map(|c| (c.0, c.3)).collect();
    if !command::set_acl_categories(ctx, c"fence", &categories) {
        ctx.log("notice", "fence: no @fence ACL category on this server");
    }
    // Documentation is a nicety: a server that cannot take it still runs every command.
    if command::set_docs(ctx, docs::DOCS) < COMMANDS.len() {
        ctx.log("notice", "fence: COMMAND DOCS not available on this server");
    }
    Ok(())
}

/// `FENCE.DEBUG-PANIC`: panics on purpose, so the tests can show that the guard turns a panic
/// into an error reply and the server keeps running. Debug builds only (the tests load the
/// debug build); a release build has no such command.
#[cfg(debug_assertions)]
fn debug_panic(_ctx: &Ctx<'_>, _args: &crate::ffi::Args<'_>) -> CommandResult {
    panic!("FENCE.DEBUG-PANIC was called: testing the panic guard")
}

#[cfg(debug_assertions)]
entry_points! {
    fence_debug_panic => debug_panic,
}

#[cfg(debug_assertions)]
fn register_debug(ctx: &Ctx<'_>) -> Result<(), String> {
    command::create(
        ctx,
        c"FENCE.DEBUG-PANIC",
        fence_debug_panic,
        c"readonly",
        (0, 0, 0),
    )
}

#[cfg(not(debug_assertions))]
fn register_debug(_ctx: &Ctx<'_>) -> Result<(), String> {
    Ok(())
}
