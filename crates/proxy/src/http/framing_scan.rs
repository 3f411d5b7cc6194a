//! The HTTP/1 request framing hyper hides: a request with two `Content-Length`s, or with both
//! `Content-Length` and `Transfer-Encoding`, is the classic request-smuggling shape, and Envoy
//! refuses both with 400. hyper accepts them and removes the evidence before weft sees the
//! head (it keeps one `Content-Length` and drops the other, or drops it for the chunked
//! coding), so weft watches the raw bytes hyper reads instead.
//!
//! [`Scanned`] wraps a downstream connection and runs every byte hyper reads through a
//! [`FramingScanner`]: a small state machine that follows request heads and bodies as hyper's
//! parser does (a head, then `Content-Length` bytes or a chunked body, then the next head).
//! It keeps no buffer: a header name or value is looked at only as far as needed to tell the
//! framing headers apart, so a flood of headers costs it nothing. The first request it finds
//! malformed is published by ordinal on the connection's [`FramingLog`]; the connection
//! manager counts requests the same way and refuses that one (and the connection ends there).
//!
//! Where the bytes stop being HTTP/1 — an HTTP/2 preface, an accepted upgrade, a head or chunk
//! hyper itself refuses — the scanner stops; it never needs to be right about bytes hyper will
//! not parse as a request, because hyper then ends the connection itself.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::h2_floods::{Flood, FloodLimits, H2Floods};
use super::path_norm::hex;

/// A framing problem Envoy's codec refuses and hyper does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// More than one `Content-Length` field (even with equal values).
    DuplicateContentLength,
    /// `Content-Length` together with `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
}

impl Problem {
    fn code(self) -> u8 {
        match self {
            Problem::DuplicateContentLength => 1,
            Problem::ContentLengthWithTransferEncoding => 2,
        }
    }

    fn from_code(c: u8) -> Option<Problem> {
        match c {
            1 => Some(Problem::DuplicateContentLength),
            2 => Some(Problem::ContentLengthWithTransferEncoding),
            _ => None,
        }
    }
}

/// What the scanner found on one connection, shared with the connection manager.
#[derive(Debug, Default)]
pub struct FramingLog {
    /// Ordinal (1-based) of the first malformed request; 0 while there is none.
    bad: AtomicU64,
    problem: AtomicU8,
    /// Set once the connection is no longer HTTP/1 requests (an accepted upgrade).
    stopped: AtomicBool,
    /// The head being received: its ordinal and when its first byte came.
    head: parking_lot::Mutex<Option<(u64, Instant)>>,
    head_started: tokio::sync::Notify,
    /// Set when the connection is to end with `reply` in place of the unfinished request.
    ending: AtomicBool,
    reply: parking_lot::Mutex<Bytes>,
    /// The HTTP/2 flood limit the peer broke, by `Flood::code`; 0 for none.
    flood: AtomicU8,
    flooded: tokio::sync::Notify,
}

impl FramingLog {
    /// The problem of the `ordinal`-th request on the connection (1-based), if it has one.
    pub fn problem_for(&self, ordinal: u64) -> Option<Problem> {
        if ordinal == 0 || self.bad.load(Ordering::Acquire) != ordinal {
            return None;
        }
        Problem::from_code(self.problem.load(Ordering::Acquire))
    }

    /// The connection has become a tunnel: nothing more to follow.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Resolves when a request head has taken longer than `timeout` from its first byte
    /// (`request_headers_timeout`); never without a timeout. Time between requests does not
    /// count: that is the idle timeout's.
    pub async fn head_timed_out(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else { return std::future::pending().await };
        loop {
            self.head_started.notified().await;
            loop {
                let current = *self.head.lock();
                let Some((ordinal, since)) = current else { break };
                let due = since + timeout;
                if due <= Instant::now() {
                    return;
                }
                tokio::time::sleep_until(due.into()).await;
                let still = self.head.lock().is_some_and(|(o, _)| o == ordinal);
                if still && due <= Instant::now() {
                    return;
                }
            }
        }
    }

