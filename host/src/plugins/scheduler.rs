//! Scheduled runs: each plugin with an interval gets a loop that runs it on
//! that interval.
//!
//! - A run never overlaps the plugin's previous scheduled run: the loop waits
//!   for each run to finish before it computes the next tick.
//! - Missed ticks are skipped, not queued: after a slow run the next tick is
//!   the next one on the grid that is still in the future.
//! - Consecutive failures back off exponentially (capped at 10 minutes, and
//!   never below the interval); one success resets it.
//! - The loop looks the plugin up at every tick, so a new version is picked
//!   up without restarting it; changing the interval restarts the loop, but
//!   only between runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Plugins;

/// The longest wait between runs of a failing plugin.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

struct Entry {
    interval_ms: u64,
    stop: Arc<Notify>,
    next_run_ms: Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Default)]
pub struct Scheduler {
    loops: Mutex<HashMap<String, Entry>>,
}

impl Scheduler {
    /// Makes the running loops match the installed plugins' intervals.
    pub fn sync(&self, plugins: &Arc<Plugins>, name: &str, interval_ms: Option<u64>) {
        let mut loops = self.loops.lock().expect("scheduler lock");
        match (loops.get(name), interval_ms) {
            (Some(entry), Some(ms)) if entry.interval_ms == ms => {}
            (existing, wanted) => {
                if existing.is_some() {
                    if let Some(old) = loops.remove(name) {
                        old.stop.notify_one();
                    }
                }
                if let Some(ms) = wanted.filter(|ms| *ms > 0) {
                    let stop = Arc::new(Notify::new());
                    let next_run_ms = Arc::new(std::sync::atomic::AtomicI64::new(0));
                    tokio::spawn(run_loop(plugins.clone(), name.to_string(), ms, stop.clone(), next_run_ms.clone()));
                    loops.insert(name.to_string(), Entry { interval_ms: ms, stop, next_run_ms });
                }
            }
        }
    }

    pub fn next_run_ms(&self, name: &str) -> Option<i64> {
        self.loops
            .lock()
            .expect("scheduler lock")
            .get(name)
            .map(|e| e.next_run_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The wait after `consecutive_failures` failures in a row.
pub fn backoff(interval: Duration, consecutive_failures: u64) -> Duration {
    if consecutive_failures == 0 {
        return interval;
    }
    let factor = 1u32 << consecutive_failures.min(10);
    interval.saturating_mul(factor).min(MAX_BACKOFF.max(interval))
}

/// The first tick of the grid `start + k * interval` strictly after `now`.
pub fn next_tick(start: Instant, interval: Duration, now: Instant) -> Instant {
    let elapsed = now.saturating_duration_since(start);
    let k = elapsed.as_nanos() / interval.as_nanos().max(1) + 1;
    start + interval.mul_f64(k as f64)
}

async fn run_loop(
    plugins: Arc<Plugins>,
    name: String,
    interval_ms: u64,
    stop: Arc<Notify>,
    next_run_ms: Arc<std::sync::atomic::AtomicI64>,
) {
    let interval = Duration::from_millis(interval_ms);
    let start = Instant::now();
    let mut next = start + interval;
    loop {
        let wall_next = chrono::Utc::now().timestamp_millis() + next.saturating_duration_since(Instant::now()).as_millis() as i64;
        next_run_ms.store(wall_next, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.notified() => return,
        }
        if plugins.registry.get(&name).is_none() {
            return;
        }
        match plugins.run(&name, "{}".into(), "schedule").await {
            Ok(_) => {}
            Err(e) => tracing::warn!(plugin = %name, error = %e, "scheduled run not started"),
        }
        let failures = plugins.registry.counters(&name).consecutive_failures;
        let now = Instant::now();
        next = if failures > 0 {
            let wait = backoff(interval, failures);
            tracing::warn!(plugin = %name, failures, wait_ms = wait.as_millis() as u64, "plugin failing; backing off");
            now + wait
        } else {
            next_tick(start, interval, now)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), Duration::from_secs(2));
        assert_eq!(backoff(i, 3), Duration::from_secs(8));
        assert_eq!(backoff(i, 40), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(3600), 2), Duration::from_secs(3600));
    }

    #[test]
    fn missed_ticks_are_skipped() {
        let start = Instant::now();
        let i = Duration::from_millis(100);
        // A run that ended 350 ms in: the next tick is at 400, not 200 or 300.
        assert_eq!(next_tick(start, i, start + Duration::from_millis(350)), start + Duration::from_millis(400));
        assert_eq!(next_tick(start, i, start + Duration::from_millis(100)), start + Duration::from_millis(200));
    }
}
