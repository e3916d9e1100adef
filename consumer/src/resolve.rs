//! `consumer resolve`: the endpoint set of one Dubbo service as a table and, with `--watch`, every
//! change as it happens (printed from discovery's own deltas).

use std::io::Write;
use std::time::{Duration, Instant};

use discovery::{Delta, Endpoint, EndpointSet, ServiceWatch, Update};

fn dash(o: &Option<std::sync::Arc<str>>) -> &str {
    o.as_deref().unwrap_or("-")
}

/// Renders one snapshot as a table.
pub fn table(d: &ServiceWatch, set: &EndpointSet) -> String {
    let state = match set.stale_since() {
        _ if set.is_pending() => "pending".to_owned(),
        None => "live".to_owned(),
        Some(_) => format!("stale for {:.1}s", set.stale_for(Instant::now()).as_secs_f64()),
    };
    let mut out = format!(
        "{} -> {} (mapping: {:?})\nversion {}  source {}  {}  {} endpoint(s), {} routable\n",
        d.service(),
        d.target(),
        d.rule(),
        set.version(),
        set.source(),
        state,
        set.len(),
        set.routable_len()
    );
    if let Some(problem) = d.problem() {
        out.push_str(&format!("PROBLEM: {problem}\n"));
    }
    out.push_str(&format!(
        "{:<40} {:<6} {:<28} {:<10} {:<8} {:<6} {:<6} {:<8} {:<12} {}\n",
        "ADDRESS", "PORT", "NAME", "NODE", "ZONE", "WEIGHT", "READY", "SERVING", "TERMINATING", "ROUTABLE"
    ));
    for e in set.iter() {
        out.push_str(&format!(
            "{:<40} {:<6} {:<28} {:<10} {:<8} {:<6} {:<6} {:<8} {:<12} {}\n",
            e.addr.ip().to_string(),
            e.addr.port(),
            dash(&e.name),
            dash(&e.node),
            dash(&e.zone),
            e.weight,
            e.conditions.ready,
            e.conditions.serving,
            e.conditions.terminating,
            if set.is_routable(e) { "yes" } else { "no" }
        ));
    }
    out
}

fn conditions(e: &Endpoint) -> String {
    format!("ready={} serving={} terminating={}", e.conditions.ready, e.conditions.serving, e.conditions.terminating)
}

/// The lines that say what a delta changed (`+ addr:port name`, `- addr:port`,
/// `~ addr:port ready=false ...`).
pub fn delta_lines(delta: &Delta) -> Vec<String> {
    let mut lines: Vec<String> = delta.added.iter().map(|e| format!("+ {} {}", e.key(), dash(&e.name))).collect();
    lines.extend(delta.updated.iter().map(|e| format!("~ {} {}", e.key(), conditions(e))));
    lines.extend(delta.removed.iter().map(|k| format!("- {k}")));
    lines
}

/// Prints the set once (after at most `timeout` for the first answer) and, with `watch`, every change
/// until `stop` completes.
pub async fn run(
    d: &ServiceWatch,
    watch: bool,
    timeout: Duration,
    out: &mut (impl Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    if d.ready(timeout).await.is_none() {
        writeln!(out, "no answer within {timeout:?}; what is known so far:")?;
        write!(out, "{}", table(d, &d.current()))?;
        out.flush()?;
        if !watch {
            return Ok(());
        }
    }
    let mut updates = d.updates();
    let mut stop = std::pin::pin!(stop);
    let mut last_source = None;
    loop {
        let update = tokio::select! {
            () = &mut stop => return Ok(()),
            u = updates.next() => match u { Some(u) => u, None => return Ok(()) },
        };
        let set = update.set();
        if let Update::Apply { deltas, .. } = &update {
            writeln!(out, "--- change at version {}", set.version())?;
            for l in deltas.iter().flat_map(|d| delta_lines(d)) {
                writeln!(out, "{l}")?;
            }
            if last_source.is_some_and(|s| s != set.source()) {
                writeln!(
                    out,
                    "source {} -> {}",
                    last_source.map_or("", |s: discovery::Source| s.as_str()),
                    set.source()
                )?;
            }
        }
        last_source = Some(set.source());
        write!(out, "{}", table(d, set))?;
        out.flush()?;
        if !watch {
            return Ok(());
        }
    }
}
