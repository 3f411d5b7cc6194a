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

/// Counts gRPC messages in a body as its bytes go by: each message is a 5-byte prefix (a flag
/// and a big-endian length) and that many bytes, however the bytes are split into frames.
#[derive(Debug, Default, Clone)]
pub struct GrpcMessages {
    /// Bytes of the current message still to come.
    remaining: u64,
    prefix: [u8; 5],
    prefix_len: usize,
    /// Messages whose prefix has been read.
    pub count: u64,
}

impl GrpcMessages {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                self.remaining -= n;
                data = &data[n as usize..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                self.count += 1;
                self.remaining = u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                self.prefix_len = 0;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Marks `done` when the wrapped body has been read to its end (for `request_timeout`), and
    /// counts its bytes and, for gRPC, its messages (for telemetry).
    pub struct Watched<B> {
        #[pin]
        inner: B,
        done: std::sync::Arc<BodyDone>,
        finished: bool,
        grpc: Option<GrpcMessages>,
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, done: std::sync::Arc<BodyDone>) -> Self {
        Watched { inner, done, finished: false, grpc: None }
    }

    /// Also counts the body's gRPC messages into `done`.
    pub fn counting_grpc(mut self) -> Self {
        self.grpc = Some(GrpcMessages::default());
        self
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
        if let std::task::Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.done.received.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Some(g) = this.grpc.as_mut() {
                    g.feed(d);
                    this.done.messages.store(g.count, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
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
    /// Body bytes received so far.
    pub received: std::sync::atomic::AtomicU64,
    /// gRPC messages received so far (counted only for a gRPC request with telemetry on).
    pub messages: std::sync::atomic::AtomicU64,
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

#[cfg(test)]
mod grpc_tests {
    use super::GrpcMessages;

    #[test]
    fn messages_are_counted_however_the_bytes_are_split() {
        // Three messages: 3 bytes, 0 bytes, 300 bytes.
        let mut wire = vec![0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 1, 0, 0, 1, 44];
        wire.extend(std::iter::repeat_n(7u8, 300));
        for split in [1, 2, 4, 5, 7, 64, wire.len()] {
            let mut m = GrpcMessages::default();
            for chunk in wire.chunks(split) {
                m.feed(chunk);
            }
            assert_eq!(m.count, 3, "split into pieces of {split}");
        }
    }
}
