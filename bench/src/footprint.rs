//! Footprint: stripped binary sizes, image sizes, resident memory of the provider and consumer
//! processes, and the time from starting the consumer to its first successful call.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, namespace_name};
use crate::report::{Section, f};
use crate::util::{Helper, Summary, file_size, free_port, mib, rss_kib};

pub struct Bins<'a> {
    pub provider: &'a Path,
    pub consumer: &'a Path,
}

/// `docker image inspect` size of `image`, if Docker has it.
fn image_size(image: &str) -> Option<u64> {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", image])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The first layer of `image` (its base's), to tell which runtime base it was built on.
fn base_layer(image: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{index .RootFS.Layers 0}}", image])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

const LOCAL_RUNTIME: &str = "dubbo-k8s-base/cc-runtime:bookworm";
const DEFAULT_RUNTIME: &str = "gcr.io/distroless/cc-debian12:nonroot";

pub async fn run(cluster: &Cluster, bins: &Bins<'_>, starts: usize) -> Section {
    let mut section = Section::new(
        "Footprint",
        "Release binaries (stripped by the release profile); images as `scripts/build` makes them; resident \
         memory (VmRSS) of each process 3 s after it started, the consumer in API mode following one Service of \
         three providers; start to first call: wall time of `consumer call` (process start, discovery, connect, \
         one call, exit) with the endpoints already in place.",
        &["what", "value", "note"],
    );
    for (name, path) in [("provider binary", bins.provider), ("consumer binary", bins.consumer)] {
        match file_size(path) {
            Some(b) => section.row(vec![name.into(), mib(b), path.display().to_string()]),
            None => section.problem(format!("{name} not found at {}", path.display())),
        }
    }
    let local_layer = base_layer(LOCAL_RUNTIME);
    let default_layer = base_layer(DEFAULT_RUNTIME);
    for app in ["provider", "consumer"] {
        let image = format!("dubbo-k8s/{app}:dev");
        match image_size(&image) {
            Some(b) => {
                let layer = base_layer(&image);
                let base = if layer.is_some() && layer == local_layer {
                    format!(
                        "on the local runtime base {LOCAL_RUNTIME} ({})",
                        image_size(LOCAL_RUNTIME).map_or_else(|| "?".into(), mib)
                    )
                } else if layer.is_some() && layer == default_layer {
                    format!(
                        "on the default base {DEFAULT_RUNTIME} ({})",
                        image_size(DEFAULT_RUNTIME).map_or_else(|| "?".into(), mib)
                    )
                } else {
                    "base not identified".into()
                };
                section.row(vec![format!("{app} image"), mib(b), format!("{image}, {base}")]);
            }
            None => section.row(vec![
                format!("{app} image"),
                "not built".into(),
                format!("run scripts/build first ({image})"),
            ]),
        }
    }
    if image_size(DEFAULT_RUNTIME).is_none() {
        section.note(format!(
            "the documented default base {DEFAULT_RUNTIME} is not on this machine (no registry here); with it an image is \
             the binary plus that base's size, as `scripts/build` prints it"
        ));
    }
    if let Err(e) = processes(cluster, bins, starts, &mut section).await {
        section.problem(e);
    }
    section
}

async fn processes(cluster: &Cluster, bins: &Bins<'_>, starts: usize, section: &mut Section) -> Result<(), String> {
    let url = cluster.server_url.clone().ok_or("the footprint benchmark runs against the local API server")?;
    let ns = namespace_name("footprint");
    let (providers, ports) =
        cluster.three_providers(&ns, "greeter-service", "foot", || Command::new(bins.provider)).await?;
    let consumer_env = |cmd: &mut Command| {
        cmd.env("DISCOVERY_MODE", "api")
            .env("DISCOVERY_API_SERVER", &url)
            .env("DISCOVERY_NAMESPACE", &ns)
            .env("DISCOVERY_ALLOW_LOOPBACK", "true")
            .env("DISCOVERY_DNS_SERVER", "127.0.0.1:9")
            .env("CONSUMER_VERSION", "1.0.0")
            .env("RUST_LOG", "warn");
    };
    let mut consumers = Vec::new();
    for rate in ["0", "100"] {
        let mut cmd = Command::new(bins.consumer);
        consumer_env(&mut cmd);
        cmd.env("CONSUMER_RATE", rate)
            .env("CONSUMER_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?));
        consumers.push((rate, Helper::spawn("consumer", cmd)?));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = |h: &Helper| rss_kib(h.pid()).map_or_else(|| "n/a (not Linux?)".into(), |k| mib(k * 1024));
    let target = |h: &Helper| rss_kib(h.pid()).map(|k| k * 1024);
    section.row(vec!["provider RSS, idle".into(), rss(&providers[0]), "no calls yet".into()]);
    for (rate, h) in &consumers {
        let note = if *rate == "0" {
            "CONSUMER_RATE=0: discovery and the admin port, no calls".to_owned()
        } else {
            format!("CONSUMER_RATE={rate} calls/s")
        };
        section.row(vec![
            format!("consumer RSS, {}", if *rate == "0" { "idle" } else { "under traffic" }),
            rss(h),
            note,
        ]);
    }
    for (what, bytes) in [("provider", target(&providers[0])), ("consumer", target(&consumers[0].1))] {
        if let Some(b) = bytes {
            section.target(&format!("idle RSS of the {what} ≤ 15 MB"), b <= 15 * 1024 * 1024, mib(b));
        }
    }
    for (_, h) in &consumers {
        if rss_kib(h.pid()).is_none() && cfg!(target_os = "linux") {
            section.problem("a consumer process ended early (run it by hand with the same variables to see why)");
        }
    }
    drop(consumers);

    let mut modes: Vec<(&str, Vec<f64>)> = vec![("api", Vec::new()), ("static", Vec::new())];
    for _ in 0..starts {
        for (mode, times) in modes.iter_mut() {
            let mut cmd = Command::new(bins.consumer);
            consumer_env(&mut cmd);
            if *mode == "static" {
                cmd.env("DISCOVERY_MODE", "static")
                    .env("DISCOVERY_STATIC_ENDPOINTS", format!("127.0.0.1:{}", ports[0]));
            }
            cmd.arg("call").stdout(Stdio::null()).stderr(Stdio::piped());
            let t = Instant::now();
            let out = tokio::task::block_in_place(|| cmd.output()).map_err(|e| format!("consumer call: {e}"))?;
            let took = t.elapsed();
            if !out.status.success() {
                section.problem(format!(
                    "`consumer call` ({mode} mode) failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
            times.push(took.as_secs_f64() * 1e3);
        }
    }
    for (mode, times) in &modes {
        let s = Summary::of(times);
        section.row(vec![
            format!("start to first call, {mode} mode"),
            format!("{} ms", f(s.p50, 0)),
            format!("median of {} starts, max {} ms", s.n, f(s.max, 0)),
        ]);
    }
    cluster.delete_namespace(&ns).await;
    drop(providers);
    Ok(())
}
