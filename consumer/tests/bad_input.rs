//! Bad configuration over the real binaries: every variable given a wrong type, an out-of-range
//! value, an unknown mode, a bad template or mapping; each must end the process with exit code 2
//! and a message naming the variable and what it expects, never a panic. The table is printed so a
//! run shows what was tried.

use std::process::Command;

/// (variable, bad value, words the message must contain besides the variable's name)
const CONSUMER_CASES: &[(&str, &str, &str)] = &[
    ("CONSUMER_RATE", "lots", "calls per second"),
    ("CONSUMER_RATE", "-5", "calls per second"),
    ("CONSUMER_RATE", "NaN", "calls per second"),
    ("CONSUMER_CONCURRENCY", "0", "1 to 10000"),
    ("CONSUMER_CONCURRENCY", "99999999999999999999999", "1 to 10000"),
    ("CONSUMER_DEADLINE", "5", "unit"),
    ("CONSUMER_DEADLINE", "0s", ""),
    ("CONSUMER_RETRIES", "11", "0 to 10"),
    ("CONSUMER_RETRY_BUDGET", "-1", "ratio"),
    ("CONSUMER_CONNECT_TIMEOUT", "soon", ""),
    ("CONSUMER_REPORT_INTERVAL", "1 fortnight", ""),
    ("CONSUMER_ADMIN_LISTEN", "8081", "ip:port"),
    ("CONSUMER_ADMIN_CALLS", "maybe", "true or false"),
    ("CONSUMER_CLIENT", "grpc-go", "tonic or dubbo"),
    ("CONSUMER_INTERFACE", "not an interface", "fully qualified"),
    ("CONSUMER_LOG_FORMAT", "xml", ""),
    ("DISCOVERY_MODE", "zookeeper", "api"),
    ("DISCOVERY_NAMESPACE", "Not_A_Namespace", ""),
    ("DISCOVERY_PORT", "99999", ""),
    ("DISCOVERY_PORT", "-tri-", ""),
    ("DISCOVERY_FALLBACK_PORT", "0", ""),
    ("DISCOVERY_SERVICE_TEMPLATE", "{nope}", ""),
    ("DISCOVERY_SERVICE_TEMPLATE", "{simple", ""),
    ("DISCOVERY_MAPPINGS", "org.example.Foo", "="),
    ("DISCOVERY_MAPPINGS", "org.example.Foo=Bad_Service", ""),
    ("DISCOVERY_STATIC_ENDPOINTS", "host:port:extra", ""),
    ("DISCOVERY_STATIC_ENDPOINTS", "10.0.0.1:70000", ""),
    ("DISCOVERY_STATIC_ENDPOINTS", "no-such-host.invalid:50051", "resolves"),
    ("DISCOVERY_IP_FAMILY", "ipv5", ""),
    ("DISCOVERY_DNS_SERVER", "not-an-address", ""),
    ("DISCOVERY_CLUSTER_DOMAIN", "bad domain", ""),
    ("DISCOVERY_DNS_SRV", "sometimes", ""),
    ("DISCOVERY_DNS_TTL_FLOOR", "fast", ""),
    ("DISCOVERY_DNS_TTL_CEILING", "-1s", ""),
    ("DISCOVERY_DNS_TIMEOUT", "0s", ""),
    ("DISCOVERY_DNS_ATTEMPTS", "0", ""),
    ("DISCOVERY_API_SERVER", "not a url", ""),
    ("DISCOVERY_ANNOTATIONS", "perhaps", ""),
    ("DISCOVERY_RBAC_CHECK", "2", ""),
    ("DISCOVERY_WATCH_TIMEOUT", "forever", ""),
    ("DISCOVERY_WATCH_IDLE_TIMEOUT", "1", "unit"),
    ("DISCOVERY_REQUEST_TIMEOUT", "0s", ""),
    ("DISCOVERY_API_PROBE_INTERVAL", "often", ""),
    ("DISCOVERY_PAGE_SIZE", "0", ""),
    ("DISCOVERY_FAILOVER", "yes please", ""),
    ("DISCOVERY_MAX_STALE", "-3s", ""),
    ("DISCOVERY_COLD_START_TIMEOUT", "x", ""),
    ("DISCOVERY_RECOVERY_HOLD", "1h1", ""),
    ("DISCOVERY_ALLOW_LOOPBACK", "si", ""),
    ("DISCOVERY_BACKOFF_MIN", "0s", ""),
    ("DISCOVERY_BACKOFF_MAX", "tiny", ""),
    ("DISCOVERY_POD_IP", "10.0.0.300", ""),
    ("DISCOVERY_SUBSET_SIZE", "many", "0 to 1000000"),
    ("DISCOVERY_SLOW_START", "slowly", ""),
    ("DISCOVERY_OUTLIER_FAILURES", "-1", ""),
    ("DISCOVERY_OUTLIER_EJECTION", "1", "unit"),
    ("DISCOVERY_OUTLIER_MAX_EJECTION", "long", ""),
    ("DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT", "150", ""),
    ("DISCOVERY_ZONE_AWARE", "both", ""),
    ("DISCOVERY_ZONE_SPILL_IN_FLIGHT", "-2", ""),
];

