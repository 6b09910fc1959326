//! Faults triggered by the load itself: a server killed at the moment the units acknowledged
//! to the clients reach a target, not by a timer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::server::Server;

/// What a load looked like at the instant a `LoadKiller` sent SIGKILL.
#[derive(Debug, Clone, Copy)]
pub struct KillMoment {
    /// Units acknowledged when the kill was decided (at least the target).
    pub acknowledged: u64,
    /// Requests sent and not answered yet, read right before the signal (the killing client's
    /// own request was just answered, so at most clients - 1).
    pub outstanding: usize,
    /// Client threads still in their loop at the kill.
    pub running: usize,
    /// Time from the making of the `LoadKiller` to the kill.
    pub after: Duration,
}

/// Kills a server with SIGKILL from inside a load, at the moment the units acknowledged to
/// the clients reach `target`: the client whose acknowledgement reaches it sends the signal
/// itself, right away. No timer decides whether the load is still running when the server
/// dies. Every client thread gets a `LoadClient` (made before the threads start) and reports
/// through it each request it sends and each reply it gets; a client thread that panics kills
/// the server too, so the other clients stop.
pub struct LoadKiller<'a> {
    server: Mutex<&'a mut Server>,
    target: u64,
    acknowledged: AtomicU64,
    outstanding: AtomicUsize,
    running: AtomicUsize,
    started: Instant,
    moment: Mutex<Option<KillMoment>>,
}

/// One client thread of a `LoadKiller`'s load; leaving the loop (dropping it) counts the
/// client out.
pub struct LoadClient<'k, 'a> {
    killer: &'k LoadKiller<'a>,
}

impl<'a> LoadKiller<'a> {
    /// Kills `server` once `target` units (at least 1) have been acknowledged.
    pub fn new(server: &'a mut Server, target: u64) -> LoadKiller<'a> {
        assert!(target > 0, "a kill target of 0 units would hit no load");
        LoadKiller {
            server: Mutex::new(server),
            target,
            acknowledged: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            started: Instant::now(),
            moment: Mutex::new(None),
        }
    }

    /// A client of the load, counted as running until dropped. Make every client before
    /// starting any, so a thread that starts late still counts as part of the load.
    pub fn client(&self) -> LoadClient<'_, 'a> {
        self.running.fetch_add(1, Ordering::SeqCst);
        LoadClient { killer: self }
    }

    /// The load at the kill, None when the target was never reached (no kill happened).
    pub fn moment(&self) -> Option<KillMoment> {
        *self.moment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Units acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    fn kill_now(&self, acknowledged: Option<u64>) {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(acknowledged) = acknowledged {
            let moment = KillMoment {
                acknowledged,
                outstanding: self.outstanding.load(Ordering::SeqCst),
                running: self.running.load(Ordering::SeqCst),
                after: self.started.elapsed(),
            };
            *self.moment.lock().unwrap_or_else(|e| e.into_inner()) = Some(moment);
        }
        server.kill();
    }
}

impl LoadClient<'_, '_> {
    /// Right before a request goes out.
    pub fn sending(&self) {
        self.killer.outstanding.fetch_add(1, Ordering::SeqCst);
    }

    /// The server acknowledged `units`: kills it when this reaches the target.
    pub fn acknowledged(&self, units: u64) {
        let k = self.killer;
        k.outstanding.fetch_sub(1, Ordering::SeqCst);
        let before = k.acknowledged.fetch_add(units, Ordering::SeqCst);
        if before < k.target && before + units >= k.target {
            k.kill_now(Some(before + units));
        }
    }

    /// Any other reply from the server (a refusal, a nil).
    pub fn answered(&self) {
        self.killer.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for LoadClient<'_, '_> {
    fn drop(&mut self) {
        self.killer.running.fetch_sub(1, Ordering::SeqCst);
        if thread::panicking() {
            // Stop the rest of the load: their connections break and they leave their loops.
            self.killer.kill_now(None);
        }
    }
}
