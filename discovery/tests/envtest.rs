//! API mode against a real kube-apiserver with etcd (envtest: `KUBEBUILDER_ASSETS`, see README
//! "Tests"), where the in-process server could only imitate: the real server's list from its watch
//! cache, its refusal of streaming lists (this pair runs etcd 3.4) and the plain list discovery falls
//! back to, set-based label selection, resourceVersions, EndpointSlice validation, RBAC with
//! SelfSubjectAccessReview, and the propagation time read from the slice's trigger-time annotation.
//! Without the assets each test prints one `skipped` line.

mod support;

use std::time::{Duration, SystemTime};

use dubbo_k8s_discovery::{Discovery, DiscoveryConfig, Error, MappingRule, Metrics, Mode, ServiceRef};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::*;
use testkit::envtest::KubeApiServer;

async fn server(test: &str) -> Option<KubeApiServer> {
    if let Err(why) = testkit::envtest::assets() {
        println!("skipped {test}: no real API server ({why})");
        return None;
    }
    Some(KubeApiServer::start(&[]).await.expect("envtest kube-apiserver"))
}

/// RFC 3339 with seconds, as the endpointslice controller writes the trigger time.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn greeter() -> ServiceRef {
    ServiceRef::new("org.apache.dubbo.demo.GreeterService").with_version("1.0.0")
}

/// How many lists and watches of EndpointSlices the server has served, from its /metrics.
async fn served(server: &KubeApiServer, verb: &str) -> f64 {
    let text = server.metrics().await.expect("metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(&format!("verb=\"{verb}\""))
                && l.contains("resource=\"endpointslices\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The whole API-mode path on the real server: the annotation mapping, slices created, replaced,
/// added and deleted, a streaming list refused and a plain one made instead, and the propagation
/// time of a change measured from its trigger-time annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_follows_a_real_api_server() {
    init_tracing();
    let Some(server) = server("api_mode_follows_a_real_api_server").await else { return };
    let client = server.client().await.expect("client");
    real_namespace_and_service(&client).await;
    let pp = PostParams::default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    slices
        .create(&pp, &real_slice("greeter-v1-a", &[("10.42.0.10", true), ("10.42.0.11", true)], None))
        .await
        .expect("a");

    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    cfg.api.failover = false;
    let metrics = Metrics::default();
    let hub = Discovery::with_client(&cfg, metrics.clone(), client.clone()).await.expect("hub");
    let d = hub.service(greeter()).await.expect("start");
    assert_eq!(d.target().service, "greeter-v1");
    assert_eq!(d.rule(), MappingRule::Annotation);
    wait_for(&d, 30, "two endpoints", |s| s.routable_len() == 2).await;
    // This pair refuses streaming lists (etcd 3.4): the set came from a plain list instead.
    assert!(served(&server, "LIST").await >= 1.0, "a plain list of EndpointSlices was made");

    let trigger = rfc3339(SystemTime::now());
    let mut changed = real_slice("greeter-v1-a", &[("10.42.0.10", true), ("10.42.0.11", false)], Some(&trigger));
    changed.metadata.resource_version = slices.get("greeter-v1-a").await.expect("get").metadata.resource_version;
    slices.replace("greeter-v1-a", &pp, &changed).await.expect("replace");
    wait_for(&d, 30, "one routable", |s| routable_keys(s) == ["10.42.0.10:50051"]).await;
    let (count, secs) = metrics.propagation_last(&format!("{NS}/greeter-v1"));
    assert!(count >= 1, "the change's propagation was measured from its trigger time");
    // Whole seconds in the annotation: at most a second early, and not minutes late.
    assert!((0.0..30.0).contains(&secs), "propagation {secs} s");
    assert_eq!(d.propagation().map(|(n, _)| n), Some(count), "the same figure through the watch (/debug/endpoints)");

    slices.create(&pp, &real_slice("greeter-v1-b", &[("10.42.1.10", true)], None)).await.expect("b");
    wait_for(&d, 30, "second slice merged", |s| s.routable_len() == 2).await;
    slices.delete("greeter-v1-a", &DeleteParams::default()).await.expect("delete");
    wait_for(&d, 30, "first slice gone", |s| routable_keys(s) == ["10.42.1.10:50051"]).await;
    assert!(served(&server, "WATCH").await >= 1.0, "followed by a watch");
}

/// A user without the Role is told so at start, by the real server's SelfSubjectAccessReview, in
/// one line; given the Role and RoleBinding the error names, the same user follows the Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_role_the_real_server_says_what_is_missing() {
    init_tracing();
    let Some(server) = server("without_the_role_the_real_server_says_what_is_missing").await else { return };
    let admin = server.client().await.expect("admin");
    real_namespace_and_service(&admin).await;
    Api::<EndpointSlice>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &real_slice("greeter-v1-a", &[("10.42.0.10", true)], None))
        .await
        .expect("slice");
    let config = server.config_for("discovery").await.expect("config");
    let user = kube::Client::try_from(config).expect("client");
    let mut cfg = DiscoveryConfig::new(Mode::Api).with_namespace(NS);
    cfg.api.failover = false;
    let err =
        Discovery::with_client(&cfg, Metrics::default(), user.clone()).await.expect_err("forbidden without the Role");
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    let line = err.to_string();
    assert!(!line.contains('\n') && line.contains(NS), "one line naming the namespace: {line}");
    assert!(err.role().is_some(), "the Role it needs is available");

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "dubbo-discovery", "namespace": NS},
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "dubbo-discovery", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dubbo-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "discovery"}],
    }))
    .expect("binding");
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), NS).create(&pp, &role).await.expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), NS).create(&pp, &binding).await.expect("binding");
    // RBAC is read from the server's informer: a moment after the write.
    let mut last = None;
    for _ in 0..50 {
        let followed = match Discovery::with_client(&cfg, Metrics::default(), user.clone()).await {
            Ok(hub) => hub.service(greeter()).await,
            Err(e) => Err(e),
        };
        match followed {
            Ok(d) => {
                wait_for(&d, 30, "the endpoint", |s| s.routable_len() == 1).await;
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("still refused with the Role: {last:?}");
}
