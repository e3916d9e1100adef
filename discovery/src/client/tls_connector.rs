//! The connector of a member over TLS: TCP to the pod's address, then a handshake that verifies the
//! provider's certificate against the Service's name (not the address), with the configuration in
//! use at the time of the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::BoxError;
use crate::tls::{ClientTls, HandshakeError, TlsCause};

/// What a member's connection met after its handshake, kept for the call that sees the connection
/// fail: a TLS alert (its cause), or a close before any HTTP/2 (only a hint: the request may have
/// been processed, so the call keeps the cause of the close itself).
#[derive(Debug, Default)]
pub(crate) struct AlertSlot(Mutex<Option<(Instant, Option<TlsCause>, String)>>);

impl AlertSlot {
    fn set(&self, cause: Option<TlsCause>, detail: String) {
        *crate::sync::lock(&self.0) = Some((Instant::now(), cause, detail));
    }

    /// What happened, if it happened in the last few seconds (taken: it is reported once).
    pub(crate) fn take_recent(&self) -> Option<(Option<TlsCause>, String)> {
        let (at, cause, detail) = crate::sync::lock(&self.0).take()?;
        (at.elapsed() < Duration::from_secs(5)).then_some((cause, detail))
    }
}

/// A TLS stream that notes a TLS error met while reading (an alert from the provider), and a
/// connection closed before its first byte of HTTP/2: a provider that refuses our certificate sends
/// its alert and closes, and when our request crossed the alert the reset can discard it, leaving only
/// the close (a hint then, not a cause: a provider that died right after accepting looks the same).
pub(crate) struct Watched {
    inner: TlsStream<TcpStream>,
    slot: Arc<AlertSlot>,
    peer: Arc<str>,
    read_any: bool,
}

impl Watched {
    fn closed_early(&self, what: &str) {
        let detail = format!(
            "{} {what} right after the TLS handshake, before any HTTP/2: does it refuse our client certificate?",
            self.peer
        );
        self.slot.set(None, detail);
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.read_any = true,
            Poll::Ready(Ok(())) if !this.read_any => this.closed_early("closed the connection"),
            Poll::Ready(Err(e)) if e.get_ref().is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some()) => {
                let failure = HandshakeError::from_io(e, &this.peer);
                this.slot.set(Some(failure.cause()), failure.to_string());
            }
            Poll::Ready(Err(e)) if !this.read_any => this.closed_early(&format!("reset the connection ({e})")),
            _ => {}
        }
        result
    }
}

impl Watched {
    /// A write that fails before the provider sent anything: the same hint as a read.
    fn noted<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result
            && !self.read_any
        {
            self.closed_early(&format!("closed the connection ({e})"));
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.noted(result)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.noted(result)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.noted(result)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connects one member over TLS.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    tls: ClientTls,
    name: ServerName<'static>,
    expected: String,
    alerts: Arc<AlertSlot>,
}

impl TlsConnector {
    pub(crate) fn new(tls: ClientTls, server_name: &str) -> Result<Self, String> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("{server_name:?} is not a name a certificate can carry: {e}"))?;
        let expected = tls.expected(server_name);
        Ok(TlsConnector { tls, name, expected, alerts: Arc::default() })
    }

    /// Where its connections note TLS errors met after the handshake.
    pub(crate) fn alerts(&self) -> Arc<AlertSlot> {
        self.alerts.clone()
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<Watched>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, name, expected, slot) =
            (self.tls.clone(), self.name.clone(), self.expected.clone(), self.alerts.clone());
        Box::pin(async move {
            let authority = uri.authority().ok_or("the endpoint has no address")?.as_str().to_owned();
            let addr: SocketAddr = authority.parse().map_err(|e| format!("{authority} is not ip:port: {e}"))?;
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let connector = tokio_rustls::TlsConnector::from(tls.config());
            let peer = format!("the provider at {addr} (expected {expected})");
            match connector.connect(name, tcp).await {
                Ok(inner) => Ok(TokioIo::new(Watched { inner, slot, peer: peer.into(), read_any: false })),
                Err(e) => {
                    let failure = HandshakeError::from_io(&e, &peer);
                    tls.metrics.handshake_failed("client", failure.cause().as_str());
                    Err(Box::new(failure) as BoxError)
                }
            }
        })
    }
}