    /// The HTTP/2 flood limit the peer broke, if it broke one.
    pub fn flood(&self) -> Option<Flood> {
        Flood::from_code(self.flood.load(Ordering::Acquire))
    }

    /// Resolves once the peer has broken an HTTP/2 flood limit: the connection is to go.
    pub async fn flooded(&self) {
        self.flooded.notified().await
    }

    fn record_flood(&self, f: Flood) {
        if self.flood.swap(f.code(), Ordering::AcqRel) == 0 {
            self.flooded.notify_one();
        }
    }

    /// Ends the connection: the next read writes `reply` to the client, then reads as the end
    /// of the stream, so hyper closes the connection as a client that went away. Used where
    /// Envoy answers a request hyper never delivers (a head that timed out).
    pub fn end_with(&self, reply: Bytes) {
        *self.reply.lock() = reply;
        self.ending.store(true, Ordering::Release);
    }

    fn head_progress(&self, receiving: Option<u64>) {
        let mut head = self.head.lock();
        match (receiving, *head) {
            (Some(o), Some((current, _))) if o == current => {}
            (Some(o), _) => {
                *head = Some((o, Instant::now()));
                self.head_started.notify_one();
            }
            (None, _) => *head = None,
        }
    }

    fn record(&self, ordinal: u64, problem: Problem) {
        self.problem.store(problem.code(), Ordering::Release);
        self.bad.store(ordinal, Ordering::Release);
    }
}

/// Which header field a value belongs to, as far as framing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Other,
}

/// A chunked body, state for state as hyper's decoder reads it, so both agree on where the
/// body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk's size line: a trailer field or the final CRLF.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests; empty lines before a request line are skipped, as hyper does.
    Idle,
    RequestLine,
    /// At the start of a header line, or of the empty line that ends the head.
    LineStart,
    HeadEndLf,
    Name,
    Value,
    Body(u64),
    Chunked(Chunk),
    /// The rest of the HTTP/2 connection preface (`\r\nSM\r\n\r\n`) after its request line.
    H2Preface(u8),
    Stopped,
}

/// The longest prefix of a request line, header name or value the scanner keeps: enough for
/// `transfer-encoding`, a 20-digit length, and `PRI * HTTP/2.0`.
const KEEP: usize = 24;

/// A few bytes of a token, and whether more followed.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    bytes: [u8; KEEP],
    len: usize,
    overflow: bool,
}

impl Prefix {
    const EMPTY: Prefix = Prefix { bytes: [0; KEEP], len: 0, overflow: false };

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        } else {
            self.overflow = true;
        }
    }

    /// Keeps what fits of `bytes`, lower-cased if asked.
    fn extend(&mut self, bytes: &[u8], lower: bool) {
        let room = KEEP - self.len;
        let take = bytes.len().min(room);
        let dst = &mut self.bytes[self.len..self.len + take];
        dst.copy_from_slice(&bytes[..take]);
        if lower {
            dst.make_ascii_lowercase();
        }
        self.len += take;
        if bytes.len() > room {
            self.overflow = true;
        }
    }

    /// The kept bytes without surrounding whitespace (and a line's CR); `None` if some were
    /// cut off.
    fn trimmed(&self) -> Option<&[u8]> {
        if self.overflow {
            return None;
        }
        let kept = self.bytes.get(..self.len).unwrap_or_default();
        Some(kept.trim_ascii())
    }
}

/// What one request head said about its framing.
#[derive(Debug, Clone, Copy)]
struct Head {
    content_lengths: u32,
    length: Option<u64>,
    transfer_encodings: u32,
    chunked: bool,
    connect: bool,
}

impl Head {
    const EMPTY: Head = Head { content_lengths: 0, length: None, transfer_encodings: 0, chunked: false, connect: false };
}

