//! One drain primitive for every listener and connection: signal, graceful close, and a count
//! of connections still open so shutdown can wait for them up to a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

#[derive(Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
    open: Arc<(AtomicUsize, Notify)>,
}

/// Held by each open connection; dropping it lets a drain finish sooner.
pub struct ConnToken(Arc<(AtomicUsize, Notify)>);

impl Drop for ConnToken {
    fn drop(&mut self) {
        if self.0 .0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0 .1.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Drain { tx: Arc::new(tx), rx, open: Arc::new((AtomicUsize::new(0), Notify::new())) }
    }

    pub fn token(&self) -> ConnToken {
        self.open.0.fetch_add(1, Ordering::AcqRel);
        ConnToken(self.open.clone())
    }

    pub fn open_connections(&self) -> usize {
        self.open.0.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when draining starts.
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Starts draining and waits until every connection closed or `deadline` passed.
    /// Returns the number of connections still open.
    pub async fn drain(&self, deadline: Duration) -> usize {
        let _ = self.tx.send(true);
        let wait = async {
            loop {
                let notified = self.open.1.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.open_connections()
    }
}
