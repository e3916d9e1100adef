//! A balanced, zone-aware Triple client through a tonic-generated client: one call to the Dubbo
//! service named on the command line, then the endpoint that served it and the client's pool.
//!
//! ```text
//! DISCOVERY_MODE=static DISCOVERY_STATIC_ENDPOINTS=127.0.0.1:50051 \
//!     cargo run -p dubbo-k8s-discovery --features client --example balanced-client -- 1.0.0
//! ```
//!
//! In a cluster, `DISCOVERY_MODE=api` (or `dns`) finds the pods by themselves.

use std::time::Duration;

use dubbo_k8s_discovery::client::{Balanced, ClientOptions, MethodPolicy, Served};
use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef};
use provider::pb::HelloRequest;
use provider::pb::greeter_service_client::GreeterServiceClient;

const SAY_HELLO: &str = "/org.apache.dubbo.demo.GreeterService/SayHello";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let version = std::env::args().nth(1).unwrap_or_else(|| "1.0.0".to_owned());
    let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
    let service = ServiceRef::new(provider::INTERFACE).with_version(version);
    // SayHello only reads: a call cut after the provider ran it may run again elsewhere.
    let opts =
        ClientOptions::from_env()?.method(SAY_HELLO, MethodPolicy::idempotent().with_deadline(Duration::from_secs(2)));
    let balanced = Balanced::new(&hub, service, opts).await?;
    if !balanced.wait_routable(Duration::from_secs(10)).await {
        eprintln!("no provider found within 10 s: {:?}", balanced.service().current());
    }
    let mut client = GreeterServiceClient::new(balanced.clone());
    let reply = client.say_hello(HelloRequest { name: "example".into(), ..Default::default() }).await?;
    let served = reply.extensions().get::<Served>().cloned();
    println!("{}", reply.into_inner().message);
    if let Some(s) = served {
        println!("served by {} after {} attempt(s), request id {:?}", s.endpoint, s.attempts, s.request_id);
    }
    println!("{:#?}", balanced.debug());
    Ok(())
}