/// Follows the requests in a stream of HTTP/1 bytes. Feed it every byte in order.
#[derive(Debug, Clone)]
pub struct FramingScanner {
    state: State,
    /// Requests whose head has ended so far.
    ordinal: u64,
    head: Head,
    token: Prefix,
    field: Field,
    /// Where HTTP/2 frames began in the last `feed`, once the preface has passed.
    h2_start: Option<usize>,
}

impl Default for FramingScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl FramingScanner {
    pub fn new() -> FramingScanner {
        FramingScanner { state: State::Idle, ordinal: 0, head: Head::EMPTY, token: Prefix::EMPTY, field: Field::Other, h2_start: None }
    }

    /// Whether the scanner has stopped following (a problem, an HTTP/2 preface, CONNECT, or
    /// bytes hyper will refuse).
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Where in the bytes last fed HTTP/2 frames begin, once: the connection preface has just
    /// ended there.
    pub fn take_h2_start(&mut self) -> Option<usize> {
        self.h2_start.take()
    }

    /// The ordinal of the request whose head is being received, if one is.
    pub fn receiving_head(&self) -> Option<u64> {
        matches!(self.state, State::RequestLine | State::LineStart | State::HeadEndLf | State::Name | State::Value)
            .then_some(self.ordinal + 1)
    }

    /// Follows `data`; returns the first malformed request (its 1-based ordinal), after which
    /// the scanner stops.
    pub fn feed(&mut self, data: &[u8]) -> Option<(u64, Problem)> {
        let mut i = 0;
        while let Some(rest) = data.get(i..).filter(|r| !r.is_empty()) {
            // Bodies are skipped in bulk; everything else goes a byte at a time.
            match self.state {
                State::Stopped => return None,
                State::Body(left) => {
                    let n = skip(left, rest.len());
                    i += n;
                    self.state = if left - n as u64 == 0 { State::Idle } else { State::Body(left - n as u64) };
                    continue;
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = skip(left, rest.len());
                    i += n;
                    let left = left - n as u64;
                    self.state = State::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                    continue;
                }
                // The rest of a line the scanner does not look into: straight to its end.
                State::Value if self.field == Field::Other => {
                    if let Some(skip) = to_line_end(rest) {
                        i += skip;
                        continue;
                    }
                }
                // Kept up to KEEP bytes, in bulk; then straight to the line's end.
                State::RequestLine => {
                    if let Some(skip) = to_line_end(rest) {
                        self.token.extend(&rest[..skip], false);
                        i += skip;
                        continue;
                    }
                }
                State::Name => {
                    let end = memchr::memchr2(b':', b'\n', rest).unwrap_or(rest.len());
                    if end > 0 {
                        if rest[..end].contains(&b'\r') {
                            // hyper refuses a CR in a name.
                            self.state = State::Stopped;
                            return None;
                        }
                        self.token.extend(&rest[..end], true);
                        i += end;
                        continue;
                    }
                }
                _ => {}
            }
            let b = rest[0];
            i += 1;
            if let Some(found) = self.step(b) {
                return Some(found);
            }
            if self.state == State::H2Preface(0) {
                self.state = State::Stopped;
                self.h2_start = Some(i);
                return None;
            }
        }
        None
    }

