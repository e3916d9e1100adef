//! One call through the balanced client, as a short sequence of named steps: [`Call::prepare`]
//! (identity headers, request id, the method's policy and deadline, the body kept for replay),
//! waiting for discovery's first answer, then per attempt: [`Shared::choose`] an endpoint not tried
//! yet, [`Shared::attempt`] it, and [`Shared::judge`] the outcome: answered; replayed on another
//! endpoint (what provably never reached the provider, for any method; what may have, only for a
//! method declared idempotent); or failed with a status whose message and `dubbo-k8s-cause`
//! metadata say why.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tower::{Service, ServiceExt};

use super::body::{Outcome, RequestBody, Tracked, grpc_status};
use super::cause::{Cause, Delivery, classify};
use super::grpc_timeout::{GRPC_TIMEOUT_RESOLUTION, format_grpc_timeout, parse_grpc_timeout};
use super::metrics::ServiceMetrics;
use super::pool::{InFlight, Member, record_failure};
use super::shared::Shared;
use super::stats::Served;
use super::{GROUP_HEADER, VERSION_HEADER};
use crate::model::EndpointKey;

// Header names made once, not parsed on every call.
const VERSION_NAME: HeaderName = HeaderName::from_static(VERSION_HEADER);
const GROUP_NAME: HeaderName = HeaderName::from_static(GROUP_HEADER);
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(super::REQUEST_ID_HEADER);

/// One call in progress.
struct Call {
    /// The whole call's deadline (the caller's `grpc-timeout`, else the method's policy), sent to the
    /// provider; `None`: only the wait for the response to start is bounded.
    deadline: Option<(Instant, Duration)>,
    /// When the response must have started: the deadline, or the default deadline.
    limit: Instant,
    idempotent: bool,
    max_attempts: u32,
    attempt_timeout: Option<Duration>,
    parts: http::request::Parts,
    /// Extensions for the first attempt (the gRPC method, anything the caller set); a retry gets the
    /// method again.
    extensions: Option<http::Extensions>,
    method: Option<tonic::GrpcMethod<'static>>,
    body: RequestBody,
    request_id: Option<HeaderValue>,
    tried: Vec<EndpointKey>,
    attempts: u32,
    last: Option<(Cause, String)>,
    /// TLS failures of this call while no endpoint answered.
    tls_failures: u32,
}

/// An attempt that did not end in an answer to pass on.
struct Failure {
    cause: Cause,
    member: Arc<Member>,
    /// Since when another endpoint's answer shows that this one's timeout is its own fault: the
    /// attempt's start, less twice its length (at least a second).
    others_since_ms: u64,
    detail: String,
    /// The provider's own UNAVAILABLE answer, passed on when it is not replayed.
    answer: Option<tonic::Status>,
}

/// What follows a failed attempt.
enum Next {
    Retry,
    Fail(tonic::Status),
}

