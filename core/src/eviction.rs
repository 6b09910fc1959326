//! Eviction risk: which keys Redis's `maxmemory-policy` may evict, and which writes are
//! refused for it while `fence.allow-eviction` is `no`. Plain Rust; `commands::eviction`
//! reads the server's settings into `POLICY` and applies the rule to commands.
//!
//! An evicted lock is free to the next caller while its holder still believes it holds it,
//! and an evicted stock takes its ledger with it, so a retried order deducts again once the
//! stock is set up anew. Locks always have a TTL; a stock has one only if the user gave it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Which of the module's keys the eviction policy may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// No `maxmemory`, or `noeviction`.
    None,
    /// `allkeys-*`: every key, locks and stocks alike.
    LocksAndStocks,
    /// `volatile-*`: keys with a TTL, so every lock and the stocks that have a TTL.
    LocksAndStocksWithTtl,
}

/// The key a write would create or grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Lock,
    /// A module stock (or an empty key about to become one, which has no TTL).
    Stock {
        has_ttl: bool,
    },
}

impl Risk {
    /// The risk of `policy` (as `CONFIG GET maxmemory-policy` says it) with `maxmemory`
    /// bytes (0: no limit, so nothing is ever evicted). A policy this module does not know is
    /// judged by its prefix, and one without a known prefix as `allkeys-*`: safe by default.
    pub fn of(maxmemory: u64, policy: &str) -> Risk {
        if maxmemory == 0 {
            return Risk::None;
        }
        match policy {
            "noeviction" => Risk::None,
            "allkeys-lru" | "allkeys-lfu" | "allkeys-random" => Risk::LocksAndStocks,
            "volatile-lru" | "volatile-lfu" | "volatile-random" | "volatile-ttl" => {
                Risk::LocksAndStocksWithTtl
            }
            p if p.starts_with("volatile-") => Risk::LocksAndStocksWithTtl,
            _ => Risk::LocksAndStocks,
        }
    }

    /// Whether the policy may evict `target`.
    pub fn covers(self, target: Target) -> bool {
        match (self, target) {
            (Risk::None, _) => false,
            (Risk::LocksAndStocks, _) | (Risk::LocksAndStocksWithTtl, Target::Lock) => true,
            (Risk::LocksAndStocksWithTtl, Target::Stock { has_ttl }) => has_ttl,
        }
    }

    /// The name `INFO fence` shows (`eviction_risk`).
    pub fn name(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::LocksAndStocks => "locks-and-stocks",
            Risk::LocksAndStocksWithTtl => "locks-and-stocks-with-ttl",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Risk::None => 0,
            Risk::LocksAndStocks => 1,
            Risk::LocksAndStocksWithTtl => 2,
        }
    }

    fn from_u8(v: u8) -> Risk {
        match v {
            0 => Risk::None,
            2 => Risk::LocksAndStocksWithTtl,
            _ => Risk::LocksAndStocks,
        }
    }
}

/// Whether a write that would create or grow `target` is refused: the policy may evict it and
/// eviction of the module's keys has not been accepted (`fence.allow-eviction no`). Applies
/// only to ordinary clients' commands on a master (the caller checks that).
pub fn refuses(risk: Risk, allow_eviction: bool, target: Target) -> bool {
    may_refuse(risk, allow_eviction) && risk.covers(target)
}

/// Whether any write may be refused: the commands' fast path, before they look at the key.
pub fn may_refuse(risk: Risk, allow_eviction: bool) -> bool {
    !allow_eviction && risk != Risk::None
}

/// The server's eviction settings as last read (at load and on every `CONFIG SET` of
/// `maxmemory` or `maxmemory-policy`): the risk is an atomic for the commands' hot path, the
/// policy's name is only needed for a refusal's text, `INFO` and the log.
pub struct Policy {
    risk: AtomicU8,
    maxmemory: AtomicU64,
    name: Mutex<String>,
}

impl Policy {
    const fn new() -> Self {
        Self {
            risk: AtomicU8::new(0),
            maxmemory: AtomicU64::new(0),
            name: Mutex::new(String::new()),
        }
    }

    /// Records the server's settings; returns their risk.
    pub fn update(&self, maxmemory: u64, name: &str) -> Risk {
        let risk = Risk::of(maxmemory, name);
        if let Ok(mut n) = self.name.lock() {
            n.clear();
            n.push_str(name);
        }
        self.maxmemory.store(maxmemory, Ordering::Relaxed);
        self.risk.store(risk.to_u8(), Ordering::Relaxed);
        risk
    }

    /// The current risk.
    pub fn risk(&self) -> Risk {
        Risk::from_u8(self.risk.load(Ordering::Relaxed))
    }

