//! Why an attempt failed, told by the types in its error chain (never by message text), and what
//! that says about the request: never processed by the provider's application (replayed on another
//! endpoint), maybe processed (replayed only for a method declared idempotent), or answered (never
//! replayed).
//!
//! This is gRPC's transparent-retry rule: only what provably never reached the application is
//! replayed behind the caller's back. A connection reset, an end of stream or a GOAWAY that covers
//! the stream, after the request was written, may come from a provider that ran the handler and then
//! died; replaying that is at-least-once delivery, which only the application can allow.

use std::error::Error as StdError;

use serde::Serialize;

/// Why an attempt or a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// The endpoint refused the connection. Not processed.
    ConnectRefused,
    /// Connecting took longer than the connect timeout. Not processed.
    ConnectTimeout,
    /// Connecting failed otherwise (reset during the handshake, no route). Not processed.
    ConnectFailed,
    /// The transport dropped the request before writing it (a pooled connection found closed).
    /// Not processed.
    Canceled,
    /// The server refused the stream: HTTP/2 REFUSED_STREAM, or a GOAWAY whose last stream id is
    /// below this stream's. Not processed.
    RefusedStream,
    /// The connection was reset or closed, or a GOAWAY covered the stream, after the request was
    /// written. Maybe processed.
    ConnectionLost,
    /// The provider answered UNAVAILABLE. Maybe processed.
    Unavailable,
    /// The method's attempt timeout ran out at this endpoint. Maybe processed.
    AttemptTimeout,
    /// The call's deadline ran out. Maybe processed.
    Deadline,
    /// Discovery knows no routable endpoint. Nothing was sent.
    NoEndpoints,
    /// Discovery had no answer yet within the deadline. Nothing was sent.
    NotReady,
    /// The provider answered with another error status (never replayed).
    Status,
    /// Any other transport failure. Maybe processed.
    Transport,
    /// TLS: the provider's certificate is not signed by a trusted CA. Not processed.
    TlsUnknownCa,
    /// TLS: the provider's certificate does not carry the name asked for. Not processed.
    TlsNameMismatch,
    /// TLS: the provider's certificate has expired or is not valid yet. Not processed.
    TlsExpired,
    /// TLS: the handshake failed otherwise (the provider refused our certificate, or does not speak
    /// TLS). Not processed.
    TlsHandshake,
}

/// What a failure says about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// It provably never reached the provider's application: replayed, whatever the method.
    NotProcessed,
    /// It may have run: replayed only for idempotent methods.
    MaybeProcessed,
    /// The provider answered, or nothing was sent: never replayed.
    Final,
}

/// Every cause, in a fixed order (counters are indexed by it).
const ALL: &[Cause] = &[
    Cause::ConnectRefused,
    Cause::ConnectTimeout,
    Cause::ConnectFailed,
    Cause::Canceled,
    Cause::RefusedStream,
    Cause::ConnectionLost,
    Cause::Unavailable,
    Cause::AttemptTimeout,
    Cause::Deadline,
    Cause::NoEndpoints,
    Cause::NotReady,
    Cause::Status,
    Cause::Transport,
    Cause::TlsUnknownCa,
    Cause::TlsNameMismatch,
    Cause::TlsExpired,
    Cause::TlsHandshake,
];

/// How many causes there are (for counters indexed by cause).
pub(crate) const COUNT: usize = 17;

