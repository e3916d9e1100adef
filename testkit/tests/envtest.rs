//! The real API server of `KUBEBUILDER_ASSETS` starts, answers as its users, and stops clean.
#![cfg(feature = "envtest")]

use dubbo_k8s_testkit::envtest::{KubeApiServer, assets};

fn get(path: &str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(Vec::new());
    *req.uri_mut() = path.parse().expect("path");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_answers_its_users_and_cleans_up() {
    if let Err(why) = assets() {
        println!("skipped: {why}");
        return;
    }
    let server = KubeApiServer::start(&[]).await.expect("start");
    println!("kube-apiserver ready in {:?} at {}", server.started_in(), server.url());
    let admin = server.client().await.expect("admin client");
    let version = admin.apiserver_version().await.expect("version");
    assert!(version.git_version.starts_with("v1."), "{version:?}");
    let namespaces = admin.request_text(get("/api/v1/namespaces")).await.expect("list namespaces");
    assert!(namespaces.contains("\"kube-system\""), "{namespaces}");

    // An unprivileged user is authenticated (403 Forbidden, not 401) and denied.
    let stranger = kube::Client::try_from(server.config_for("stranger").await.expect("config")).expect("client");
    match stranger.request_text(get("/api/v1/namespaces")).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the stranger should be forbidden: {other:?}"),
    }
    let metrics = server.metrics().await.expect("metrics");
    assert!(metrics.contains("apiserver_longrunning_requests"), "no watch gauge in /metrics");
    let kubeconfig = server.kubeconfig();
    assert!(kubeconfig.is_file());
    let (api_pid, etcd_pid) = server.pids();
    drop(server);
    assert!(!kubeconfig.exists(), "the server's files are removed");
    for pid in [api_pid, etcd_pid] {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z"), "process {pid} still runs: {state}");
    }
}
