//! Handing memory freed by departed connections back to the system.
#![allow(unsafe_code, reason = "malloc_trim has no safe wrapper")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Downstream connections ended since the proxy started.
static CLOSED: AtomicU64 = AtomicU64::new(0);

/// How many connections must have ended since the last trim for another to be worth its cost.
const TRIM_AFTER: u64 = 32;

/// Counts one downstream connection gone.
pub fn connection_closed() {
    CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// glibc keeps the buffers of closed connections in its arenas, so a burst of clients — a
/// flood of slow or oversized heads, say — would leave its peak in RSS for good. After a burst
/// of closes, `malloc_trim` releases every whole free page. Quiet proxies never pay for it.
pub async fn return_after_bursts() {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        tick.tick().await;
        let closed = CLOSED.load(Ordering::Relaxed);
        if closed.saturating_sub(last) < TRIM_AFTER {
            continue;
        }
        last = closed;
        trim();
    }
}

/// Hands every whole free page the allocator holds back to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
