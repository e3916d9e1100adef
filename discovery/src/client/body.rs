//! The bodies of one call: the request kept whole for replay when it can be, and the response body
//! that releases the endpoint and reports the call's outcome when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::body::Body;

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
