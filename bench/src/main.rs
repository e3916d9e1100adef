//! dubbo-k8s benchmarks: how fast discovery follows the cluster, what it costs per call, how it
//! scales, how small it is; every comparison side by side in one run. Run through `scripts/bench`
//! (release build, pinned cores); `--short` is the CI mode that keeps the harness alive and the
//! numbers plausible.

mod badinput;
mod calls;
mod cluster;
mod dns;
mod faults;
mod fleet;
mod footprint;
mod plot;
mod propagation;
mod report;
mod scale;
mod soak;
mod tls;
mod tlsinput;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::cluster::Cluster;
use crate::report::Report;
use crate::util::Placement;

const SECTIONS: [&str; 7] = ["propagation", "dns", "calls", "tls", "scale", "fleet", "footprint"];

#[derive(Debug, Parser)]
#[command(
    name = "dubbo-k8s-bench",
    version,
    about = "dubbo-k8s benchmarks (see BENCHMARKS.md; run through scripts/bench)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    /// CI mode: few samples, about two minutes; same tables, plausibility still checked.
    #[arg(long)]
    short: bool,
    /// Where the Markdown report goes (default: BENCHMARKS.md in the workspace, or
    /// target/bench/BENCHMARKS-short.md with --short).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure API propagation against the current context of this kubeconfig (it creates and
    /// deletes its own namespace and writes EndpointSlices there) instead of the local test server.
    #[arg(long, env = "BENCH_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Comma-separated sections to run (default: all): propagation, dns, calls, scale, fleet, footprint.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run helper processes (API server, providers) with `taskset -c <CPUS>`.
    #[arg(long)]
    helper_cpus: Option<String>,
    /// Where the provider and consumer binaries are (default: beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The fault suite (see FAULTS.md): faults under load, a soak, bad configuration.
    Faults {
        /// CI mode: shorter faults, a 1-minute soak.
        #[arg(long)]
        short: bool,
        /// Where the Markdown report goes (default: FAULTS.md in the workspace, or
        /// target/faults/FAULTS-short.md with --short).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Soak length in seconds (default 600, or 60 with --short; 0 skips it).
        #[arg(long)]
        soak: Option<u64>,
        /// Comma-separated parts to run (default: all): faults, soak, config, tls.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where the provider and consumer binaries are (default: beside this program).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// (internal) The in-process test API server, until killed.
    #[command(hide = true)]
    ServeApi {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// (internal) One consumer of the fleet benchmark, driven over stdin/stdout.
    #[command(hide = true)]
    FleetMember {
        /// The API server's URL; without it, the kubeconfig of `KUBECONFIG`.
        #[arg(long)]
        api: Option<String>,
        /// `discovery` (the hub and balanced clients) or `bare` (a kube_runtime watcher per Service).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        services: usize,
        #[arg(long)]
        endpoints: usize,
    },
    /// (internal) The bare kube watch beside a scale point, driven over stdin/stdout.
    #[command(hide = true)]
    ScaleBare {
        /// The API server's URL; without it, the kubeconfig of `KUBECONFIG`.
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        namespace: String,
    },
    /// (internal) One size of the scale benchmark, driven over stdin/stdout.
    #[command(hide = true)]
    ScalePoint {
        /// The API server's URL; without it, the kubeconfig of `KUBECONFIG`.
        #[arg(long)]
        api: Option<String>,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        endpoints: usize,
        #[arg(long)]
        picks: usize,
    },
}

struct Settings {
    propagation: usize,
    dns: Vec<(u32, usize)>,
    calls: calls::Plan,
    scale: Vec<usize>,
    scale_changes: usize,
    fleet: fleet::Plan,
    picks: usize,
    starts: usize,
    /// New connections timed one after another, plaintext and TLS.
    handshakes: usize,
}

impl Settings {
    fn full() -> Self {
        Settings {
            propagation: 400,
            dns: vec![(1, 20), (2, 10), (5, 6)],
            calls: calls::Plan {
                rounds: 3,
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(4),
                in_flight: vec![1, 64],
            },
            scale: vec![1_000, 10_000, 100_000],
            scale_changes: 200,
            fleet: fleet::Plan { sizes: vec![10, 50, 200], services: 10, endpoints: 1_000, changes: 20 },
            picks: 200_000,
            starts: 10,
            handshakes: 500,
        }
    }

    fn short() -> Self {
        Settings {
            propagation: 60,
            dns: vec![(1, 4)],
            calls: calls::Plan {
                rounds: 1,
                warmup: Duration::from_millis(300),
                measure: Duration::from_secs(1),
                in_flight: vec![1, 64],
            },
            scale: vec![1_000, 10_000],
            scale_changes: 40,
            fleet: fleet::Plan { sizes: vec![5], services: 10, endpoints: 1_000, changes: 5 },
            picks: 20_000,
            starts: 3,
            handshakes: 50,
        }
    }
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("dubbo-k8s-bench: {msg}");
    std::process::exit(code)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Logs of discovery and the client, when asked for (RUST_LOG=discovery=debug).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    match cli.command {
        Some(Internal::ServeApi { listen }) => {
            if let Err(e) = cluster::serve(listen).await {
                fail(1, e)
            }
            return;
        }
        Some(Internal::Faults { short, out, soak, only, bin_dir }) => {
            run_faults(short, out, soak, only, bin_dir).await;
            return;
        }
        Some(Internal::FleetMember { api, kind, namespace, services, endpoints }) => {
            if let Err(e) = fleet::member(api, &kind, namespace, services, endpoints).await {
                fail(1, format!("fleet member: {e}"))
            }
            return;
        }
        Some(Internal::ScaleBare { api, namespace }) => {
            if let Err(e) = scale::bare_child(api, namespace).await {
                fail(1, format!("bare watch child: {e}"))
            }
            return;
        }
        Some(Internal::ScalePoint { api, namespace, endpoints, picks }) => {
            if let Err(e) = scale::child(api, namespace, endpoints, picks).await {
                fail(1, format!("scale child: {e}"))
            }
            return;
        }
        None => {}
    }
    for s in &cli.only {
        if !SECTIONS.contains(&s.as_str()) {
            fail(2, format!("--only {s:?}: sections are {}", SECTIONS.join(", ")));
        }
    }
    let wanted = |s: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == s);
    let settings = if cli.short { Settings::short() } else { Settings::full() };
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(1, format!("cannot find this program: {e}")));
    let bin_dir = cli.bin_dir.clone().or_else(|| exe.parent().map(PathBuf::from)).unwrap_or_default();
    let root = util::workspace_root(&bin_dir);
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.short { root.join("target/bench/BENCHMARKS-short.md") } else { root.join("BENCHMARKS.md") }
    });
    let placement = Placement { helper_cpus: cli.helper_cpus.clone() };
    let (provider_bin, consumer_bin) = (bin_dir.join("provider"), bin_dir.join("consumer"));
    for b in [&provider_bin, &consumer_bin] {
        if (wanted("calls") || wanted("tls") || wanted("footprint")) && !b.is_file() {
            fail(
                2,
                format!(
                    "{} is missing: build it first (cargo build --release -p provider -p consumer) or give --bin-dir",
                    b.display()
                ),
            );
        }
    }
    let started = Instant::now();
    let local = Cluster::local(&placement).await.unwrap_or_else(|e| fail(1, format!("local API server: {e}")));
    // The sections about the API server (propagation, scale) run against a real one: the kubeconfig's,
    // else one started from KUBEBUILDER_ASSETS, else (saying so) the in-process server.
    let remote = match &cli.kubeconfig {
        Some(path) => Some(Cluster::from_kubeconfig(path).await.unwrap_or_else(|e| fail(2, e))),
        None if wanted("propagation") || wanted("scale") => match testkit::envtest::assets() {
            Ok(_) => {
                Some(Cluster::envtest(&placement).await.unwrap_or_else(|e| fail(1, format!("envtest API server: {e}"))))
            }
            Err(why) => {
                eprintln!("no real API server: {why}; the API sections use the in-process test server");
                None
            }
        },
        None => None,
    };
    let real = remote.as_ref().unwrap_or(&local);

    let mode = if cli.short { "short (CI: few samples)" } else { "full" };
    let mut report = Report::new(&root, vec![("placement".into(), placement.describe()), ("mode".into(), mode.into())]);
    if wanted("propagation") {
        eprintln!("propagation: {} changes…", settings.propagation);
        report.add(propagation::run(real, settings.propagation).await);
    }
    if wanted("dns") {
        eprintln!("dns: {:?} (TTL s, changes)…", settings.dns);
        report.add(dns::run(&settings.dns).await);
    }
    if wanted("calls") {
        eprintln!("calls: {} round(s) × 5 clients × {:?} in flight…", settings.calls.rounds, settings.calls.in_flight);
        report.add(calls::run(&local, &provider_bin, &placement, &settings.calls).await);
    }
    if wanted("tls") {
        eprintln!("tls: {} round(s) × 4 clients × {:?} in flight…", settings.calls.rounds, settings.calls.in_flight);
        report.add(tls::run(&provider_bin, &placement, &settings.calls, settings.handshakes).await);
    }
    if wanted("scale") {
        eprintln!("scale: {:?} endpoints…", settings.scale);
        let (mut section, points) = scale::run(real, &settings.scale, settings.scale_changes, settings.picks).await;
        for image in scale::plots(&points).iter().filter_map(|(name, p)| p.write(&out, name)) {
            section.note(image);
        }
        report.add(section);
    }
    if wanted("fleet") {
        eprintln!("fleet: {:?} consumers…", settings.fleet.sizes);
        let (mut section, points) = fleet::run(&placement, &settings.fleet).await;
        for image in fleet::plots(&points).iter().filter_map(|(name, p)| p.write(&out, name)) {
            section.note(image);
        }
        report.add(section);
    }
    if wanted("footprint") {
        eprintln!("footprint…");
        let bins = footprint::Bins { provider: &provider_bin, consumer: &consumer_bin };
        report.add(footprint::run(&local, &bins, settings.starts).await);
    }
    let intro = "Written by `scripts/bench` (the harness is `bench/`); every comparison in a table was measured side by \
                 side in the same run. Percentiles are nearest-rank over all samples.";
    if let Err(e) = report.finish(&out, "Benchmarks", intro, started) {
        fail(1, e);
    }
}