const PROVIDER_CASES: &[(&str, &str, &str)] = &[
    ("PROVIDER_LISTEN", "50051", "ip:port"),
    ("PROVIDER_ADMIN_LISTEN", "localhost", "ip:port"),
    ("PROVIDER_DRAIN", "5", "unit"),
    ("PROVIDER_SHUTDOWN_TIMEOUT", "soon", ""),
    ("PROVIDER_LOG_FORMAT", "xml", "json"),
];

fn provider_bin() -> std::path::PathBuf {
    // Integration tests know only their own package's binaries; the provider's sits beside ours.
    let consumer = std::path::Path::new(env!("CARGO_BIN_EXE_consumer"));
    consumer.with_file_name(format!("provider{}", std::env::consts::EXE_SUFFIX))
}

fn check(bin: &std::path::Path, args: &[&str], cases: &[(&str, &str, &str)]) -> Vec<String> {
    let mut failures = Vec::new();
    eprintln!("{:<40} {:<28} exit  message", "variable", "value");
    for (var, value, words) in cases {
        let out = Command::new(bin)
            .args(args)
            .env(var, value)
            // Never reach out if a case is (wrongly) accepted: static mode, loopback admin port.
            .env("DISCOVERY_MODE", if *var == "DISCOVERY_MODE" { value } else { "static" })
            .env("DISCOVERY_STATIC_ENDPOINTS", if *var == "DISCOVERY_STATIC_ENDPOINTS" { value } else { "127.0.0.1:1" })
            .env("RUST_LOG", "off")
            .output()
            .expect("run the binary");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default().to_owned();
        eprintln!(
            "{var:<40} {:<28} {:<5} {first}",
            format!("{value:?}"),
            out.status.code().map_or("-".into(), |c| c.to_string())
        );
        if out.status.code() != Some(2) {
            failures.push(format!("{var}={value:?}: exit {:?}, expected 2 ({first})", out.status.code()));
        } else if !err.contains(var) || !err.contains(words) {
            failures.push(format!("{var}={value:?}: the message does not name the variable or say {words:?}: {err}"));
        }
        if err.contains("panicked") {
            failures.push(format!("{var}={value:?}: panicked: {err}"));
        }
    }
    failures
}

#[test]
fn every_bad_consumer_variable_exits_2_naming_it() {
    // `resolve` parses the whole configuration and would otherwise start following a service.
    let failures =
        check(std::path::Path::new(env!("CARGO_BIN_EXE_consumer")), &["resolve", "--timeout", "1s"], CONSUMER_CASES);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        CONSUMER_CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn every_bad_provider_variable_exits_2_naming_it() {
    let bin = provider_bin();
    if !bin.is_file() {
        // cargo test --workspace builds it; a lone `cargo test -p consumer` may not have.
        let built = Command::new(env!("CARGO")).args(["build", "-q", "-p", "provider"]).status().expect("cargo build");
        assert!(built.success(), "cannot build the provider binary");
    }
    let failures = check(&bin, &[], PROVIDER_CASES);
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        PROVIDER_CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_command_line_arguments_exit_2() {
    for args in [&["resolve", "--timeout", "never"][..], &["nonsense"], &["call", "--no-such-flag"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_consumer")).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