    fn step(&mut self, b: u8) -> Option<(u64, Problem)> {
        self.state = match self.state {
            State::Idle => match b {
                b'\r' | b'\n' => State::Idle,
                _ => {
                    self.head = Head::EMPTY;
                    self.token = Prefix::EMPTY;
                    self.token.push(b);
                    State::RequestLine
                }
            },
            State::RequestLine => match b {
                b'\n' => self.request_line_ended(),
                _ => {
                    self.token.push(b);
                    State::RequestLine
                }
            },
            State::LineStart => match b {
                b'\r' => State::HeadEndLf,
                b'\n' => return self.head_ended(),
                // hyper refuses obs-fold in a request and names must start the line.
                b' ' | b'\t' | b':' => State::Stopped,
                _ => {
                    self.token = Prefix::EMPTY;
                    self.token.push(b.to_ascii_lowercase());
                    State::Name
                }
            },
            State::HeadEndLf => match b {
                b'\n' => return self.head_ended(),
                _ => State::Stopped,
            },
            State::Name => match b {
                b':' => {
                    self.field = match self.token.trimmed() {
                        Some(b"content-length") => Field::ContentLength,
                        Some(b"transfer-encoding") => Field::TransferEncoding,
                        _ => Field::Other,
                    };
                    self.token = Prefix::EMPTY;
                    State::Value
                }
                b'\r' | b'\n' => State::Stopped,
                _ => {
                    self.token.push(b.to_ascii_lowercase());
                    State::Name
                }
            },
            State::Value => match b {
                b'\n' => {
                    self.value_ended();
                    State::LineStart
                }
                // Whitespace anywhere in a framing value is dropped: around the value hyper
                // ignores it too, and inside one the value is refused (and the connection
                // closed) by hyper or the head check, so the scanner's reading stops mattering.
                b' ' | b'\t' | b'\r' => State::Value,
                _ => {
                    if self.field != Field::Other {
                        self.token.push(b.to_ascii_lowercase());
                    }
                    State::Value
                }
            },
            State::Chunked(c) => self.chunk_step(c, b),
            State::H2Preface(left) if b"\r\nSM\r\n\r\n".get(8 - usize::from(left)) == Some(&b) => State::H2Preface(left - 1),
            State::H2Preface(_) => State::Stopped,
            // Handled in bulk by `feed`.
            s @ (State::Body(_) | State::Stopped) => s,
        };
        None
    }

    fn request_line_ended(&mut self) -> State {
        match self.token.bytes.get(..self.token.len) {
            // HTTP/2 with prior knowledge: not HTTP/1 from here on.
            Some(line) if line.trim_ascii_end() == b"PRI * HTTP/2.0" => State::H2Preface(8),
            Some(line) => {
                self.head.connect = line.starts_with(b"CONNECT ");
                State::LineStart
            }
            None => State::Stopped,
        }
    }

    fn value_ended(&mut self) {
        let value = self.token.trimmed();
        match self.field {
            Field::ContentLength => {
                self.head.content_lengths += 1;
                self.head.length = value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok());
            }
            Field::TransferEncoding => {
                self.head.transfer_encodings += 1;
                self.head.chunked = value.is_some_and(|v| v == b"chunked");
            }
            Field::Other => {}
        }
    }

    fn head_ended(&mut self) -> Option<(u64, Problem)> {
        self.ordinal += 1;
        let h = self.head;
        let problem = if h.content_lengths > 0 && h.transfer_encodings > 0 {
            Some(Problem::ContentLengthWithTransferEncoding)
        } else if h.content_lengths > 1 {
            Some(Problem::DuplicateContentLength)
        } else {
            None
        };
        if let Some(p) = problem {
            self.state = State::Stopped;
            return Some((self.ordinal, p));
        }
        self.state = if h.connect {
            // Answered without a tunnel today, but what follows is not worth guessing at.
            State::Stopped
        } else if h.transfer_encodings > 0 {
            // Anything but one plain `chunked` is refused (by hyper or by the head check), and
            // the connection closes with it.
            if h.transfer_encodings == 1 && h.chunked {
                State::Chunked(Chunk::Start)
            } else {
                State::Stopped
            }
        } else if h.content_lengths == 1 {
            match h.length {
                Some(0) => State::Idle,
                Some(n) => State::Body(n),
                // An unparsable length is refused by hyper.
                None => State::Stopped,
            }
        } else {
            State::Idle
        };
        None
    }

    fn chunk_step(&mut self, c: Chunk, b: u8) -> State {
        let next = match (c, b) {
            (Chunk::Start, _) => hex(b).map(|d| Chunk::Size(u64::from(d))),
            (Chunk::Size(n), _) => match b {
                b'\t' | b' ' => Some(Chunk::SizeLws(n)),
                b';' => Some(Chunk::Extension(n)),
                b'\r' => Some(Chunk::SizeLf(n)),
                _ => hex(b).and_then(|d| n.checked_mul(16)?.checked_add(u64::from(d))).map(Chunk::Size),
            },
            (Chunk::SizeLws(n), b'\t' | b' ') => Some(Chunk::SizeLws(n)),
            (Chunk::SizeLws(n), b';') => Some(Chunk::Extension(n)),
            (Chunk::SizeLws(n), b'\r') => Some(Chunk::SizeLf(n)),
            (Chunk::SizeLws(_), _) => None,
            (Chunk::Extension(n), b'\r') => Some(Chunk::SizeLf(n)),
            (Chunk::Extension(_), b'\n') => None,
            (Chunk::Extension(n), _) => Some(Chunk::Extension(n)),
            (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
            (Chunk::SizeLf(n), b'\n') => Some(Chunk::Data(n)),
            (Chunk::SizeLf(_), _) => None,
            // Handled in bulk by `feed`; a zero-length remainder is already DataCr.
            (Chunk::Data(n), _) => Some(Chunk::Data(n)),
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => Some(Chunk::Start),
            (Chunk::DataCr | Chunk::DataLf, _) => None,
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::EndCr, _) => Some(Chunk::Trailer),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::Trailer, _) => Some(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::TrailerLf, _) => None,
            (Chunk::EndLf, b'\n') => return State::Idle,
            (Chunk::EndLf, _) => None,
        };
        // hyper refuses what does not fit and ends the connection.
        next.map_or(State::Stopped, State::Chunked)
    }
}