async fn run_faults(short: bool, out: Option<PathBuf>, soak: Option<u64>, only: Vec<String>, bin_dir: Option<PathBuf>) {
    const PARTS: [&str; 4] = ["faults", "soak", "config", "tls"];
    for o in &only {
        if !PARTS.contains(&o.as_str()) {
            fail(2, format!("--only {o:?}: parts are {}", PARTS.join(", ")));
        }
    }
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(1, format!("cannot find this program: {e}")));
    let bin_dir = bin_dir.or_else(|| exe.parent().map(PathBuf::from)).unwrap_or_default();
    let root = util::workspace_root(&bin_dir);
    let out =
        out.unwrap_or_else(|| if short { root.join("target/faults/FAULTS-short.md") } else { root.join("FAULTS.md") });
    let (provider_bin, consumer_bin) = (bin_dir.join("provider"), bin_dir.join("consumer"));
    for b in [&provider_bin, &consumer_bin] {
        if !b.is_file() {
            fail(
                2,
                format!(
                    "{} is missing: build it first (cargo build --release -p provider -p consumer) or give --bin-dir",
                    b.display()
                ),
            );
        }
    }
    let plan = faults::Plan {
        rate: 300.0,
        delay_ms: 30,
        freeze: Duration::from_secs(if short { 5 } else { 8 }),
        api_outage: Duration::from_secs(30),
        dns_fault: Duration::from_secs(if short { 4 } else { 8 }),
        misbehaviour: Duration::from_secs(if short { 5 } else { 8 }),
    };
    let soak_len = Duration::from_secs(soak.unwrap_or(if short { 60 } else { 600 }));
    let started = Instant::now();
    let mode = if short { "short (CI)" } else { "full" };
    let mut report = Report::new(&root, vec![("mode".into(), mode.into())]);
    if wanted("faults") {
        report.add(faults::run(&provider_bin, &plan).await);
    }
    if wanted("soak") && !soak_len.is_zero() {
        eprintln!("soak: {} s…", soak_len.as_secs());
        report.add(soak::run(&provider_bin, &consumer_bin, soak_len).await);
    }
    if wanted("config") {
        report.add(tokio::task::block_in_place(|| badinput::run(&provider_bin, &consumer_bin)));
    }
    if wanted("tls") {
        eprintln!("bad TLS input…");
        report.add(tlsinput::run(&provider_bin, &consumer_bin).await);
    }
    let intro = "Written by `scripts/faults` (the harness is `bench/src/faults.rs`, `soak.rs`, `badinput.rs`, `tlsinput.rs`). Bad API and \
                 DNS data, property tests of the slice table, deltas, mapping and configuration parsing, and the RBAC \
                 checks run as `cargo test` (see README.md, Faults and bad input).";
    if let Err(e) = report.finish(&out, "Faults and bad input", intro, started) {
        fail(1, e);
    }
}
