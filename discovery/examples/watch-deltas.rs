//! Follows a Dubbo service and prints every change as discovery publishes it: the whole set first,
//! then each delta (added, updated, removed), its source and freshness.
//!
//! ```text
//! DISCOVERY_MODE=api DISCOVERY_NAMESPACE=dubbo-demo \
//!     cargo run -p dubbo-k8s-discovery --example watch-deltas -- org.apache.dubbo.demo.GreeterService 1.0.0
//! ```

use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Metrics, ServiceRef, Update};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let interface = args.next().unwrap_or_else(|| "org.apache.dubbo.demo.GreeterService".to_owned());
    let version = args.next().unwrap_or_default();
    let hub = Discovery::new(&DiscoveryConfig::from_env()?, Metrics::default()).await?;
    let watch = hub.service(ServiceRef::new(interface).with_version(version)).await?;
    println!("{} -> {} ({:?})", watch.service(), watch.target(), watch.rule());
    if let Some(problem) = watch.problem() {
        println!("problem: {problem}");
    }
    let mut updates = watch.updates();
    while let Some(update) = updates.next().await {
        let set = update.set();
        let state = if set.is_stale() { "stale" } else { "live" };
        println!("version {} from {} ({state}), {} routable", set.version(), set.source(), set.routable_len());
        match &update {
            Update::Apply { deltas, .. } => {
                for d in deltas {
                    d.added.iter().for_each(|e| println!("  + {} {:?}", e.key(), e.name));
                    d.updated.iter().for_each(|e| println!("  ~ {} ready={}", e.key(), e.conditions.ready));
                    d.removed.iter().for_each(|k| println!("  - {k}"));
                }
            }
            _ => set.iter().for_each(|e| println!("  = {} ready={}", e.key(), e.conditions.ready)),
        }
    }
    Ok(())
}
