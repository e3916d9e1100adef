//! The in-process Kubernetes API server of the tests as a process, for local runs and container
//! tests of API mode: plain HTTP, EndpointSlice list/watch, Services, SelfSubjectAccessReviews, and
//! writes with the real API paths.
//!
//! ```text
//! cargo run -p dubbo-k8s-testkit --example fake-apiserver -- --listen 127.0.0.1:18080
//! curl -X POST -H 'content-type: application/json' -d @slice.json \
//!     http://127.0.0.1:18080/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices
//! ```

use std::net::SocketAddr;

use dubbo_k8s_testkit::FakeApiServer;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:18080".parse().expect("literal");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => {
                listen = v.parse().unwrap_or_else(|_| {
                    eprintln!("fake-apiserver: --listen takes ip:port, got {v:?}");
                    std::process::exit(2)
                })
            }
            _ => {
                eprintln!("usage: fake-apiserver [--listen ip:port]");
                std::process::exit(2)
            }
        }
    }
    let server = FakeApiServer::start_on(listen).await.unwrap_or_else(|e| {
        eprintln!("fake-apiserver: failed to listen on {listen}: {e}");
        std::process::exit(1)
    });
    eprintln!("fake-apiserver: serving on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
}
