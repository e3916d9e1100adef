//! The `kubernetes://` registry for the `dubbo` crate (feature `dubbo`): installs it, then
//! subscribes the way a dubbo client's directory does and prints the provider URLs dubbo would
//! call, as they change.
//!
//! ```text
//! DISCOVERY_MODE=api cargo run -p dubbo-k8s-discovery --features dubbo --example dubbo-registry -- dubbo-demo 1.0.0
//! ```
//!
//! A dubbo client uses it with `ClientBuilder::new().with_registry("kubernetes://dubbo-demo?version=1.0.0".parse()?)`.

use dubbo::extension::registry_extension::{Registry, ServiceChange};
use dubbo_k8s_discovery::adapter::dubbo::{KubernetesRegistry, install};
use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let namespace = args.next().unwrap_or_else(|| "default".to_owned());
    let version = args.next().unwrap_or_default();
    let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
    install(hub.clone()).await?;
    let registry = KubernetesRegistry::new(format!("kubernetes://{namespace}?version={version}").parse()?, hub);
    let interface = "org.apache.dubbo.demo.GreeterService";
    let subscription = format!("consumer://127.0.0.1/{interface}?interface={interface}").parse()?;
    let mut changes = registry.subscribe(subscription).await?;
    while let Some(change) = changes.recv().await {
        match change? {
            ServiceChange::Insert(url, ()) => println!("+ {url}"),
            ServiceChange::Remove(url) => println!("- {url}"),
        }
    }
    Ok(())
}