/// How many bytes of `rest` come before its line end; `None` when the line end is first.
fn to_line_end(rest: &[u8]) -> Option<usize> {
    match memchr::memchr(b'\n', rest) {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(rest.len()),
    }
}

fn skip(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

/// A downstream connection whose incoming bytes are followed by a [`FramingScanner`].
pub struct Scanned<IO> {
    io: IO,
    scanner: FramingScanner,
    log: Arc<FramingLog>,
    /// Whether heads are timed (`request_headers_timeout` is set).
    track_heads: bool,
    limits: FloodLimits,
    /// Frame counts once the connection turned out to be HTTP/2.
    h2: Option<Box<H2Floods>>,
}

impl<IO> Scanned<IO> {
    pub fn new(io: IO, log: Arc<FramingLog>, track_heads: bool, limits: FloodLimits) -> Scanned<IO> {
        Scanned { io, scanner: FramingScanner::new(), log, track_heads, limits, h2: None }
    }

    fn count_h2_read(&mut self, data: &[u8]) {
        if let Some(h2) = &mut self.h2 {
            if let Some(f) = h2.read(data) {
                self.log.record_flood(f);
            }
        }
    }

    fn count_h2_written(&mut self, data: &[u8]) {
        if let Some(h2) = &mut self.h2 {
            h2.wrote(data);
        }
    }
}

impl<IO: AsyncWrite + Unpin> Scanned<IO> {
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut reply = self.log.reply.lock();
        while !reply.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &reply) {
                Poll::Ready(Ok(n)) if n > 0 => reply.advance(n),
                // A client that cannot take the answer does not get it.
                Poll::Ready(_) => reply.clear(),
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Scanned<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.log.ending.load(Ordering::Acquire) {
            return this.poll_end(cx);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(new) = buf.filled().get(before..).filter(|n| !n.is_empty()) else { return polled };
        if this.h2.is_some() {
            this.count_h2_read(new);
        } else if !this.scanner.stopped() && !this.log.stopped.load(Ordering::Relaxed) {
            if let Some((ordinal, problem)) = this.scanner.feed(new) {
                this.log.record(ordinal, problem);
            }
            if this.track_heads {
                this.log.head_progress(this.scanner.receiving_head());
            }
            if let Some(start) = this.scanner.take_h2_start() {
                this.h2 = Some(Box::new(H2Floods::new(this.limits)));
                let frames = new.get(start..).unwrap_or_default();
                this.count_h2_read(frames);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Scanned<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.count_h2_written(buf.get(..n).unwrap_or_default());
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), true) = (&polled, this.h2.is_some()) {
            let mut left = *n;
            for b in bufs {
                let take = left.min(b.len());
                this.count_h2_written(&b[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (Option<(u64, Problem)>, FramingScanner) {
        let mut s = FramingScanner::new();
        for c in chunks {
            if let Some(found) = s.feed(c) {
                return (Some(found), s);
            }
        }
        (None, s)
    }

    /// Feeds the bytes one at a time, so every state meets a read boundary.
    fn scan_bytewise(data: &[u8]) -> Option<(u64, Problem)> {
        let mut s = FramingScanner::new();
        data.iter().find_map(|b| s.feed(std::slice::from_ref(b)))
    }

    #[test]
    fn smuggling_shapes_are_found_at_their_ordinal() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(scan_all(&[cl_te]).0, Some((1, Problem::ContentLengthWithTransferEncoding)));
        let te_cl = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 6\r\n\r\n0\r\n\r\n";
        assert_eq!(scan_all(&[te_cl]).0, Some((1, Problem::ContentLengthWithTransferEncoding)));
        let dup = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(scan_bytewise(dup), Some((1, Problem::DuplicateContentLength)));
    }

    #[test]
    fn bodies_are_skipped_so_the_next_head_is_judged() {
        // A body that itself looks like a smuggled head must not be judged as one.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        let mut stream = format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nx-trailer: y\r\n\r\n");
        stream.extend_from_slice(b"\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n");
        stream.extend_from_slice(b"GET /d HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(scan_all(&[&stream]).0, Some((4, Problem::DuplicateContentLength)));
        assert_eq!(scan_bytewise(&stream), Some((4, Problem::DuplicateContentLength)));
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(scan_all(&[a, b]).0, Some((4, Problem::DuplicateContentLength)), "cut at {cut}");
        }
    }

    #[test]
    fn well_formed_requests_pass() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 1\r\nContent-Lengthy: 2\r\n\r\nPOST / HTTP/1.1\nHost: a\nContent-Length: 3\n\nabcGET / HTTP/1.0\r\n\r\n";
        let (found, s) = scan_all(&[stream]);
        assert_eq!(found, None);
        assert!(!s.stopped());
        assert_eq!(s.ordinal, 3);
    }

    #[test]
    fn the_scanner_stops_where_http1_ends() {
        let (_, mut s) = scan_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"]);
        assert!(s.stopped());
        assert_eq!(s.take_h2_start(), Some(24), "frames begin after the preface");
        let (_, s) = scan_all(&[b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"]);
        assert!(s.stopped());
        // A chunk size hyper refuses.
        let (_, s) = scan_all(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
        assert!(s.stopped());
        let (_, s) = scan_all(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"]);
        assert!(s.stopped());
    }

    #[test]
    fn long_names_and_values_cost_nothing_and_are_not_framing() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 100_000));
        head.extend_from_slice(b": ");
        head.extend(std::iter::repeat_n(b'b', 100_000));
        head.extend_from_slice(b"\r\nContent-Length: 1\r\n\r\nx");
        let (found, s) = scan_all(&[&head]);
        assert_eq!(found, None);
        assert_eq!(s.state, State::Idle);
    }

    #[test]
    fn the_log_answers_only_for_the_bad_ordinal() {
        let log = FramingLog::default();
        assert_eq!(log.problem_for(1), None);
        log.record(2, Problem::DuplicateContentLength);
        assert_eq!(log.problem_for(1), None);
        assert_eq!(log.problem_for(2), Some(Problem::DuplicateContentLength));
        assert_eq!(log.problem_for(0), None);
    }
}
