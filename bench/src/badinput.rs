//! Bad configuration on the real binaries, from the table the consumer's tests also run
//! (`consumer/tests/bad_config.tsv`): every case must exit 2 with a message naming the variable.

use std::path::Path;
use std::process::Command;

use crate::report::Section;

const TABLE: &str = include_str!("../../consumer/tests/bad_config.tsv");

pub fn run(provider_bin: &Path, consumer_bin: &Path) -> Section {
    let mut section = Section::new(
        "Bad configuration",
        "Each variable given a wrong type, an out-of-range value, an unknown mode, a bad template or mapping, an \
         unresolvable name, on the release binaries (the consumer through `consumer resolve`, which reads the whole \
         configuration). Expected: exit code 2 and a message naming the variable; never a panic.",
        &["binary", "variable", "value", "exit", "message (first line)"],
    );
    for line in TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let [binary, var, value, words] = c.as_slice() else {
            section.problem(format!("bad table line {line:?}"));
            continue;
        };
        let (bin, args): (&Path, &[&str]) = match *binary {
            "consumer" => (consumer_bin, &["resolve", "--timeout", "1s"]),
            _ => (provider_bin, &[]),
        };
        let out = Command::new(bin)
            .args(args)
            .env(var, value)
            .env("DISCOVERY_MODE", if *var == "DISCOVERY_MODE" { value } else { "static" })
            .env("DISCOVERY_STATIC_ENDPOINTS", if *var == "DISCOVERY_STATIC_ENDPOINTS" { value } else { "127.0.0.1:1" })
            .env("RUST_LOG", "off")
            .output();
        let Ok(out) = out else {
            section.problem(format!("cannot run {}", bin.display()));
            break;
        };
        let err = String::from_utf8_lossy(&out.stderr);
        let first: String = err.lines().next().unwrap_or_default().chars().take(140).collect();
        let code = out.status.code();
        section.row(vec![
            (*binary).into(),
            format!("`{var}`"),
            format!("`{value}`"),
            code.map_or("signal".into(), |c| c.to_string()),
            first.clone(),
        ]);
        if code != Some(2) || !err.contains(var) || !err.contains(words) || err.contains("panicked") {
            section.problem(format!("{var}={value:?}: exit {code:?}, message {first:?}"));
        }
    }
    section
}