    /// `maxmemory` in bytes.
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Ordering::Relaxed)
    }

    /// The policy's name (empty if it could not be read).
    pub fn name(&self) -> String {
        self.name.try_lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// The server's eviction settings.
pub static POLICY: Policy = Policy::new();

/// The log line that says what the settings mean for the module's keys.
pub fn describe(maxmemory: u64, policy: &str, allow_eviction: bool) -> String {
    let risk = Risk::of(maxmemory, policy);
    let setting = format!("maxmemory-policy {policy} with maxmemory {maxmemory}");
    let what = match risk {
        Risk::None => {
            let allow = if allow_eviction { "yes" } else { "no" };
            return format!(
                "fence: {setting} cannot evict locks or stocks (fence.allow-eviction is {allow})"
            );
        }
        Risk::LocksAndStocks => "locks and stocks",
        Risk::LocksAndStocksWithTtl => "locks and stocks that have a TTL",
    };
    if allow_eviction {
        format!(
            "fence: {setting} can evict {what}; fence.allow-eviction is yes, so they are \
             accepted: an evicted lock is free to the next caller while its holder may still \
             act, and an evicted stock loses its ledger (a retried request id deducts again)"
        )
    } else {
        let refused = match risk {
            Risk::LocksAndStocksWithTtl => {
                "LOCK.ACQUIRE, and STOCK.SET, STOCK.ADD and new STOCK.DEDUCT ... ID entries on \
                 stocks that have a TTL,"
            }
            _ => "LOCK.ACQUIRE, STOCK.SET, STOCK.ADD and new STOCK.DEDUCT ... ID entries",
        };
        format!(
            "fence: {setting} can evict {what}: {refused} are refused until \
             fence.allow-eviction is yes"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Risk = Risk::LocksAndStocks;
    const TTL: Risk = Risk::LocksAndStocksWithTtl;

    #[test]
    fn risk_of_every_policy() {
        let cases = [
            (0, "allkeys-lru", Risk::None),
            (0, "volatile-ttl", Risk::None),
            (0, "noeviction", Risk::None),
            (1, "noeviction", Risk::None),
            (100, "allkeys-lru", ALL),
            (100, "allkeys-lfu", ALL),
            (100, "allkeys-random", ALL),
            (100, "volatile-lru", TTL),
            (100, "volatile-lfu", TTL),
            (100, "volatile-random", TTL),
            (100, "volatile-ttl", TTL),
            // Policies this module does not know: by prefix, otherwise the safe side.
            (100, "volatile-something-new", TTL),
            (100, "allkeys-something-new", ALL),
            (100, "", ALL),
            (100, "NOEVICTION", ALL),
        ];
        for (maxmemory, policy, want) in cases {
            assert_eq!(Risk::of(maxmemory, policy), want, "{maxmemory} {policy}");
        }
    }

    #[test]
    fn what_each_risk_covers() {
        let lock = Target::Lock;
        let stock = Target::Stock { has_ttl: false };
        let stock_ttl = Target::Stock { has_ttl: true };
        assert!(!Risk::None.covers(lock));
        assert!(!Risk::None.covers(stock));
        assert!(!Risk::None.covers(stock_ttl));
        assert!(ALL.covers(lock));
        assert!(ALL.covers(stock));
        assert!(ALL.covers(stock_ttl));
        assert!(TTL.covers(lock));
        assert!(!TTL.covers(stock));
        assert!(TTL.covers(stock_ttl));
    }

    #[test]
    fn allow_eviction_lifts_every_refusal() {
        for risk in [Risk::None, ALL, TTL] {
            for target in [
                Target::Lock,
                Target::Stock { has_ttl: false },
                Target::Stock { has_ttl: true },
            ] {
                assert!(!refuses(risk, true, target));
                assert!(!may_refuse(risk, true));
                assert_eq!(may_refuse(risk, false), risk != Risk::None);
                assert_eq!(refuses(risk, false, target), risk.covers(target));
            }
        }
    }

    #[test]
    fn names_and_round_trip() {
        for (risk, name) in [
            (Risk::None, "none"),
            (ALL, "locks-and-stocks"),
            (TTL, "locks-and-stocks-with-ttl"),
        ] {
            assert_eq!(risk.name(), name);
            assert_eq!(Risk::from_u8(risk.to_u8()), risk);
        }
    }

    #[test]
    fn policy_keeps_what_it_was_told() {
        let p = Policy::new();
        assert_eq!(p.risk(), Risk::None);
        assert_eq!(p.update(1 << 20, "volatile-lru"), TTL);
        assert_eq!(p.risk(), TTL);
        assert_eq!(p.name(), "volatile-lru");
        assert_eq!(p.maxmemory(), 1 << 20);
        assert_eq!(p.update(0, "allkeys-lru"), Risk::None);
        assert_eq!(p.risk(), Risk::None);
        assert_eq!(p.name(), "allkeys-lru");
    }

    #[test]
    fn log_lines() {
        assert_eq!(
            describe(0, "allkeys-lru", false),
            "fence: maxmemory-policy allkeys-lru with maxmemory 0 cannot evict locks or stocks \
             (fence.allow-eviction is no)"
        );
        assert_eq!(
            describe(100, "allkeys-lru", false),
            "fence: maxmemory-policy allkeys-lru with maxmemory 100 can evict locks and stocks: \
             LOCK.ACQUIRE, STOCK.SET, STOCK.ADD and new STOCK.DEDUCT ... ID entries are refused \
             until fence.allow-eviction is yes"
        );
        assert_eq!(
            describe(100, "volatile-ttl", false),
            "fence: maxmemory-policy volatile-ttl with maxmemory 100 can evict locks and stocks \
             that have a TTL: LOCK.ACQUIRE, and STOCK.SET, STOCK.ADD and new STOCK.DEDUCT ... ID \
             entries on stocks that have a TTL, are refused until fence.allow-eviction is yes"
        );
        let allowed = describe(100, "allkeys-random", true);
        assert!(allowed.contains("fence.allow-eviction is yes"), "{allowed}");
        assert!(!allowed.contains("refused"), "{allowed}");
    }
}
