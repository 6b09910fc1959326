//! Commands: their registration, the entry point every command runs through (a panic guard:
//! a bug becomes an error reply, never a dead server), `COMMAND DOCS`/`COMMAND INFO` and ACL
//! categories.

use std::ffi::{c_char, c_int, CStr};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use fence_core::error::{FenceError, PANIC};
use redis_module::raw;

use super::api::{call, optional};
use super::ctx::{Args, Ctx, Reply};

/// A command handler: what every command is, between the entry point and the reply.
pub type Handler = for<'a> fn(&Ctx<'a>, &Args<'a>) -> Result<Reply, FenceError>;

/// The `extern "C"` function Redis calls for a command.
pub type EntryPoint =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// Runs `handler` for the arguments Redis passed and sends its reply; a panic is logged and
/// answered with an error.
pub fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let ctx = Ctx::new(ctx);
    let args = Args::new(argv, argc);
    match catch_unwind(AssertUnwindSafe(|| handler(&ctx, &args))) {
        Ok(result) => ctx.send(result),
        Err(cause) => {
            let what = cause
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| cause.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ctx.log_warning(&format!("fence: caught a panic in a command: {what}"));
            ctx.reply_error(PANIC);
        }
    }
    raw::REDISMODULE_OK as c_int
}

/// Declares the `extern "C"` entry point of each command: `name => handler`.
macro_rules! entry_points {
    ($($entry:ident => $handler:path),* $(,)?) => {
        $(
            extern "C" fn $entry(
                ctx: *mut ::redis_module::raw::RedisModuleCtx,
                argv: *mut *mut ::redis_module::raw::RedisModuleString,
                argc: ::std::ffi::c_int,
            ) -> ::std::ffi::c_int {
                $crate::ffi::command::run(ctx, argv, argc, $handler)
            }
        )*
    };
}
pub(crate) use entry_points;

/// Registers a command whose key positions are `first`, `last`, `step` (0, 0, 0: none).
pub fn create(
    ctx: &Ctx<'_>,
    name: &CStr,
    entry: EntryPoint,
    flags: &CStr,
    keys: (c_int, c_int, c_int),
) -> Result<(), String> {
    let status = call!(RedisModule_CreateCommand(
        ctx.raw(),
        name.as_ptr(),
        Some(entry),
        flags.as_ptr(),
        keys.0,
        keys.1,
        keys.2
    ));
    if status != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "cannot register command {}",
            name.to_string_lossy()
        ));
    }
    Ok(())
}

/// Adds the ACL category `category` and puts each command in its categories, where the server
/// can (Redis 7.4+ adds categories); returns false where it cannot.
pub fn set_acl_categories(ctx: &Ctx<'_>, category: &CStr, commands: &[(&CStr, &CStr)]) -> bool {
    let (Some(add), Some(set), Some(get)) = (
        optional!(RedisModule_AddACLCategory),
        optional!(RedisModule_SetCommandACLCategories),
        optional!(RedisModule_GetCommand),
    ) else {
        return false;
    };
    // SAFETY: the load context; static C strings.
    if unsafe { add(ctx.raw(), category.as_ptr()) } != raw::REDISMODULE_OK as c_int {
        return false;
    }
    for (name, categories) in commands {
        // SAFETY: as above; the command was registered.
        unsafe {
            let command = get(ctx.raw(), name.as_ptr());
            if !command.is_null() {
                set(command, categories.as_ptr());
            }
        }
    }
    true
}

/// What an argument of a command's syntax is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    Key,
    String,
    Integer,
    /// A word alone (`DETAIL`): its token is the whole argument.
    PureToken,
}

/// One argument of a command's syntax.
pub struct DocArg {
    pub name: &'static CStr,
    pub kind: ArgKind,
    /// The option word before it (`WAIT`, `ID`, ...).
    pub token: Option<&'static CStr>,
    /// Whether it may be left out (every option but a cart's `ID`).
    pub optional: bool,
}

/// What a command does to its key (key spec flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    Read,
    /// Reads and updates (also creates: Redis describes SET so too).
    Update,
    Delete,
}

/// One command's documentation.
pub struct Doc {
    pub name: &'static CStr,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    pub arity: c_int,
    pub access: KeyAccess,
    /// Whether an optional `EVENTS stream-key` names a second key.
    pub events_key: bool,
    /// Keys are `numkeys` keys from position 2 (a cart): the spec declares the first and is
    /// marked incomplete, so Redis asks the command for the others (getkeys-api).
    pub numkeys: bool,
    pub args: &'static [DocArg],
}

fn key_flags(access: KeyAccess) -> u32 {
    match access {
        KeyAccess::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        KeyAccess::Update => {
            raw::REDISMODULE_CMD_KEY_RW
                | raw::REDISMODULE_CMD_KEY_ACCESS
                | raw::REDISMODULE_CMD_KEY_UPDATE
        }
        KeyAccess::Delete => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
    }
}

