//! Line plots as SVG files beside the report, so a reader can look rather than read: one or more
//! series of (x, y) points, linear or logarithmic axes, ticks labelled with the values.

use std::fmt::Write as _;
use std::path::Path;

/// One line of a plot.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.to_owned(), points }
    }
}

/// A plot: its title, axis labels and scales, and its series.
#[derive(Clone, Debug)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn of(values: impl Iterator<Item = f64>, log: bool) -> Option<Axis> {
        let v: Vec<f64> = values.filter(|v| v.is_finite() && (!log || *v > 0.0)).collect();
        let (mut lo, mut hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        if v.is_empty() {
            return None;
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
        } else {
            lo = lo.min(0.0);
            let step = nice_step(if hi <= lo { 1.0 } else { (hi - lo) / 5.0 });
            hi = ((hi / step).floor() + 1.0) * step;
        }
        Some(Axis { lo, hi, log })
    }

    /// Where `v` falls, 0 to 1.
    fn at(&self, v: f64) -> f64 {
        if self.log {
            (v.max(f64::MIN_POSITIVE).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10().round() as i32, self.hi.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let n = ((self.hi - self.lo) / step).round() as i32;
            (0..=n).map(|i| self.lo + step * f64::from(i)).collect()
        }
    }
}

/// The smallest of 1, 2, 5 times a power of ten at least `raw`: ticks a reader can add up.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(f64::MIN_POSITIVE).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Plot {
    /// The plot as an SVG document; `None` when no series has a point to draw.
    pub fn svg(&self) -> Option<String> {
        let xs = Axis::of(self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), self.log_x)?;
        let ys = Axis::of(self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), self.log_y)?;
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + xs.at(x) * pw;
        let py = |y: f64| TOP + (1.0 - ys.at(y)) * ph;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            W / 2.0,
            escape(&self.title)
        );
        for t in xs.ticks() {
            let x = px(t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
        }
        for t in ys.ticks() {
            let y = py(t);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = writeln!(out, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
        let scale = |log: bool| if log { " (log scale)" } else { "" };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}{}</text>"#,
            LEFT + pw / 2.0,
            H - 20.0,
            escape(&self.x_label),
            scale(self.log_x)
        );
        let _ = writeln!(
            out,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label),
            scale(self.log_y)
        );
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| {
                    x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0) && (!self.log_y || *y > 0.0)
                })
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
            }
            let ly = TOP + 14.0 + 16.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                LEFT + 10.0,
                LEFT + 30.0,
                LEFT + 36.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        Some(out)
    }

    /// Writes the plot to `dir/name` and returns the Markdown that shows it, relative to `report`'s
    /// directory; `None` (and nothing written) when there is nothing to draw or it cannot be written.
    pub fn write(&self, report: &Path, name: &str) -> Option<String> {
        let svg = self.svg()?;
        let base = report.parent()?;
        let stem = report.file_stem()?.to_string_lossy().to_lowercase();
        let dir = base.join(format!("{stem}-plots"));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join(name), svg).ok()?;
        Some(format!("![{}]({stem}-plots/{name})", escape(&self.title)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_point_on_log_axes_and_refuses_an_empty_plot() {
        let plot = Plot {
            title: "memory".into(),
            x_label: "endpoints".into(),
            y_label: "MB".into(),
            log_x: true,
            log_y: true,
            series: vec![
                Series::new("a", vec![(1e3, 10.0), (1e4, 20.0), (1e5, 80.0)]),
                Series::new("b", vec![(1e3, 5.0)]),
            ],
        };
        let svg = plot.svg().expect("svg");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains(">100k<") && svg.contains(">1k<"), "decade ticks labelled");
        let empty = Plot { series: vec![Series::new("a", vec![])], ..plot };
        assert!(empty.svg().is_none());
        let linear = Plot { log_y: false, series: vec![Series::new("c", vec![(1e3, 612.0), (1e4, 3060.0)])], ..empty };
        let svg = linear.svg().expect("svg");
        assert!(svg.contains(">1k<") && svg.contains(">3k<") && !svg.contains("612.35"), "round ticks: {svg}");
    }
}
