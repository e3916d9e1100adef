//! `consumer resolve`: the endpoint set of one Dubbo service as a table and, with `--watch`, every
//! change as it happens.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use discovery::{Discovery, Endpoint, EndpointKey, EndpointSet, Freshness};

/// Renders one snapshot as a table.
pub fn table(d: &Discovery, set: &EndpointSet) -> String {
    let state = match set.freshness {
        _ if set.pending => "pending".to_owned(),
        Freshness::Live => "live".to_owned(),
        Freshness::Stale { .. } => format!("stale for {:.1}s", set.stale_for(Instant::now()).as_secs_f64()),
    };
    let routable: BTreeSet<String> = set.routable().iter().map(|e| e.key().0).collect();
    let mut out = format!(
        "{} -> {} (mapping: {:?})\nversion {}  source {}  {}  {} endpoint(s), {} routable\n",
        d.service(),
        d.target(),
        d.rule(),
        set.version,
        set.source,
        state,
        set.endpoints.len(),
        routable.len()
    );
    out.push_str(&format!(
        "{:<40} {:<6} {:<28} {:<10} {:<8} {:<6} {:<8} {:<12} {}\n",
        "ADDRESS", "PORT", "NAME", "NODE", "ZONE", "READY", "SERVING", "TERMINATING", "ROUTABLE"
    ));
    for e in set.endpoints.iter() {
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<40} {:<6} {:<28} {:<10} {:<8} {:<6} {:<8} {:<12} {}\n",
            e.host.to_string(),
            e.port,
            dash(&e.name),
            dash(&e.node),
            dash(&e.zone),
            e.conditions.ready,
            e.conditions.serving,
            e.conditions.terminating,
            if routable.contains(&e.key().0) { "yes" } else { "no" }
        ));
    }
    out
}

/// The lines that say what changed between two snapshots (`+ addr:port name`, `- addr:port`,
/// `~ addr:port ready=false ...`).
pub fn diff_lines(old: &EndpointSet, new: &EndpointSet) -> Vec<String> {
    let mut lines = Vec::new();
    let before: HashMap<EndpointKey, &Endpoint> = old.endpoints.iter().map(|e| (e.key(), e)).collect();
    let after: HashSet<EndpointKey> = new.endpoints.iter().map(Endpoint::key).collect();
    for e in new.endpoints.iter() {
        match before.get(&e.key()) {
            None => lines.push(format!("+ {} {}", e.key(), e.name.as_deref().unwrap_or(""))),
            Some(o) if o.conditions != e.conditions => lines.push(format!(
                "~ {} ready={} serving={} terminating={}",
                e.key(),
                e.conditions.ready,
                e.conditions.serving,
                e.conditions.terminating
            )),
            Some(_) => {}
        }
    }
    for o in old.endpoints.iter() {
        let key = o.key();
        if !after.contains(&key) {
            lines.push(format!("- {key}"));
        }
    }
    if old.source != new.source {
        lines.push(format!("source {} -> {}", old.source, new.source));
    }
    lines
}

/// Prints the set once (after at most `timeout` for the first answer) and, with `watch`, every change
/// until `stop` completes.
pub async fn run(
    d: &Discovery,
    watch: bool,
    timeout: Duration,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let first = match d.ready(timeout).await {
        Some(s) => s,
        None => {
            writeln!(out, "no answer within {timeout:?}; what is known so far:")?;
            d.current()
        }
    };
    write!(out, "{}", table(d, &first))?;
    out.flush()?;
    if !watch {
        return Ok(());
    }
    let mut rx = d.watch();
    let mut last = first;
    let mut stop = std::pin::pin!(stop);
    loop {
        // Compare versions rather than trust the channel's "seen" mark: a change published between
        // the first table and this subscription must still be printed.
        let set = rx.borrow_and_update().clone();
        if set.version != last.version {
            writeln!(out, "--- change at version {}", set.version)?;
            for l in diff_lines(&last, &set) {
                writeln!(out, "{l}")?;
            }
            write!(out, "{}", table(d, &set))?;
            out.flush()?;
            last = set;
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            r = rx.changed() => if r.is_err() { return Ok(()) },
        }
    }
}
