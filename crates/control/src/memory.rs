//! Handing freed memory back to the system.
#![allow(unsafe_code, reason = "malloc_trim has no safe wrapper")]

use std::time::Duration;

/// glibc keeps freed chunks in its arenas, and the buffers of a fleet's initial sync are freed
/// interleaved with long-lived state, so without this a burst's peak stays in RSS for good.
/// `malloc_trim` releases every whole free page, not only the top of the heap. `release` first
/// lets go of what is only worth holding for a while.
pub async fn return_free_memory(release: impl Fn()) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        release();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
