//! API mode against a real kube-apiserver (K3s in a container, via testcontainers). Ignored by
//! default: it pulls the K3s image and needs a privileged container. Run it with
//! `cargo test -p discovery --test k3s -- --ignored`.
//!
//! The Service is selectorless, so the EndpointSlices are written by the test (as an external
//! controller would) and no application image is needed: what is exercised is the real API server's
//! list/watch, label selection, resourceVersions, validation of slices and SelfSubjectAccessReview.

mod support;

use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, MappingRule, Metrics, Mode, ServiceRef};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use support::*;
use testcontainers_modules::k3s::{K3s, KUBE_SECURE_PORT};
use testcontainers_modules::testcontainers::ImageExt;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the K3s image and a privileged container: cargo test -p discovery --test k3s -- --ignored"]
async fn api_mode_against_a_real_api_server() {
    init_tracing();
    let conf = std::env::temp_dir().join(format!("dubbo-k8s-k3s-{}", std::process::id()));
    std::fs::create_dir_all(&conf).expect("conf dir");
    let k3s = K3s::default()
        .with_conf_mount(&conf)
        .with_privileged(true)
        .with_userns_mode("host")
        .start()
        .await
        .expect("start k3s");
    let port = k3s.get_host_port_ipv4(KUBE_SECURE_PORT).await.expect("port");
    let yaml = k3s.image().read_kube_config().expect("kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("parse kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("url");
    let client = kube::Client::try_from(config).expect("client");

    real_namespace_and_service(&client).await;
    let pp = PostParams::default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    slices
        .create(&pp, &real_slice("greeter-v1-a", &[("10.42.0.10", true), ("10.42.0.11", true)], None))
        .await
        .expect("slice a");

    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    cfg.api.failover = false;
    let service = ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0");
    let hub = Discovery::with_client(&cfg, Metrics::default(), client.clone()).await.expect("hub");
    let d = hub.service(service).await.expect("start");
    assert_eq!(d.target().service, "greeter-v1");
    assert_eq!(d.rule(), MappingRule::Annotation);
    wait_for(&d, 30, "two endpoints", |s| s.routable_len() == 2).await;

    slices
        .replace("greeter-v1-a", &pp, &{
            let mut s = real_slice("greeter-v1-a", &[("10.42.0.10", true), ("10.42.0.11", false)], None);
            s.metadata.resource_version = slices.get("greeter-v1-a").await.expect("get").metadata.resource_version;
            s
        })
        .await
        .expect("replace");
    wait_for(&d, 30, "one routable", |s| routable_keys(s) == ["10.42.0.10:50051"]).await;

    slices.create(&pp, &real_slice("greeter-v1-b", &[("10.42.1.10", true)], None)).await.expect("slice b");
    wait_for(&d, 30, "second slice merged", |s| s.routable_len() == 2).await;
    slices.delete("greeter-v1-a", &DeleteParams::default()).await.expect("delete");
    wait_for(&d, 30, "first slice gone", |s| routable_keys(s) == ["10.42.1.10:50051"]).await;
}
