//! The greeter service, and the check that refuses calls for a Dubbo version or group this instance
//! does not serve.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::executions::{Executions, REQUEST_ID_HEADER};
use crate::pb::greeter_service_server::GreeterService;
use crate::pb::{HelloReply, HelloRequest, HelloStreamRequest, Instance};
use crate::{GROUP_HEADER, INTERFACE, VERSION_HEADER};

/// How dubbo-rust 0.4's `tri-service-version` starts (it sends its user agent there).
pub const DUBBO_RUST_MARKER: &str = "dubbo-rust/";

/// Largest `count` a stream call may ask for.
pub const MAX_STREAM_COUNT: u32 = 1000;

/// Calls served, by method and gRPC code.
#[derive(Clone, Debug, Default)]
pub struct CallMetrics {
    calls: Family<Vec<(String, String)>, Counter>,
}

impl CallMetrics {
    /// Registers `provider_calls_total` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = CallMetrics::default();
        registry.register("provider_calls", "Triple calls by method and gRPC code", m.calls.clone());
        m
    }

    fn count(&self, method: &str, code: tonic::Code) {
        let code = code_label(code);
        self.calls.get_or_create(&vec![("method".into(), method.into()), ("code".into(), code)]).inc();
    }
}

/// A gRPC code as a metric label: `InvalidArgument` → `invalid_argument` (the consumer's labels too).
pub fn code_label(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Largest `delay_ms` a call may ask for.
pub const MAX_DELAY_MS: u32 = 10_000;

/// Serves `org.apache.dubbo.demo.GreeterService` as one provider instance.
#[derive(Clone, Debug)]
pub struct Greeter {
    instance: Instance,
    metrics: CallMetrics,
    executions: Executions,
}

fn request_id<T>(request: &Request<T>) -> Option<String> {
    request.metadata().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

impl Greeter {
    /// An instance that reports itself as `instance` in every reply and counts executions by
    /// request id in `executions`.
    pub fn new(instance: Instance, metrics: CallMetrics, executions: Executions) -> Self {
        Greeter { instance, metrics, executions }
    }

    fn reply(&self, name: &str) -> HelloReply {
        let name = if name.is_empty() { "world" } else { name };
        HelloReply {
            message: format!("Hello {name}, from {} ({})", self.instance.name, self.instance.version),
            served_by: Some(self.instance.clone()),
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl GreeterService for Greeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let id = request_id(&request);
        let req = request.into_inner();
        if req.delay_ms > MAX_DELAY_MS {
            self.metrics.count("SayHello", tonic::Code::InvalidArgument);
            return Err(Status::invalid_argument(format!(
                "delay_ms must be at most {MAX_DELAY_MS} (got {})",
                req.delay_ms
            )));
        }
        self.executions.record(id.as_deref(), "SayHello", &req.name);
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(req.delay_ms))).await;
        }
        self.metrics.count("SayHello", tonic::Code::Ok);
        Ok(Response::new(self.reply(&req.name)))
    }

    type SayHelloStreamStream = ReplyStream;

    async fn say_hello_stream(
        &self,
        request: Request<HelloStreamRequest>,
    ) -> Result<Response<Self::SayHelloStreamStream>, Status> {
        let id = request_id(&request);
        let req = request.into_inner();
        if req.count == 0 || req.count > MAX_STREAM_COUNT || req.interval_ms > 10_000 {
            self.metrics.count("SayHelloStream", tonic::Code::InvalidArgument);
            return Err(Status::invalid_argument(format!(
                "count must be 1..={MAX_STREAM_COUNT} and interval_ms at most 10000 (got count {}, interval_ms {})",
                req.count, req.interval_ms
            )));
        }
        self.executions.record(id.as_deref(), "SayHelloStream", &req.name);
        self.metrics.count("SayHelloStream", tonic::Code::Ok);
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            for i in 0..req.count {
                if i > 0 && req.interval_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(req.interval_ms))).await;
                }
                let mut reply = this.reply(&req.name);
                reply.message = format!("{} #{}", reply.message, i + 1);
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// An interceptor that refuses calls whose `tri-service-version` / `tri-service-group` headers ask
/// for something else than `version` / `group` (absent headers are plain gRPC clients: accepted).
pub fn identity_check(
    version: String,
    group: String,
    metrics: CallMetrics,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let asked = |h: &str| req.metadata().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (want_version, want_group) = (asked(VERSION_HEADER), asked(GROUP_HEADER));
        // dubbo-rust 0.4 overwrites both headers on every call with its own constants
        // (`dubbo-rust/0.1.0`, `cluster`): they say nothing about what the caller wants, and the
        // caller cannot change them. Such a call is treated as a plain gRPC call.
        if want_version.as_deref().is_some_and(|v| v.starts_with(DUBBO_RUST_MARKER)) {
            return Ok(req);
        }
        let version_ok = want_version.as_deref().is_none_or(|v| v == version);
        let group_ok = want_group.as_deref().is_none_or(|g| g == group);
        if version_ok && group_ok {
            return Ok(req);
        }
        metrics.count("*", tonic::Code::Unimplemented);
        Err(Status::unimplemented(format!(
            "{INTERFACE} version {:?} group {:?} is not served here (this instance serves version {version:?} group {group:?})",
            want_version.unwrap_or_default(),
            want_group.unwrap_or_default(),
        )))
    }
}