impl Call {
    fn prepare(shared: &Shared, req: http::Request<Body>) -> Result<Call, tonic::Status> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let policy = shared.opts.policy(parts.uri.path());
        let asked = parts.headers.get(&GRPC_TIMEOUT).and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
        let deadline = asked.or(policy.and_then(|p| p.deadline)).map(|d| (started + d, d));
        let limit = deadline.map_or(started + shared.opts.default_deadline, |(at, _)| at);
        if let Some(v) = &shared.version_header {
            parts.headers.insert(VERSION_NAME, v.clone());
        }
        if let Some(g) = &shared.group_header {
            parts.headers.insert(GROUP_NAME, g.clone());
        }
        let request_id = match parts.headers.get(&REQUEST_ID_NAME) {
            Some(own) => Some(own.clone()),
            None if shared.opts.request_ids => {
                let id = shared.request_id();
                parts.headers.insert(REQUEST_ID_NAME, id.clone());
                Some(id)
            }
            None => None,
        };
        let body = RequestBody::new(body, shared.opts.max_replay_bytes)?;
        let extensions = std::mem::take(&mut parts.extensions);
        Ok(Call {
            deadline,
            limit,
            idempotent: policy.is_some_and(|p| p.idempotent),
            max_attempts: 1 + policy.and_then(|p| p.retries).unwrap_or(shared.opts.retries),
            attempt_timeout: policy.and_then(|p| p.attempt_timeout),
            method: extensions.get::<tonic::GrpcMethod<'static>>().cloned(),
            extensions: Some(extensions),
            parts,
            body,
            request_id,
            tried: Vec::new(),
            attempts: 0,
            last: None,
            tls_failures: 0,
        })
    }

    /// The request of the next attempt, carrying the time left; `None` once a body that could not
    /// be kept has been sent.
    fn request(&mut self, now: Instant) -> Option<http::Request<Body>> {
        let body = self.body.next()?;
        let mut request = http::Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = self.parts.uri.clone();
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();
        if let Some((at, _)) = self.deadline
            && let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(format_grpc_timeout(at - now)))
        {
            request.headers_mut().insert(GRPC_TIMEOUT, v);
        }
        match self.extensions.take() {
            Some(first) => *request.extensions_mut() = first,
            None => {
                if let Some(m) = &self.method {
                    request.extensions_mut().insert(m.clone());
                }
            }
        }
        Some(request)
    }

    fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// What the deadline was, for messages.
    fn deadline_text(&self, shared: &Shared) -> String {
        match self.deadline {
            Some((_, d)) => format!("deadline of {d:?}"),
            None => format!(
                "{:?} wait for a response (ClientOptions::default_deadline, for calls with no deadline of their own)",
                shared.opts.default_deadline
            ),
        }
    }

    /// A status for the caller, with the cause, attempts and request id as metadata.
    fn status(&self, cause: Cause, code: tonic::Code, message: String) -> tonic::Status {
        let mut status = tonic::Status::new(code, message);
        let md = status.metadata_mut();
        md.insert(super::CAUSE_METADATA, MetadataValue::from_static(cause.as_str()));
        md.insert(super::ATTEMPTS_METADATA, MetadataValue::from(self.attempts));
        if let Some(id) = self.request_id.as_ref().and_then(|v| v.to_str().ok())
            && let Ok(v) = MetadataValue::try_from(id)
        {
            md.insert(super::REQUEST_ID_HEADER, v);
        }
        status
    }
}

