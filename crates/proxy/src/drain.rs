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
    /// Set while a replaced listener winds down: HTTP/1 responses close their connection so
    /// clients move to the new listener between requests instead of racing a closing socket.
    soft: Arc<watch::Sender<bool>>,
    /// Shared by every drain of the process: set while the server fails health checks
    /// (`/healthcheck/fail`), when, as in Envoy, every HTTP connection is told to close.
    failing: Arc<watch::Sender<bool>>,
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
        Drain {
            tx: Arc::new(tx),
            rx,
            open: Arc::new((AtomicUsize::new(0), Notify::new())),
            soft: Arc::new(watch::channel(false).0),
            failing: Arc::new(watch::channel(false).0),
        }
    }

    /// A drain for one generation of a listener: it can be drained on its own (when the
    /// listener is replaced or removed), it is drained when `self` is, and its connections
    /// count towards `self`'s, so process shutdown still waits for them.
    pub fn child(&self) -> Drain {
        let (tx, rx) = watch::channel(*self.rx.borrow());
        let child =
            Drain { tx: Arc::new(tx), rx, open: self.open.clone(), soft: Arc::new(watch::channel(false).0), failing: self.failing.clone() };
        let parent = self.clone();
        let tx = child.tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.signaled() => { let _ = tx.send(true); }
                // Every clone of the child is gone: nothing left to signal.
                _ = tx.closed() => {}
            }
        });
        child
    }

    /// Winds a replaced listener down: at once, HTTP/1 responses carry `Connection: close`
    /// and HTTP/2 connections get GOAWAY; after `grace`, whatever is still open is closed
    /// gracefully. Returns immediately.
    pub fn retire(&self, grace: Duration) {
        self.soft.send_replace(true);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(true);
        });
    }

    /// Tells this generation's connections to close (Envoy's drain-close, with the immediate
    /// strategy), without a deadline: HTTP/1 responses carry `Connection: close`, HTTP/2
    /// connections get GOAWAY. `/drain_listeners` uses it.
    pub fn drain_close(&self) {
        self.soft.send_replace(true);
    }

    /// `/healthcheck/fail` (true) and `/healthcheck/ok` (false), for the whole process.
    pub fn set_failing_health_checks(&self, failing: bool) {
        self.failing.send_replace(failing);
    }

    pub fn is_failing_health_checks(&self) -> bool {
        *self.failing.borrow()
    }

    /// True once `retire` or `drain_close` was called, or while the server fails health
    /// checks: responses should close their HTTP/1 connection.
    pub fn is_retiring(&self) -> bool {
        *self.soft.borrow() || *self.failing.borrow()
    }

    /// Resolves when `retire` or `drain_close` is called, health checks start failing, or
    /// draining starts.
    pub async fn retiring(&self) {
        let mut soft = self.soft.subscribe();
        let mut failing = self.failing.subscribe();
        tokio::select! {
            _ = soft.wait_for(|s| *s) => {}
            _ = failing.wait_for(|s| *s) => {}
            _ = self.signaled() => {}
        }
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
