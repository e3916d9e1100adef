//! The provider over real Triple/gRPC on loopback: identity check, gzip, health, metrics, and the
//! drain on SIGTERM observed from a client of the real binary.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provider::pb::greeter_service_client::GreeterServiceClient;
use provider::pb::{HelloRequest, HelloStreamRequest};
use provider::{Provider, ProviderConfig};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn cfg(version: &str, group: &str) -> ProviderConfig {
    ProviderConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        version: version.into(),
        group: group.into(),
        instance: format!("greeter-{version}"),
        ip: "127.0.0.1".into(),
        drain: Duration::from_millis(300),
        ..ProviderConfig::default()
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

fn request(name: &str, version: Option<&str>, group: Option<&str>) -> tonic::Request<HelloRequest> {
    let mut r = tonic::Request::new(HelloRequest { name: name.into(), ..Default::default() });
    if let Some(v) = version {
        r.metadata_mut().insert(provider::VERSION_HEADER, v.parse().expect("ascii"));
    }
    if let Some(g) = group {
        r.metadata_mut().insert(provider::GROUP_HEADER, g.parse().expect("ascii"));
    }
    r
}

#[tokio::test]
async fn serves_its_identity_and_refuses_others() {
    let p = Provider::start(cfg("1.0.0", "blue")).await.expect("start");
    let mut client = GreeterServiceClient::new(channel(p.addr()).await);

    let reply = client.say_hello(request("dubbo", Some("1.0.0"), Some("blue"))).await.expect("served").into_inner();
    let by = reply.served_by.expect("instance");
    assert_eq!((by.name.as_str(), by.version.as_str(), by.group.as_str()), ("greeter-1.0.0", "1.0.0", "blue"));
    assert!(reply.message.contains("Hello dubbo"));

    client.say_hello(request("plain grpc", None, None)).await.expect("no headers: a plain gRPC client is served");

    let err = client.say_hello(request("x", Some("2.0.0"), Some("blue"))).await.expect_err("wrong version");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("2.0.0") && err.message().contains("serves version \"1.0.0\""), "{}", err.message());
    let err = client.say_hello(request("x", Some("1.0.0"), Some("green"))).await.expect_err("wrong group");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // dubbo-rust 0.4 stamps its user agent as the version and "cluster" as the group on every call.
    client
        .say_hello(request("dubbo-rust", Some("dubbo-rust/0.1.0"), Some("cluster")))
        .await
        .expect("dubbo-rust's constant headers are not an identity");

    // Dubbo clients gzip every request.
    let mut gz = GreeterServiceClient::new(channel(p.addr()).await)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    gz.say_hello(request("gzip", None, None)).await.expect("gzip accepted");

    let mut stream = client
        .say_hello_stream(HelloStreamRequest { name: "s".into(), count: 3, interval_ms: 1 })
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.message().await.expect("message") {
        n += 1;
        assert!(m.message.ends_with(&format!("#{n}")));
    }
    assert_eq!(n, 3);
    let err = client
        .say_hello_stream(HelloStreamRequest { name: "s".into(), count: 0, interval_ms: 0 })
        .await
        .expect_err("count 0");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let metrics = http_get(p.admin_addr(), "/metrics").await;
    assert!(metrics.contains("provider_calls_total{method=\"SayHello\",code=\"ok\"} 4"), "{metrics}");
    assert!(metrics.contains("code=\"unimplemented\"} 2"), "{metrics}");
}

/// A minimal HTTP/1.0 GET, to check the admin port without another client crate.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Kills the child if the test fails before it exits by itself.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_on_sigterm_then_exits_zero() {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_provider"))
        .env("PROVIDER_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROVIDER_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PROVIDER_DRAIN", "1500ms")
        .env("PROVIDER_SHUTDOWN_TIMEOUT", "5s")
        .env("POD_NAME", "greeter-drain")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn provider");
    let pid = child.id();
    let mut guard = KillOnDrop(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let started = Instant::now();
    let ch = loop {
        match Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("provider did not start: {e}"),
        }
    };
    let mut client = GreeterServiceClient::new(ch.clone());
    let mut health = HealthClient::new(ch.clone());
    let status = |h: &mut HealthClient<Channel>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest { service: "org.apache.dubbo.demo.GreeterService".into() })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    assert_eq!(status(&mut health).await.expect("health"), ServingStatus::Serving as i32);
    assert!(http_get(admin_addr, "/readyz").await.starts_with("HTTP/1.0 200"));

    // A stream that is in flight when the drain ends must complete.
    let term_at = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&mut health).await.expect("health during drain"), ServingStatus::NotServing as i32);
    let live = health
        .check(HealthCheckRequest { service: provider::server::LIVENESS.into() })
        .await
        .expect("liveness")
        .into_inner()
        .status;
    assert_eq!(live, ServingStatus::Serving as i32, "a draining provider stays live");
    assert!(http_get(admin_addr, "/readyz").await.starts_with("HTTP/1.0 503"), "readiness fails while draining");

    let mut served_during_drain = 0;
    while term_at.elapsed() < Duration::from_millis(1100) {
        client.say_hello(request("drain", None, None)).await.expect("calls are served during the drain");
        served_during_drain += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = client
        .say_hello_stream(HelloStreamRequest { name: "inflight".into(), count: 10, interval_ms: 100 })
        .await
        .expect("stream starts before the drain ends")
        .into_inner();
    let mut got = 0;
    while let Some(_m) = stream.message().await.expect("in-flight stream finishes") {
        got += 1;
    }
    assert_eq!(got, 10, "in-flight call completed across the stop");

    let mut child = guard.0.take().expect("child");
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    let elapsed = term_at.elapsed();
    assert_eq!(exit.code(), Some(0), "exit 0 after a drain");
    assert!(elapsed < Duration::from_secs(8), "bounded shutdown, took {elapsed:?}");
    assert!(served_during_drain > 10, "served {served_during_drain} calls during the drain");
    eprintln!("drain: {served_during_drain} calls served after SIGTERM; exit after {elapsed:?}");
}