/// Sets the documentation of every command that has it (`RedisModule_SetCommandInfo`, Redis
/// 7.0+); returns how many got it.
pub fn set_docs(ctx: &Ctx<'_>, docs: &[Doc]) -> usize {
    let (Some(get), Some(set)) = (
        optional!(RedisModule_GetCommand),
        optional!(RedisModule_SetCommandInfo),
    ) else {
        return 0;
    };
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: size_of::<raw::RedisModuleCommandArg>(),
    };
    let mut done = 0;
    for doc in docs {
        // SAFETY: the load context; the command was registered.
        let command = unsafe { get(ctx.raw(), doc.name.as_ptr()) };
        if command.is_null() {
            continue;
        }
        // SAFETY: all-zero is the documented terminator (and a valid value) for these structs.
        let mut spec: [raw::RedisModuleCommandKeySpec; 3] = unsafe { std::mem::zeroed() };
        spec[0].flags = u64::from(key_flags(doc.access));
        spec[0].begin_search_type =
            raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        spec[0].bs.index.pos = 1;
        spec[0].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        spec[0].fk.range.lastkey = 0;
        spec[0].fk.range.keystep = 1;
        spec[0].fk.range.limit = 0;
        if doc.numkeys {
            spec[0].flags |= u64::from(raw::REDISMODULE_CMD_KEY_INCOMPLETE);
            spec[0].bs.index.pos = 2;
        }
        if doc.events_key {
            // The stream after `EVENTS`. Marked incomplete (an ID could itself be the word
            // EVENTS), so Redis asks the command itself for exact positions (getkeys-api).
            spec[1].flags = u64::from(
                raw::REDISMODULE_CMD_KEY_RW
                    | raw::REDISMODULE_CMD_KEY_INSERT
                    | raw::REDISMODULE_CMD_KEY_INCOMPLETE,
            );
            spec[1].begin_search_type =
                raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_KEYWORD;
            spec[1].bs.keyword.keyword = c"EVENTS".as_ptr();
            spec[1].bs.keyword.startfrom = 3;
            spec[1].find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
            spec[1].fk.range.lastkey = 0;
            spec[1].fk.range.keystep = 1;
            spec[1].fk.range.limit = 0;
        }
        let mut args: Vec<raw::RedisModuleCommandArg> = doc
            .args
            .iter()
            .map(|a| {
                // SAFETY: as above, zero is a valid start.
                let mut arg: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
                arg.name = a.name.as_ptr();
                arg.type_ = match a.kind {
                    ArgKind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                    ArgKind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                    ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                    ArgKind::PureToken => {
                        raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN
                    }
                };
                // The stock is key spec 0; a stream after EVENTS is key spec 1.
                arg.key_spec_index = match (a.kind == ArgKind::Key, a.token) {
                    (true, None) => 0,
                    (true, Some(_)) => 1,
                    _ => -1,
                };
                arg.token = a.token.map_or(ptr::null(), CStr::as_ptr);
                arg.flags = if a.optional {
                    raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
                } else {
                    0
                };
                arg
            })
            .collect();
        // SAFETY: the terminator.
        args.push(unsafe { std::mem::zeroed() });
        let info = raw::RedisModuleCommandInfo {
            version: &version,
            summary: doc.summary.as_ptr(),
            complexity: doc.complexity.as_ptr(),
            since: c"0.1.0".as_ptr(),
            history: ptr::null_mut(),
            tips: ptr::null::<c_char>(),
            arity: doc.arity,
            key_specs: spec.as_mut_ptr(),
            args: args.as_mut_ptr(),
        };
        // SAFETY: every pointer is valid for the call; Redis copies what it keeps.
        if unsafe { set(command, &info) } == raw::REDISMODULE_OK as c_int {
            done += 1;
        }
    }
    done
}

/// Sets the module's options at load: the commands signal modified keys themselves, and
/// both types' loaders handle I/O errors and loading beside the old data.
pub fn set_module_options(ctx: &Ctx<'_>) {
    call!(RedisModule_SetModuleOptions(
        ctx.raw(),
        (raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED
            | raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS
            | raw::REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD) as c_int
    ));
}

/// The `INFO` section's writer.
pub struct InfoSection {
    ctx: *mut raw::RedisModuleInfoCtx,
}

impl InfoSection {
    /// Adds an integer field (shown as `fence_<name>`).
    pub fn int(&mut self, name: &CStr, value: u64) {
        call!(RedisModule_InfoAddFieldULongLong(
            self.ctx,
            name.as_ptr(),
            value
        ));
    }

    /// Adds a text field.
    pub fn text(&mut self, name: &CStr, value: &str) {
        if let Ok(value) = std::ffi::CString::new(value) {
            call!(RedisModule_InfoAddFieldCString(
                self.ctx,
                name.as_ptr(),
                value.as_ptr()
            ));
        }
    }
}

/// What fills the module's `INFO` section.
pub trait InfoProvider: 'static {
    fn fill(section: &mut InfoSection);
}

extern "C" fn info_cb<P: InfoProvider>(ctx: *mut raw::RedisModuleInfoCtx, _crash: c_int) {
    let run = || {
        if call!(RedisModule_InfoAddSection(ctx, ptr::null())) != raw::REDISMODULE_OK as c_int {
            return;
        }
        P::fill(&mut InfoSection { ctx });
    };
    if catch_unwind(AssertUnwindSafe(run)).is_err() {
        super::api::log(ptr::null_mut(), "warning", "fence: caught a panic in INFO");
    }
}

/// Registers the module's `INFO` section.
pub fn register_info<P: InfoProvider>(ctx: &Ctx<'_>) -> Result<(), String> {
    if call!(RedisModule_RegisterInfoFunc(ctx.raw(), Some(info_cb::<P>)))
        != raw::REDISMODULE_OK as c_int
    {
        return Err("cannot register the INFO section".into());
    }
    Ok(())
}
