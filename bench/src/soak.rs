//! Soak: the consumer binary under steady traffic for a long time while the endpoints churn every
//! two seconds (a provider flips not-ready and back, another comes and goes); its resident memory and
//! open file descriptors are sampled and must stay flat, and no call may fail.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{FakeApiServer, PodEndpoint, endpoint_slice};

use crate::report::Section;
use crate::util::{Helper, free_port, mib, rss_kib, start_provider, wait_tcp};

const NS: &str = "soak";
const SERVICE: &str = "greeter-service";

/// Open file descriptors of a process (Linux).
fn fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

/// GET `path` over HTTP/1.1; the body.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.ok()?.ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

async fn stats(admin: SocketAddr) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&http_get(admin, "/stats").await?).ok()?;
    Some((v["ok"].as_u64()?, v["failed"].as_u64()?))
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    ok: u64,
    failed: u64,
}

pub async fn run(provider_bin: &Path, consumer_bin: &Path, length: Duration) -> Section {
    let mut section = Section::new(
        &format!("Soak, {} s", length.as_secs()),
        "The consumer binary (API mode, 200 calls/s) against the in-process API server and four provider \
         processes; every 2 s one change: p1 not ready, p1 ready, p4 added, p4 removed. Sampled every 5 s; the \
         first sample after a sixth of the run is the baseline. Target: no failed call; resident memory at the \
         end within 15 % (or 2 MB) of the baseline; open file descriptors within 4 of it.",
        &["time s", "RSS", "fds", "calls ok", "failed"],
    );
    match soak(provider_bin, consumer_bin, length).await {
        Ok(samples) => {
            let base_at = length / 6;
            let base = samples.iter().find(|s| s.at >= base_at).or(samples.first());
            let last = samples.last();
            let step = (samples.len() / 12).max(1);
            for (i, s) in samples.iter().enumerate() {
                if i % step == 0 || i + 1 == samples.len() {
                    section.row(vec![
                        s.at.as_secs().to_string(),
                        mib(s.rss_kib * 1024),
                        s.fds.to_string(),
                        s.ok.to_string(),
                        s.failed.to_string(),
                    ]);
                }
            }
            if let (Some(b), Some(l)) = (base, last) {
                let allowed = (b.rss_kib as f64 * 1.15).max(b.rss_kib as f64 + 2048.0);
                section.target(
                    "memory flat (end within 15 % or 2 MB of the baseline)",
                    (l.rss_kib as f64) <= allowed,
                    format!("{} → {}", mib(b.rss_kib * 1024), mib(l.rss_kib * 1024)),
                );
                section.target(
                    "file descriptors flat (within 4)",
                    l.fds <= b.fds + 4,
                    format!("{} → {}", b.fds, l.fds),
                );
                if (l.rss_kib as f64) > allowed || l.fds > b.fds + 4 {
                    section.problem("memory or file descriptors grew");
                }
                if l.failed > 0 {
                    section.problem(format!("{} calls failed", l.failed));
                }
                if l.ok <= b.ok {
                    section.problem("no calls succeeded after the baseline");
                }
            } else {
                section.problem("no samples");
            }
        }
        Err(e) => section.problem(e),
    }
    section
}

async fn soak(provider_bin: &Path, consumer_bin: &Path, length: Duration) -> Result<Vec<Sample>, String> {
    let api = FakeApiServer::start().await.map_err(|e| format!("API server: {e}"))?;
    let mut providers = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=4 {
        let (helper, port) = start_provider(Command::new(provider_bin), &format!("p{i}"), &[]).await?;
        providers.push(helper);
        ports.push(port);
    }
    let slice = |i: usize, pod: PodEndpoint| {
        api.apply_slice(
            NS,
            endpoint_slice(&format!("{SERVICE}-p{i}"), SERVICE, "IPv4", &[("tri", ports[i - 1])], &[pod]),
        );
    };
    for i in 1..=3 {
        slice(i, PodEndpoint::ready("127.0.0.1", format!("p{i}")));
    }
    let admin: SocketAddr = ([127, 0, 0, 1], free_port().map_err(|e| e.to_string())?).into();
    let mut cmd = Command::new(consumer_bin);
    cmd.env("DISCOVERY_MODE", "api")
        .env("DISCOVERY_API_SERVER", api.url())
        .env("DISCOVERY_NAMESPACE", NS)
        .env("DISCOVERY_ALLOW_LOOPBACK", "true")
        .env("DISCOVERY_FAILOVER", "false")
        .env("DISCOVERY_DNS_SERVER", "127.0.0.1:9")
        .env("CONSUMER_VERSION", "1.0.0")
        .env("CONSUMER_RATE", "200")
        .env("CONSUMER_CONCURRENCY", "32")
        .env("CONSUMER_ADMIN_LISTEN", admin.to_string())
        .env("RUST_LOG", "warn");
    let consumer = Helper::spawn("consumer", cmd)?;
    wait_tcp(admin, Duration::from_secs(20)).await?;
    let pid = consumer.pid();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut step = 0usize;
    let mut next_sample = Duration::from_secs(5);
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match step % 4 {
            0 => slice(1, PodEndpoint::ready("127.0.0.1", "p1").not_ready()),
            1 => slice(1, PodEndpoint::ready("127.0.0.1", "p1")),
            2 => slice(4, PodEndpoint::ready("127.0.0.1", "p4")),
            _ => {
                api.delete_slice(NS, &format!("{SERVICE}-p4"));
            }
        }
        step += 1;
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(5);
            let rss = rss_kib(pid).ok_or("the consumer process is gone")?;
            let (ok, failed) = stats(admin).await.ok_or("the consumer's /stats does not answer")?;
            samples.push(Sample { at: started.elapsed(), rss_kib: rss, fds: fds(pid).unwrap_or(0), ok, failed });
        }
    }
    drop(consumer);
    drop(providers);
    Ok(samples)
}