impl Shared {
    pub(crate) async fn call(self: Arc<Self>, req: http::Request<Body>) -> Result<http::Response<Body>, tonic::Status> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let mut call = Call::prepare(&self, req)?;
        self.wait_for_first_answer(&mut call).await?;
        self.budget.deposit();
        loop {
            let member = self.choose(&mut call)?;
            match self.attempt(&mut call, member).await {
                Ok(response) => return Ok(response),
                Err(failure) => match self.judge(&mut call, failure) {
                    Next::Retry => {}
                    Next::Fail(status) => return Err(status),
                },
            }
        }
    }

    /// A cold start: waits for discovery's first answer, within the call's limit.
    async fn wait_for_first_answer(&self, call: &mut Call) -> Result<(), tonic::Status> {
        if !self.members.load().pending {
            return Ok(());
        }
        let mut answered = self.answered.clone();
        if tokio::time::timeout_at(call.limit, answered.wait_for(|a| *a)).await.is_ok() {
            return Ok(());
        }
        let msg = format!(
            "no endpoint set for {} within the {} (discovery still starting; target {})",
            self.key,
            call.deadline_text(self),
            self.members.load().target
        );
        Err(self.no_endpoint(call, Cause::NotReady, msg))
    }

    /// The endpoint of the next attempt: one not tried yet by this call.
    fn choose(&self, call: &mut Call) -> Result<Arc<Member>, tonic::Status> {
        let now = Instant::now();
        let members = self.members.load();
        let Some(member) = self.pick(&members, &call.tried, now.into_std()) else {
            if let Some((cause, msg)) = call.last.take() {
                self.call_ended(Err(cause));
                return Err(call.status(cause, cause.code(), format!("{msg}; no other endpoint to try")));
            }
            let msg = format!(
                "no routable endpoint for {} (target {}, source {}, {} known, none ready or serving); check the \
                 pods' readiness and the mapping (`consumer resolve`, /debug/endpoints)",
                self.key, members.target, members.source, members.known
            );
            return Err(self.no_endpoint(call, Cause::NoEndpoints, msg));
        };
        if now >= call.limit {
            self.call_ended(Err(Cause::Deadline));
            let msg = format!(
                "{} exceeded calling {} after {} attempt(s)",
                call.deadline_text(self),
                self.key,
                call.attempts
            );
            return Err(call.status(Cause::Deadline, tonic::Code::DeadlineExceeded, msg));
        }
        Ok(member)
    }

    /// Sends one attempt to `member` and waits for the response to start.
    async fn attempt(self: &Arc<Self>, call: &mut Call, member: Arc<Member>) -> Result<http::Response<Body>, Failure> {
        let now = Instant::now();
        let began_ms = self.now_ms();
        let failure = |cause, member: Arc<Member>, detail: String| {
            let waited = (self.now_ms() - began_ms).max(1000);
            Failure { cause, member, others_since_ms: began_ms.saturating_sub(2 * waited), detail, answer: None }
        };
        let Some(request) = call.request(now) else {
            return Err(failure(
                Cause::Transport,
                member,
                "the request body could not be kept for another attempt".into(),
            ));
        };
        call.attempts += 1;
        let limit = call.attempt_timeout.map_or(call.limit, |t| (now + t).min(call.limit));
        member.calls.fetch_add(1, Ordering::Relaxed);
        let zone = member.zone.load();
        zone.calls.fetch_add(1, Ordering::Relaxed);
        zone.counter.inc();
        let guard = InFlight::new(member.clone());
        let mut channel = member.channel.clone();
        let sent = tokio::time::timeout_at(limit, async {
            channel.ready().await?;
            channel.call(request).await
        })
        .await;
        let response = match sent {
            Err(_elapsed) => {
                let cause = if limit >= call.limit { Cause::Deadline } else { Cause::AttemptTimeout };
                let waited = limit.saturating_duration_since(now);
                return Err(failure(cause, member, format!("no response within {waited:?}")));
            }
            Ok(Err(error)) => {
                #[cfg(feature = "tls")]
                match member.tls_alert.as_ref().and_then(|a| a.take_recent()) {
                    Some((Some(cause), detail)) => return Err(failure(super::cause::from_tls(cause), member, detail)),
                    Some((None, hint)) => {
                        return Err(failure(classify(&error), member, format!("{} ({hint})", chain(&error))));
                    }
                    None => {}
                }
                return Err(failure(classify(&error), member, chain(&error)));
            }
            Ok(Ok(response)) => response,
        };
        member.answered_ms.store(self.now_ms().max(1), Ordering::Relaxed);
        let status = grpc_status(response.headers());
        if status == Some(tonic::Code::Cancelled)
            && let Some((at, _)) = call.deadline
            && Instant::now() + GRPC_TIMEOUT_RESOLUTION >= at
        {
            // The provider gave up at the deadline it was sent (a tonic server answers CANCELLED
            // "Timeout expired") a moment before our own timer fired: the caller's deadline it is,
            // as grpc-java reports a cancel after the deadline.
            return Err(failure(Cause::Deadline, member, "the provider cancelled the call at the deadline".into()));
        }
        if status == Some(tonic::Code::Unavailable) {
            let answer = tonic::Status::from_header_map(response.headers());
            let detail = answer.as_ref().map_or_else(String::new, |s| s.message().to_owned());
            return Err(Failure {
                answer,
                ..failure(Cause::Unavailable, member, format!("answered UNAVAILABLE: {detail}"))
            });
        }
        let mut response = response;
        let served = Served {
            endpoint: member.key,
            attempts: call.attempts,
            request_id: call.request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned),
        };
        response.extensions_mut().insert(served);
        let outcome = Arc::new(CallOutcome { shared: self.clone(), _in_flight: guard });
        if let Some(code) = status {
            // Trailers-only: the call ends here.
            outcome.finished(Some(code));
            return Ok(response);
        }
        Ok(response.map(|b| Body::new(Tracked::new(b, outcome))))
    }

    /// After a failed attempt: replay it elsewhere, or tell the caller.
    fn judge(&self, call: &mut Call, f: Failure) -> Next {
        let cause = f.cause;
        ServiceMetrics::by_cause(&self.metrics.attempt_failed, cause).inc();
        record_failure(self, &f.member, cause, f.others_since_ms, self.now_ms());
        call.tried.push(f.member.key);
        let at = f.member.key;
        let msg = format!(
            "{} at {at}: {} ({}) (attempt {} of {})",
            self.key,
            cause.as_str(),
            f.detail,
            call.attempts,
            call.max_attempts
        );
        if cause == Cause::Deadline {
            self.call_ended(Err(cause));
            let msg = format!(
                "{} exceeded calling {} at {at} (attempt {}; {})",
                call.deadline_text(self),
                self.key,
                call.attempts,
                f.detail
            );
            return Next::Fail(call.status(cause, tonic::Code::DeadlineExceeded, msg));
        }
        if cause.is_tls() && !super::pool::others_answered(self, &f.member, f.others_since_ms) {
            // No other endpoint answers: one more endpoint is tried (one bad pod at a cold start is
            // routed around), and a second TLS failure says the CA, the name or a certificate is
            // wrong for all of them. Trying further would fail the same way (a retry storm), and
            // ejecting would empty the pool for a configuration error.
            call.tls_failures += 1;
            if call.tls_failures >= 2 || self.members.load().all.len() < 2 {
                self.call_ended(Err(cause));
                let msg = format!(
                    "{msg}; TLS failed on {} endpoint(s) and none has answered lately, so this is taken for a TLS \
                     configuration error: not retried further, no endpoint ejected (check DISCOVERY_TLS_CA, \
                     DISCOVERY_TLS_SERVER_NAME and the providers' certificates)",
                    call.tls_failures
                );
                return Next::Fail(call.status(cause, cause.code(), msg));
            }
        }
        if !cause.replayable(call.idempotent) {
            self.call_ended(Err(cause));
            if cause.delivery() == Delivery::MaybeProcessed {
                self.counters.not_replayed.fetch_add(1, Ordering::Relaxed);
                ServiceMetrics::by_cause(&self.metrics.not_replayed, cause).inc();
                let msg = format!(
                    "{msg}; the call may have been processed, so it was not replayed ({} is not declared idempotent; \
                     see ClientOptions::method)",
                    call.path()
                );
                let code = f.answer.as_ref().map_or(cause.code(), tonic::Status::code);
                return Next::Fail(call.status(cause, code, msg));
            }
            return Next::Fail(call.status(cause, cause.code(), msg));
        }
        if !call.body.replayable() || call.attempts >= call.max_attempts {
            self.call_ended(Err(cause));
            let why =
                if call.body.replayable() { "no retry left" } else { "the request could not be kept for a replay" };
            return Next::Fail(call.status(cause, cause.code(), format!("{msg}; {why}")));
        }
        if Instant::now() >= call.limit {
            self.call_ended(Err(Cause::Deadline));
            return Next::Fail(call.status(
                Cause::Deadline,
                tonic::Code::DeadlineExceeded,
                format!("{} exceeded after {msg}", call.deadline_text(self)),
            ));
        }
        if !self.budget.withdraw() {
            self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            self.metrics.budget_exhausted.inc();
            self.call_ended(Err(cause));
            return Next::Fail(call.status(cause, cause.code(), format!("{msg}; retry budget exhausted")));
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        ServiceMetrics::by_cause(&self.metrics.retried, cause).inc();
        call.last = Some((cause, msg));
        Next::Retry
    }

    fn no_endpoint(&self, call: &Call, cause: Cause, message: String) -> tonic::Status {
        self.counters.unlogged[cause.index()].fetch_add(1, Ordering::Relaxed);
        self.call_ended(Err(cause));
        call.status(cause, cause.code(), message)
    }
}

/// An error and its sources, as one line: tonic's own text ("transport error") says nothing alone.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Reports the end of a call that got a response.
struct CallOutcome {
    shared: Arc<Shared>,
    _in_flight: InFlight,
}

impl Outcome for CallOutcome {
    fn finished(&self, code: Option<tonic::Code>) {
        let m = &self._in_flight.0;
        let shared = &self.shared;
        match code {
            Some(tonic::Code::Ok) => {
                m.health.success();
                shared.call_ended(Ok(()));
            }
            Some(tonic::Code::Unavailable) => {
                let now = shared.now_ms();
                record_failure(shared, m, Cause::Unavailable, now, now);
                shared.call_ended(Err(Cause::Unavailable));
            }
            Some(_) => {
                m.health.success(); // the endpoint answered: not an outlier
                shared.call_ended(Err(Cause::Status));
            }
            // Dropped by the caller before the end: nothing to say about the endpoint.
            None => {}
        }
    }
}
