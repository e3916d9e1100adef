//! An authoritative DNS server for local runs, answering like CoreDNS for headless Services whose
//! pods listen on loopback ports (UDP and TCP).
//!
//! ```text
//! cargo run -p dubbo-k8s-testkit --example local-dns -- \
//!     --listen 127.0.0.1:5353 --namespace demo \
//!     --service greeter-service-v1=127.0.0.1:50061,127.0.0.1:50062 \
//!     --service greeter-service-v2=127.0.0.1:50071
//! ```
//!
//! Each service gets `_tri._tcp.<svc>.<ns>.svc.cluster.local` SRV records (one target per pod,
//! `pod-<n>.<svc>…`, with its port) and the targets' A records, TTL 5 s.

use std::net::SocketAddr;

use dubbo_k8s_testkit::FakeDns;

fn usage() -> ! {
    eprintln!("usage: local-dns [--listen ip:port] [--namespace ns] --service name=ip:port[,ip:port...]...");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = "127.0.0.1:5353".parse().expect("literal");
    let mut namespace = "demo".to_owned();
    let mut services: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| usage()),
            "--namespace" => namespace = value(),
            "--service" => {
                let v = value();
                let (name, pods) = v.split_once('=').unwrap_or_else(|| usage());
                let pods = pods.split(',').map(|p| p.trim().parse().unwrap_or_else(|_| usage())).collect();
                services.push((name.to_owned(), pods));
            }
            _ => usage(),
        }
    }
    if services.is_empty() {
        usage();
    }
    let dns = match FakeDns::start_on(listen, "cluster.local").await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("local-dns: failed to listen on {listen}: {e}");
            std::process::exit(1)
        }
    };
    for (name, pods) in &services {
        let fqdn = format!("{name}.{namespace}.svc.cluster.local");
        let mut targets = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let target = format!("pod-{i}.{fqdn}");
            dns.set_addresses(&target, &[pod.ip()], 5);
            targets.push((target, pod.port()));
        }
        let ips: Vec<_> = pods.iter().map(SocketAddr::ip).collect();
        dns.set_addresses(&fqdn, &ips, 5);
        let pairs: Vec<(&str, u16)> = targets.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        dns.set_srv(&format!("_tri._tcp.{fqdn}"), &pairs, 5);
        eprintln!("local-dns: _tri._tcp.{fqdn} -> {pods:?}");
    }
    eprintln!("local-dns: serving on {} (udp+tcp)", dns.addr());
    let _ = tokio::signal::ctrl_c().await;
}
