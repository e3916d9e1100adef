//! `consumer`: steady demo traffic with an admin port (default), `resolve` to inspect discovery, or
//! `call` for one call. Bad configuration exits with code 2.

use std::time::Duration;

use clap::{Parser, Subcommand};
use consumer::{ConsumerConfig, resolve};
use discovery::ServiceRef;
use provider::{server::shutdown_signal, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "consumer",
    version,
    about = "Dubbo Triple consumer with Kubernetes discovery (DISCOVERY_*, CONSUMER_* variables)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Steady traffic at CONSUMER_RATE with the admin port (the default).
    Run,
    /// Print the endpoint set of a Dubbo service as a table; with --watch, every change.
    Resolve {
        /// Dubbo interface (default: CONSUMER_INTERFACE).
        #[arg(long)]
        interface: Option<String>,
        /// Dubbo version (default: CONSUMER_VERSION).
        #[arg(long)]
        version: Option<String>,
        /// Dubbo group (default: CONSUMER_GROUP).
        #[arg(long)]
        group: Option<String>,
        /// Keep printing changes until interrupted.
        #[arg(long)]
        watch: bool,
        /// How long to wait for the first answer.
        #[arg(long, default_value = "10s", value_parser = discovery::config::vars::parse_duration)]
        timeout: Duration,
    },
    /// Make one call on the configured stack (CONSUMER_CLIENT) and print the reply.
    Call {
        /// Name to greet.
        #[arg(long, default_value = "dubbo-k8s")]
        name: String,
    },
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("consumer: {msg}");
    std::process::exit(code)
}

fn fail_with(e: consumer::Error) -> ! {
    if let Some(role) = e.role() {
        eprintln!("consumer: {e}\n{role}");
        std::process::exit(e.exit_code())
    }
    fail(e.exit_code(), e)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let cfg = ConsumerConfig::from_env().unwrap_or_else(|e| fail(2, e));
    telemetry::init(cfg.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            if let Err(e) = consumer::run(cfg, shutdown_signal()).await {
                fail_with(e);
            }
        }
        Command::Resolve { interface, version, group, watch, timeout } => {
            let service = ServiceRef::new(interface.unwrap_or(cfg.service.interface))
                .with_version(version.unwrap_or(cfg.service.version))
                .with_group(group.unwrap_or(cfg.service.group));
            let started = async {
                let hub = discovery::Discovery::new(&cfg.discovery, discovery::Metrics::default()).await?;
                hub.service(service).await
            };
            let d = started.await.unwrap_or_else(|e| fail_with(consumer::Error::from(e)));
            let mut out = std::io::stdout();
            if let Err(e) = resolve::run(&d, watch, timeout, &mut out, shutdown_signal()).await {
                fail(1, e);
            }
        }
        Command::Call { name } => {
            let mut registry = prometheus_client::registry::Registry::default();
            let stack = consumer::connect(&cfg, &mut registry).await.unwrap_or_else(|e| fail_with(e));
            match stack.say_hello(&name).await {
                Ok(r) => println!(
                    "{} (stack {:?}, endpoint {}, {} attempt(s), {:?})",
                    r.reply.message,
                    stack.kind(),
                    r.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                    r.attempts,
                    r.latency
                ),
                Err(e) => fail(1, format!("{:?}: {}", e.code(), e.message())),
            }
        }
    }
}
