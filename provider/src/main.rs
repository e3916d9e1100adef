//! `provider`: load config → init telemetry → serve until SIGTERM/SIGINT, drain, exit 0.

use provider::{ProviderConfig, server, telemetry};

#[tokio::main]
async fn main() {
    let cfg = match ProviderConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("provider: {e}");
            std::process::exit(2);
        }
    };
    telemetry::init(cfg.log_format);
    if let Err(e) = server::run(cfg, server::shutdown_signal()).await {
        tracing::error!(error = %e, "provider failed");
        eprintln!("provider: {e}");
        std::process::exit(e.exit_code());
    }
}
