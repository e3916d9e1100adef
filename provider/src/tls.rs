//! Triple over TLS: the accept loop (TLS handshakes off the accept path, each connection told apart
//! by its first byte), the connection type tonic serves, and the per-call check of the caller.
//!
//! With TLS on, a plaintext connection to the Triple port is still served, but only for
//! `grpc.health.v1.Health`: kubelet's gRPC probes cannot speak TLS, and a plaintext client of the
//! greeter gets UNAUTHENTICATED saying that the port wants TLS, instead of a closed connection that
//! says nothing. With a client CA (mutual TLS), a caller without a certificate gets UNAUTHENTICATED
//! and one whose names are not in `PROVIDER_TLS_ALLOW` gets PERMISSION_DENIED; both messages say what
//! was missing.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use discovery::tls::{Authorizer, PeerIdentity, Refusal, ServerTls, TlsCause};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Status};
use tracing::{debug, warn};

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may stay silent before it is dropped.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a call knows of its connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The caller's address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The caller's certificate (TLS with a client certificate).
    pub peer: Arc<PeerIdentity>,
}

/// A connection: plaintext or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plaintext (TLS off, or a health probe on a TLS port).
    Plain(TcpStream, ConnInfo),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>, ConnInfo),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, i) | Conn::Tls(_, i) => i.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// Refusals of callers, by reason (`provider_tls_refused_calls`).
#[derive(Clone, Debug, Default)]
pub struct TlsCallMetrics {
    refused: Family<Vec<(String, String)>, Counter>,
}

impl TlsCallMetrics {
    /// Registered as `provider_tls_refused_calls{reason}`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = TlsCallMetrics::default();
        registry.register(
            "provider_tls_refused_calls",
            "Calls refused for their connection: plaintext on the TLS port, no client certificate, a name not allowed",
            m.refused.clone(),
        );
        m
    }

    fn refused(&self, reason: &str) {
        self.refused.get_or_create(&vec![("reason".to_owned(), reason.to_owned())]).inc();
    }
}

/// At most one warning per reason every few seconds, with how many were not logged in between.
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    /// Whether to log now, and how many were held back since the last line.
    fn allow(&self, reason: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match last.get_mut(reason) {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(5) => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                last.insert(reason.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// Accepts connections on `listener` and hands them to tonic: TLS handshakes (when `tls` is set) run
/// in their own tasks, so a slow or silent client never holds the others up. Ends when tonic drops
/// the stream (shutdown).
pub fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    let throttle = Arc::new(Throttle::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (tx, tls, throttle) = (tx.clone(), tls.clone(), throttle.clone());
            tokio::spawn(async move {
                if let Some(conn) = handshake(tcp, remote, tls.as_ref(), &throttle).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn first_byte(tcp: &TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut b)).await {
        Ok(Ok(1)) => Some(b[0]),
        _ => None,
    }
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, tls: Option<&ServerTls>, throttle: &Throttle) -> Option<Conn> {
    let first = first_byte(&tcp).await?;
    let plain = |tcp| Conn::Plain(tcp, ConnInfo { remote, tls: false, peer: Arc::new(PeerIdentity::default()) });
    match tls {
        None if first == TLS_HANDSHAKE => {
            if let Some(held) = throttle.allow("tls_on_plaintext") {
                warn!(
                    peer = %remote,
                    more = held,
                    "a TLS client connected to the plaintext Triple port; set PROVIDER_TLS_CERT and PROVIDER_TLS_KEY to \
                     serve TLS, or call it in plaintext"
                );
            }
            None
        }
        None => Some(plain(tcp)),
        Some(_) if first != TLS_HANDSHAKE => Some(plain(tcp)),
        Some(tls) => match tls.accept(tcp).await {
            Ok(stream) => {
                let peer = Arc::new(PeerIdentity::of(&stream));
                Some(Conn::Tls(Box::new(stream), ConnInfo { remote, tls: true, peer }))
            }
            Err(e) => {
                if let Some(held) = throttle.allow(e.cause().as_str()) {
                    warn!(peer = %remote, cause = e.cause().as_str(), more = held, error = %e, "TLS handshake failed");
                } else {
                    debug!(peer = %remote, error = %e, "TLS handshake failed");
                }
                None
            }
        },
    }
}

/// The interceptor that refuses callers: plaintext on a TLS port, and with mutual TLS a caller
/// without a certificate (UNAUTHENTICATED) or whose names are not allowed (PERMISSION_DENIED).
pub fn caller_check(
    tls: Option<ServerTls>,
    allow: Authorizer,
    metrics: TlsCallMetrics,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let throttle = Arc::new(Throttle::default());
    move |req: Request<()>| {
        let Some(tls) = &tls else { return Ok(req) };
        let Some(info) = req.extensions().get::<ConnInfo>() else {
            return Err(Status::internal("the connection's details are missing"));
        };
        if !info.tls {
            metrics.refused("plaintext");
            tls.count_failure(TlsCause::NotTls);
            if throttle.allow("plaintext").is_some() {
                warn!(peer = %info.remote, "a plaintext client called the TLS port; it was refused");
            }
            return Err(Status::unauthenticated(
                "this Triple port requires TLS (PROVIDER_TLS_CERT is set): connect with TLS; plaintext connections \
                 may call only grpc.health.v1.Health",
            ));
        }
        if !tls.mutual() {
            return Ok(req);
        }
        match allow.check(&info.peer) {
            Ok(_) => Ok(req),
            Err(refusal) => {
                let (reason, status) = match &refusal {
                    Refusal::NoCertificate => ("no_certificate", Status::unauthenticated(refusal.to_string())),
                    _ => ("not_allowed", Status::permission_denied(refusal.to_string())),
                };
                metrics.refused(reason);
                if throttle.allow(reason).is_some() {
                    warn!(peer = %info.remote, %refusal, "caller refused");
                }
                Err(status)
            }
        }
    }
}
