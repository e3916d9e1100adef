//! The kube client of API mode: `DISCOVERY_API_SERVER`, else in-cluster config, else kubeconfig,
//! with timeouts that fit watches.

use std::time::Duration;

use kube::Client;

use crate::config::DiscoveryConfig;

pub(crate) async fn make_client(cfg: &DiscoveryConfig) -> std::result::Result<Client, String> {
    let infer = async {
        match &cfg.api.server {
            Some(url) => {
                let uri = url.parse().map_err(|e| format!("failed to parse DISCOVERY_API_SERVER={url:?}: {e}"))?;
                Ok(kube::Config::new(uri))
            }
            None => kube::Config::infer().await.map_err(|e| {
                format!("failed to find kubernetes credentials (in-cluster service account or kubeconfig): {e}")
            }),
        }
    };
    let mut config = match tokio::time::timeout(cfg.api.request_timeout, infer).await {
        Ok(c) => c?,
        Err(_) => return Err(format!("finding kubernetes credentials took over {:?}", cfg.api.request_timeout)),
    };
    config.connect_timeout = Some(cfg.api.request_timeout.min(Duration::from_secs(5)));
    // A watch lasts up to watch_timeout; the read timeout must not cut it first.
    config.read_timeout = Some(cfg.api.watch_timeout + Duration::from_secs(30));
    // kube's default client silently retries 429/503/504 up to 15 times with backoff growing to
    // minutes: a list answered "too large resource version" (504) would be asked again and again
    // instead of falling back, and an overloaded server would hold each request far past its
    // deadline. The list/watch loop has its own deadlines, backoff and fallbacks.
    config.default_retry = false;
    Client::try_from(config).map_err(|e| {
        let hint = if e.to_string().contains("No CA certificates") {
            " (the TLS connector loads the system CA certificates even for http://: install ca-certificates in the image)"
        } else {
            ""
        };
        format!("failed to build the kubernetes client: {e}{hint}")
    })
}
