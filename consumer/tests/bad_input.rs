//! Bad configuration over the real binaries: every variable given a wrong type, an out-of-range
//! value, an unknown mode, a bad template or mapping; each must end the process with exit code 2
//! and a message naming the variable and what it expects, never a panic. The table is printed so a
//! run shows what was tried.

use std::process::Command;

/// (binary, variable, bad value, words the message must contain besides the variable's name)
fn cases(binary: &str) -> Vec<(String, String, String)> {
    include_str!("bad_config.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c.len() == 4 && c[0] == binary).then(|| (c[1].to_owned(), c[2].to_owned(), c[3].to_owned()))
        })
        .collect()
}

fn provider_bin() -> std::path::PathBuf {
    // Integration tests know only their own package's binaries; the provider's sits beside ours.
    let consumer = std::path::Path::new(env!("CARGO_BIN_EXE_consumer"));
    consumer.with_file_name(format!("provider{}", std::env::consts::EXE_SUFFIX))
}

fn check(bin: &std::path::Path, args: &[&str], cases: &[(String, String, String)]) -> Vec<String> {
    let mut failures = Vec::new();
    eprintln!("{:<40} {:<28} exit  message", "variable", "value");
    for (var, value, words) in cases {
        let out = Command::new(bin)
            .args(args)
            .env(var, value)
            // Never reach out if a case is (wrongly) accepted: static mode, loopback admin port.
            .env("DISCOVERY_MODE", if var == "DISCOVERY_MODE" { value.as_str() } else { "static" })
            .env(
                "DISCOVERY_STATIC_ENDPOINTS",
                if var == "DISCOVERY_STATIC_ENDPOINTS" { value.as_str() } else { "127.0.0.1:1" },
            )
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
        } else if !err.contains(var.as_str()) || !err.contains(words.as_str()) {
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
    let cases = cases("consumer");
    assert!(cases.len() > 50, "the table lost its rows");
    let failures = check(std::path::Path::new(env!("CARGO_BIN_EXE_consumer")), &["resolve", "--timeout", "1s"], &cases);
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_bad_provider_variable_exits_2_naming_it() {
    let bin = provider_bin();
    if !bin.is_file() {
        // cargo test --workspace builds it; a lone `cargo test -p consumer` may not have.
        let built = Command::new(env!("CARGO")).args(["build", "-q", "-p", "provider"]).status().expect("cargo build");
        assert!(built.success(), "cannot build the provider binary");
    }
    let cases = cases("provider");
    assert!(!cases.is_empty(), "the table lost its rows");
    let failures = check(&bin, &[], &cases);
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
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
