//! A real kube-apiserver and etcd (from `KUBEBUILDER_ASSETS`) on loopback until Ctrl-C, with a
//! kubeconfig for the administrator: for trying API mode, the benchmarks' `--kubeconfig`, or kubectl.
//!
//! ```text
//! KUBEBUILDER_ASSETS=target/envtest cargo run -p dubbo-k8s-testkit --features envtest --example envtest-server
//! ```

#[cfg(feature = "envtest")]
#[tokio::main]
async fn main() {
    use dubbo_k8s_testkit::envtest::KubeApiServer;
    let server = KubeApiServer::start(&[]).await.unwrap_or_else(|e| {
        eprintln!("envtest-server: {e}");
        std::process::exit(1)
    });
    let (api, etcd) = server.pids();
    println!("{}", server.kubeconfig().display());
    eprintln!(
        "envtest-server: {} ready in {:?} (kube-apiserver pid {api}, etcd pid {etcd}); kubeconfig above; Ctrl-C stops it",
        server.url(),
        server.started_in()
    );
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(not(feature = "envtest"))]
fn main() {
    eprintln!("envtest-server: build it with --features envtest");
    std::process::exit(2)
}
