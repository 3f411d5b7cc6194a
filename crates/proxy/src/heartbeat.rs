//! A timer that always fires within a second, so request timeouts do not wake the runtime.
//!
//! tokio unparks its I/O driver (an eventfd write, then an `epoll_wait` that returns at once)
//! whenever a timer is registered that fires before the driver's next planned wake-up. Every
//! request registers a route timeout (15 s unless configured); with only longer timers pending
//! (HTTP/1 header reads, stream idle timeouts) it was always the earliest, so every request
//! cost each proxy two extra system calls. With this timer pending, the planned wake-up is
//! never more than `PERIOD` away and request timeouts of `PERIOD` or longer are registered
//! without waking anything; the price is one wake-up per `PERIOD`.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

const PERIOD: Duration = Duration::from_secs(1);

/// Runs until the runtime shuts down.
pub async fn run() {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}
