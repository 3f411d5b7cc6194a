//! The body type the proxy moves between downstream and upstream.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body; trailers travel with it (gRPC).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn incoming(b: hyper::body::Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// Marks `done` when the wrapped body has been read to its end (for `request_timeout`).
    pub struct Watched<B> {
        #[pin]
        inner: B,
        done: std::sync::Arc<BodyDone>,
        finished: bool,
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, done: std::sync::Arc<BodyDone>) -> Self {
        Watched { inner, done, finished: false }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let r = this.inner.as_mut().poll_frame(cx);
        let ended = match &r {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(f))) => f.is_trailers(),
            std::task::Poll::Ready(Some(Err(_))) => {
                this.done.fail();
                false
            }
            _ => false,
        };
        if (ended || this.inner.is_end_stream()) && !*this.finished {
            *this.finished = true;
            this.done.set();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request body has been received completely, and a wake-up when it is.
#[derive(Default)]
pub struct BodyDone {
    flag: std::sync::atomic::AtomicBool,
    /// The body broke off with an error (a malformed chunk, say): the client's fault.
    failed: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl BodyDone {
    pub fn fail(&self) {
        self.failed.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}