impl Cause {
    /// Every cause.
    pub fn all() -> &'static [Cause] {
        ALL
    }

    /// Label for metrics, logs and the `dubbo-k8s-cause` metadata of a failed call.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ConnectRefused => "connect_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ConnectFailed => "connect_failed",
            Cause::Canceled => "canceled",
            Cause::RefusedStream => "refused_stream",
            Cause::ConnectionLost => "connection_lost",
            Cause::Unavailable => "unavailable",
            Cause::AttemptTimeout => "attempt_timeout",
            Cause::Deadline => "deadline",
            Cause::NoEndpoints => "no_endpoints",
            Cause::NotReady => "not_ready",
            Cause::Status => "status",
            Cause::Transport => "transport",
            Cause::TlsUnknownCa => "tls_unknown_ca",
            Cause::TlsNameMismatch => "tls_name_mismatch",
            Cause::TlsExpired => "tls_expired",
            Cause::TlsHandshake => "tls_handshake",
        }
    }

    pub(crate) fn index(self) -> usize {
        ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    pub(crate) fn delivery(self) -> Delivery {
        match self {
            Cause::ConnectRefused
            | Cause::ConnectTimeout
            | Cause::ConnectFailed
            | Cause::Canceled
            | Cause::RefusedStream
            | Cause::TlsUnknownCa
            | Cause::TlsNameMismatch
            | Cause::TlsExpired
            | Cause::TlsHandshake => Delivery::NotProcessed,
            Cause::ConnectionLost | Cause::Unavailable | Cause::AttemptTimeout | Cause::Deadline | Cause::Transport => {
                Delivery::MaybeProcessed
            }
            Cause::NoEndpoints | Cause::NotReady | Cause::Status => Delivery::Final,
        }
    }

    /// Whether a request that failed this way may be sent again to another endpoint: always when
    /// it provably never reached the provider's application; for a method declared idempotent,
    /// also when it may have.
    pub fn replayable(self, idempotent: bool) -> bool {
        match self.delivery() {
            Delivery::NotProcessed => true,
            Delivery::MaybeProcessed => idempotent && self != Cause::Deadline,
            Delivery::Final => false,
        }
    }

    /// Whether it counts against the endpoint's health (outlier detection). Timeouts and TLS
    /// failures count only when other endpoints answer meanwhile; the caller decides that.
    pub(crate) fn endpoint_fault(self) -> bool {
        matches!(
            self,
            Cause::ConnectRefused
                | Cause::ConnectTimeout
                | Cause::ConnectFailed
                | Cause::Canceled
                | Cause::RefusedStream
                | Cause::ConnectionLost
                | Cause::Unavailable
                | Cause::AttemptTimeout
                | Cause::Deadline
                | Cause::TlsUnknownCa
                | Cause::TlsNameMismatch
                | Cause::TlsExpired
                | Cause::TlsHandshake
        )
    }

    /// A TLS failure: when no other endpoint answers either, it is the configuration's (a CA, a
    /// name, a certificate), not one endpoint's: not retried elsewhere, nothing ejected.
    pub fn is_tls(self) -> bool {
        matches!(self, Cause::TlsUnknownCa | Cause::TlsNameMismatch | Cause::TlsExpired | Cause::TlsHandshake)
    }

    /// A timeout: it counts against the endpoint only when others answer meanwhile.
    pub(crate) fn is_timeout(self) -> bool {
        matches!(self, Cause::AttemptTimeout | Cause::Deadline)
    }

    /// The gRPC code a caller sees for it.
    pub(crate) fn code(self) -> tonic::Code {
        match self {
            Cause::Deadline => tonic::Code::DeadlineExceeded,
            Cause::Status => tonic::Code::Unknown,
            _ => tonic::Code::Unavailable,
        }
    }
}

