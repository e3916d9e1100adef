//! Results as tables: printed as they come, and written as one Markdown file at the end.

use std::fmt::Write as _;

/// One section of the report: a table and what to read from it.
#[derive(Debug, Default)]
pub struct Section {
    pub title: String,
    pub intro: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
    /// Plausibility failures: the run is broken, not slow (a sample never observed, a failed call,
    /// an incomplete set). Any of them makes the harness exit non-zero.
    pub problems: Vec<String>,
}

impl Section {
    pub fn new(title: &str, intro: &str, header: &[&str]) -> Self {
        Section {
            title: title.to_owned(),
            intro: intro.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            ..Section::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// A target line: `what` and whether this run met it.
    pub fn target(&mut self, what: &str, met: bool, measured: String) {
        self.notes.push(format!("target {what}: {} (measured {measured})", if met { "met" } else { "NOT met" }));
    }

    /// The section as aligned text, for the terminal.
    pub fn text(&self) -> String {
        let mut out = format!("\n== {} ==\n", self.title);
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([self.header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "{}", line(&self.header));
        for r in &self.rows {
            let _ = writeln!(out, "{}", line(r));
        }
        for n in &self.notes {
            let _ = writeln!(out, "  - {n}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "  ! {p}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        if !self.intro.is_empty() {
            let _ = writeln!(out, "{}\n", self.intro);
        }
        let cell = |c: &str| c.replace('|', "\\|");
        let _ = writeln!(out, "| {} |", self.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.header.len()));
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
        }
        out.push('\n');
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "- **problem**: {p}");
        }
        if !self.notes.is_empty() || !self.problems.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Report {
    pub preamble: Vec<(String, String)>,
    pub sections: Vec<Section>,
}

impl Report {
    /// A report whose preamble names the command (as `scripts/…` ran it), the commit and the machine.
    pub fn new(root: &std::path::Path, more: Vec<(String, String)>) -> Self {
        let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
        let mut preamble = vec![
            ("command".into(), format!("`{command}`")),
            ("commit".into(), crate::util::commit(root)),
            ("machine".into(), crate::util::machine()),
        ];
        preamble.extend(more);
        Report { preamble, sections: Vec::new() }
    }

    /// Adds a finished section and prints it.
    pub fn add(&mut self, section: Section) {
        println!("{}", section.text());
        self.sections.push(section);
    }

    /// Writes the Markdown to `out`; the problems found, if any.
    pub fn finish(
        &mut self,
        out: &std::path::Path,
        title: &str,
        intro: &str,
        started: std::time::Instant,
    ) -> Result<(), String> {
        self.preamble.push(("took".into(), format!("{:.0} s", started.elapsed().as_secs_f64())));
        if let Some(dir) = out.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(out, self.markdown(title, intro)).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        println!("\nreport written to {} ({:.0} s)", out.display(), started.elapsed().as_secs_f64());
        let problems = self.problems();
        for p in &problems {
            eprintln!("problem: {p}");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{} problem(s): the numbers above are not trustworthy", problems.len()))
        }
    }

    pub fn markdown(&self, title: &str, intro: &str) -> String {
        let mut out = format!("# {title}\n\n{intro}\n\n");
        for (k, v) in &self.preamble {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push('\n');
        for s in &self.sections {
            out.push_str(&s.markdown());
        }
        out
    }

    pub fn problems(&self) -> Vec<String> {
        self.sections.iter().flat_map(|s| s.problems.iter().map(move |p| format!("{}: {p}", s.title))).collect()
    }
}

/// `1.234` with the given number of decimals.
pub fn f(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_markdown() {
        let mut s = Section::new("Call path", "calls", &["client", "calls/s"]);
        s.row(vec!["plain | tonic".into(), "100".into()]);
        s.target("b ≥ 0.9 × a", true, "0.95".into());
        s.problem("3 calls failed");
        let t = s.text();
        assert!(
            t.contains("== Call path ==") && t.contains("plain | tonic  100") && t.contains("! 3 calls failed"),
            "{t}"
        );
        let m = s.markdown();
        assert!(
            m.contains("| plain \\| tonic | 100 |") && m.contains("target b ≥ 0.9 × a: met (measured 0.95)"),
            "{m}"
        );
        let r = Report { preamble: vec![("commit".into(), "abc".into())], sections: vec![s] };
        assert_eq!(r.problems(), vec!["Call path: 3 calls failed".to_owned()]);
        assert!(r.markdown("Benchmarks", "intro").starts_with("# Benchmarks\n\nintro\n\n- commit: abc\n"));
    }
}
