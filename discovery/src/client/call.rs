//! The pieces of one call: why an attempt failed (by type, never by message text), whether it may be
//! retried, the request body kept for replay, the deadline carried by `grpc-timeout`, and the
//! response body that releases the endpoint and reports the call's outcome when it ends.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Serialize;
use tonic::body::Body;

/// Why an attempt or a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The endpoint refused the connection.
    ConnectRefused,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The connection was reset or closed under the request.
    ConnectionReset,
    /// The transport cancelled the request before sending it (a connection that was closing).
    Canceled,
    /// The server refused the stream (HTTP/2 REFUSED_STREAM, or a GOAWAY past it): not processed.
    RefusedStream,
    /// The server answered UNAVAILABLE.
    Unavailable,
    /// The deadline ran out.
    Deadline,
    /// Discovery knows no routable endpoint.
    NoEndpoints,
    /// Discovery had no answer yet within the deadline.
    NotReady,
    /// The server answered another error status (not retried).
    Status,
    /// Any other transport failure (not retried).
    Transport,
}

impl Cause {
    /// Every cause, in a fixed order (for counters indexed by cause).
    pub const ALL: [Cause; 11] = [
        Cause::ConnectRefused,
        Cause::ConnectTimeout,
        Cause::ConnectionReset,
        Cause::Canceled,
        Cause::RefusedStream,
        Cause::Unavailable,
        Cause::Deadline,
        Cause::NoEndpoints,
        Cause::NotReady,
        Cause::Status,
        Cause::Transport,
    ];

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ConnectRefused => "connect_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ConnectionReset => "connection_reset",
            Cause::Canceled => "canceled",
            Cause::RefusedStream => "refused_stream",
            Cause::Unavailable => "unavailable",
            Cause::Deadline => "deadline",
            Cause::NoEndpoints => "no_endpoints",
            Cause::NotReady => "not_ready",
            Cause::Status => "status",
            Cause::Transport => "transport",
        }
    }

    pub(crate) fn index(self) -> usize {
        Cause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// Whether another endpoint may serve a replay of the request: the request did not reach the
    /// provider's application, or the provider said it cannot serve now.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Cause::ConnectRefused
                | Cause::ConnectTimeout
                | Cause::ConnectionReset
                | Cause::Canceled
                | Cause::RefusedStream
                | Cause::Unavailable
        )
    }

    /// Whether it counts against the endpoint's health (outlier detection).
    pub(crate) fn endpoint_fault(self) -> bool {
        self.retryable()
    }

    /// The gRPC code a caller sees for it.
    pub(crate) fn code(self) -> tonic::Code {
        match self {
            Cause::Deadline => tonic::Code::DeadlineExceeded,
            Cause::Status | Cause::Transport => tonic::Code::Unknown,
            _ => tonic::Code::Unavailable,
        }
    }
}

/// Classifies a transport error by the types in its source chain.
pub(crate) fn classify(err: &(dyn StdError + 'static)) -> Cause {
    let mut cur = Some(err);
    let mut connect = false;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Cause::ConnectRefused,
                TimedOut if connect => return Cause::ConnectTimeout,
                ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected | UnexpectedEof => {
                    return Cause::ConnectionReset;
                }
                _ => {}
            }
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Cause::RefusedStream;
            }
            if h2.is_go_away() || h2.is_io() {
                return Cause::ConnectionReset;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() {
                return Cause::Canceled;
            }
            if h.is_closed() || h.is_incomplete_message() {
                return Cause::ConnectionReset;
            }
            if h.is_timeout() {
                return Cause::ConnectTimeout;
            }
        }
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= client.is_connect();
        }
        connect |= e.downcast_ref::<tonic::ConnectError>().is_some();
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some()
            || e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
        {
            return if connect { Cause::ConnectTimeout } else { Cause::Deadline };
        }
        cur = e.source();
    }
    if connect { Cause::ConnectTimeout } else { Cause::Transport }
}

/// Parses a `grpc-timeout` header value (`<digits><H|M|S|m|u|n>`).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` is sent in whole milliseconds, rounded down (never more time than is left), so a
/// provider's deadline may fall up to this much before the caller's.
pub(crate) const GRPC_TIMEOUT_RESOLUTION: Duration = Duration::from_millis(1);

/// Formats a `grpc-timeout` value: whole milliseconds rounded down (at least 1), or whole seconds
/// once milliseconds would need more than 8 digits.
pub(crate) fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms < 100_000_000 { format!("{ms}m") } else { format!("{}S", d.as_secs().min(99_999_999)) }
}

/// The request body: kept whole when it could be read at once (unary and server-streaming calls:
/// one message), so that another endpoint can be tried; else passed through once.
pub(crate) enum RequestBody {
    Replayable(Bytes),
    Once(Option<Body>),
}