/// Classifies a transport error by the types in its source chain.
pub(crate) fn classify(err: &(dyn StdError + 'static)) -> Cause {
    let mut cur = Some(err);
    let mut connect = false;
    while let Some(e) = cur {
        #[cfg(feature = "tls")]
        if let Some(cause) = tls_cause(e) {
            return cause;
        }
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= client.is_connect();
        }
        connect |= e.downcast_ref::<tonic::ConnectError>().is_some();
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // h2 gives a stream above a GOAWAY's last stream id the GOAWAY itself as its error (and
            // a request sent after one was received): the server never processed it. A stream the
            // GOAWAY covered that breaks later gets the connection's end (broken pipe) instead.
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) || (h2.is_go_away() && h2.is_remote()) {
                return Cause::RefusedStream;
            }
            return if connect { Cause::ConnectFailed } else { Cause::ConnectionLost };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Cause::ConnectRefused,
                TimedOut if connect => return Cause::ConnectTimeout,
                _ if connect => return Cause::ConnectFailed,
                ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected | UnexpectedEof => {
                    return Cause::ConnectionLost;
                }
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_canceled() {
                return Cause::Canceled;
            }
            if h.is_closed() || h.is_incomplete_message() {
                return Cause::ConnectionLost;
            }
            if h.is_timeout() && connect {
                return Cause::ConnectTimeout;
            }
        }
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some()
            || e.downcast_ref::<tokio::time::error::Elapsed>().is_some()
        {
            return if connect { Cause::ConnectTimeout } else { Cause::Deadline };
        }
        cur = e.source();
    }
    if connect { Cause::ConnectFailed } else { Cause::Transport }
}

/// A TLS failure in the chain: our connector's handshake error, or a rustls error inside an I/O
/// error (a provider that refuses our certificate says so after the handshake, on the first read).
#[cfg(feature = "tls")]
fn tls_cause(e: &(dyn StdError + 'static)) -> Option<Cause> {
    use crate::tls::{HandshakeError, TlsCause};
    let tls = if let Some(h) = e.downcast_ref::<HandshakeError>() {
        h.cause()
    } else if let Some(r) =
        e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        TlsCause::of(r)
    } else {
        return None;
    };
    Some(from_tls(tls))
}

/// The cause of a call for a TLS failure.
#[cfg(feature = "tls")]
pub(crate) fn from_tls(tls: crate::tls::TlsCause) -> Cause {
    use crate::tls::TlsCause;
    match tls {
        TlsCause::UnknownCa => Cause::TlsUnknownCa,
        TlsCause::NameMismatch => Cause::TlsNameMismatch,
        TlsCause::Expired => Cause::TlsExpired,
        _ => Cause::TlsHandshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn io_errors_classify_by_kind_not_text() {
        assert_eq!(classify(&Error::new(ErrorKind::ConnectionRefused, "whatever")), Cause::ConnectRefused);
        assert_eq!(classify(&Error::new(ErrorKind::ConnectionReset, "x")), Cause::ConnectionLost);
        // a message that mentions "connection" does not make an error retryable
        assert_eq!(classify(&Error::other("connection refused by the application")), Cause::Transport);
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(classify(&refused), Cause::RefusedStream);
        assert_eq!(COUNT, ALL.len());
    }

    #[test]
    fn only_what_never_reached_the_application_is_replayed_for_any_method() {
        for c in Cause::all() {
            let any = c.replayable(false);
            let idempotent = c.replayable(true);
            match c.delivery() {
                Delivery::NotProcessed => assert!(any && idempotent, "{c:?}"),
                Delivery::MaybeProcessed => assert!(!any, "{c:?} may have been processed: not for any method"),
                Delivery::Final => assert!(!any && !idempotent, "{c:?}"),
            }
        }
        assert!(Cause::ConnectionLost.replayable(true) && Cause::Unavailable.replayable(true));
        assert!(!Cause::Deadline.replayable(true), "no time is left after the call's deadline");
        assert!(Cause::AttemptTimeout.replayable(true) && !Cause::AttemptTimeout.replayable(false));
        assert!(!Cause::Status.replayable(true), "an application error is an answer");
    }

    #[test]
    fn errors_during_connect_are_connect_failures_whatever_their_kind() {
        let during_connect = tonic::ConnectError(Box::new(Error::new(ErrorKind::ConnectionReset, "reset")));
        assert_eq!(classify(&during_connect), Cause::ConnectFailed);
        let timed_out = tonic::ConnectError(Box::new(Error::new(ErrorKind::TimedOut, "slow")));
        assert_eq!(classify(&timed_out), Cause::ConnectTimeout);
    }
}