impl RequestBody {
    /// Reads what `body` has ready now, up to `max` bytes.
    pub(crate) fn new(mut body: Body, max: usize) -> Result<Self, tonic::Status> {
        // A unary request is one data frame: kept as it is, not copied. Only a body of several
        // frames is gathered into one buffer.
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        let read = |first: Option<Bytes>, buf: BytesMut| -> Bytes {
            match first {
                Some(f) if buf.is_empty() => f,
                Some(f) => {
                    let mut all = BytesMut::with_capacity(f.len() + buf.len());
                    all.extend_from_slice(&f);
                    all.extend_from_slice(&buf);
                    all.freeze()
                }
                None => buf.freeze(),
            }
        };
        loop {
            if body.is_end_stream() {
                return Ok(RequestBody::Replayable(read(first, buf)));
            }
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
                        if held + data.len() > max {
                            let mut prefix = BytesMut::from(read(first, buf));
                            prefix.extend_from_slice(&data);
                            return Ok(RequestBody::Once(Some(Body::new(Prefixed {
                                prefix: Some(prefix.freeze()),
                                rest: body,
                            }))));
                        }
                        if first.is_none() {
                            first = Some(data);
                        } else {
                            buf.extend_from_slice(&data);
                        }
                    }
                    Err(_trailers) => {}
                },
                Some(Some(Err(status))) => return Err(status),
                Some(None) => return Ok(RequestBody::Replayable(read(first, buf))),
                None => {
                    // More is to come later (a client stream): no replay.
                    return Ok(RequestBody::Once(Some(Body::new(Prefixed {
                        prefix: Some(read(first, buf)),
                        rest: body,
                    }))));
                }
            }
        }
    }

    pub(crate) fn replayable(&self) -> bool {
        matches!(self, RequestBody::Replayable(_))
    }

    /// The body of the next attempt (`None` once a pass-through body was used).
    pub(crate) fn next(&mut self) -> Option<Body> {
        match self {
            RequestBody::Replayable(b) => Some(Body::new(http_body_util::Full::new(b.clone()))),
            RequestBody::Once(b) => b.take(),
        }
    }
}

/// What was read ahead, then the rest of the body.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(p) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.as_ref().is_none_or(Bytes::is_empty) && self.rest.is_end_stream()
    }
}

/// The gRPC status in a header map (`grpc-status`), if any.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(v))
}

/// Told when a call ends: its final status (`None`: the caller dropped the response early).
pub(crate) trait Outcome: Send + Sync + 'static {
    fn finished(&self, code: Option<tonic::Code>);
}

/// The response body: passes frames through and, at its end (trailers) or when dropped, reports the
/// call's outcome once; whatever it holds (the endpoint's in-flight guard) is released then.
pub(crate) struct Tracked<O: Outcome> {
    inner: Body,
    outcome: Option<Arc<O>>,
}

impl<O: Outcome> Tracked<O> {
    pub(crate) fn new(inner: Body, outcome: Arc<O>) -> Self {
        Tracked { inner, outcome: Some(outcome) }
    }

    fn finish(&mut self, code: Option<tonic::Code>) {
        if let Some(o) = self.outcome.take() {
            o.finished(code);
        }
    }
}

impl<O: Outcome> Drop for Tracked<O> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<O: Outcome> HttpBody for Tracked<O> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    let code = grpc_status(t);
                    self.finish(code.or(Some(tonic::Code::Unknown)));
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.finish(Some(code));
            }
            Poll::Ready(None) => self.finish(Some(tonic::Code::Unknown)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Never claim the end before the trailers were seen: the outcome comes with them.
        self.outcome.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("100u"), Some(Duration::from_micros(100)));
        for bad in ["", "m", "5", "123456789S", "5x", "-5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_grpc_timeout(Duration::from_micros(10)), "1m", "rounded up, never 0");
        assert_eq!(parse_grpc_timeout(&format_grpc_timeout(Duration::from_secs(3))), Some(Duration::from_secs(3)));
    }

    #[test]
    fn io_errors_classify_by_kind_not_text() {
        use std::io::{Error, ErrorKind};
        assert_eq!(classify(&Error::new(ErrorKind::ConnectionRefused, "whatever")), Cause::ConnectRefused);
        assert_eq!(classify(&Error::new(ErrorKind::ConnectionReset, "x")), Cause::ConnectionReset);
        // a message that mentions "connection" does not make an error retryable
        assert_eq!(classify(&Error::other("connection refused by the application")), Cause::Transport);
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(classify(&refused), Cause::RefusedStream);
        assert!(!Cause::Status.retryable() && !Cause::Deadline.retryable() && Cause::Unavailable.retryable());
    }

    #[tokio::test]
    async fn a_unary_body_is_kept_for_replay_and_a_stream_is_not() {
        let unary = Body::new(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\x03abc")));
        let mut b = RequestBody::new(unary, 1024).expect("ok");
        assert!(b.replayable());
        for _ in 0..3 {
            let body = b.next().expect("again");
            assert_eq!(body.collect().await.expect("read").to_bytes(), Bytes::from_static(b"\0\0\0\0\x03abc"));
        }
        // Several frames all there at once: gathered in order, replayable.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        for part in [&b"one-"[..], b"two-", b"three"] {
            tx.send(Ok(Frame::data(Bytes::from_static(part)))).await.expect("send");
        }
        drop(tx);
        let parts = Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let mut b = RequestBody::new(parts, 1024).expect("ok");
        assert!(b.replayable());
        for _ in 0..2 {
            let body = b.next().expect("again");
            assert_eq!(body.collect().await.expect("read").to_bytes(), Bytes::from_static(b"one-two-three"));
        }
        // A client stream whose next message is not there yet: passed through once, nothing lost.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await.expect("send");
        let streaming = Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let mut b = RequestBody::new(streaming, 1024).expect("ok");
        assert!(!b.replayable());
        let body = b.next().expect("once");
        assert!(b.next().is_none(), "a stream is sent once");
        tx.send(Ok(Frame::data(Bytes::from_static(b"-second")))).await.expect("send");
        drop(tx);
        assert_eq!(body.collect().await.expect("read").to_bytes(), Bytes::from_static(b"first-second"));
        // Over the size limit: passed through once.
        let big = Body::new(http_body_util::Full::new(Bytes::from(vec![7u8; 2048])));
        let mut b = RequestBody::new(big, 1024).expect("ok");
        assert!(!b.replayable());
        assert_eq!(b.next().expect("once").collect().await.expect("read").to_bytes().len(), 2048);
    }
}
