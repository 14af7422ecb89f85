//! The SVG plot of a run, written by hand: fan-out latency percentiles over time (log scale),
//! open subscribers and server memory, deliveries per second.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// JSON report written by `apura-load run`.
    pub input: PathBuf,
    /// SVG to write (default: the input with .svg).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn main(args: PlotArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let report: Value = serde_json::from_str(&text).context("parsing the report")?;
    let out = args
        .output
        .unwrap_or_else(|| args.input.with_extension("svg"));
    std::fs::write(&out, svg(&report)).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

const W: f64 = 960.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
    /// Plot against the right-hand axis.
    right: bool,
    dots: bool,
}

struct Axis {
    min: f64,
    max: f64,
    log: bool,
    label: String,
}

impl<'a> Series<'a> {
    /// A line against the left-hand axis, without dots.
    fn new(name: &'a str, color: &'a str, points: Vec<(f64, f64)>) -> Self {
        Series {
            name,
            color,
            points,
            right: false,
            dots: false,
        }
    }

    fn on_right(self) -> Self {
        Series {
            right: true,
            ..self
        }
    }

    fn dotted(self) -> Self {
        Series { dots: true, ..self }
    }
}

impl Axis {
    /// A linear axis from 0 to `max`.
    fn linear(max: f64, label: &str) -> Axis {
        Axis {
            min: 0.0,
            max,
            log: false,
            label: label.into(),
        }
    }

    fn norm(&self, v: f64) -> f64 {
        if self.log {
            let (a, b) = (self.min.max(1e-3).log10(), self.max.max(1e-3).log10());
            ((v.max(self.min).log10() - a) / (b - a).max(1e-9)).clamp(0.0, 1.0)
        } else {
            ((v - self.min) / (self.max - self.min).max(1e-9)).clamp(0.0, 1.0)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut v = 10f64.powf(self.min.max(1e-3).log10().floor());
            while v <= self.max * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let x = v * m;
                    if x >= self.min * 0.9999 && x <= self.max * 1.0001 {
                        t.push(x);
                    }
                }
                v *= 10.0;
            }
            t
        } else {
            let span = (self.max - self.min).max(1e-9);
            let raw = span / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| span / s <= 6.0)
                .unwrap_or(mag * 10.0);
            let mut t = Vec::new();
            let mut v = (self.min / step).ceil() * step;
            while v <= self.max + step * 1e-6 {
                t.push(v);
                v += step;
            }
            t
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    y0: f64,
    title: &str,
    x: &Axis,
    left: &Axis,
    right: Option<&Axis>,
    series: &[Series],
) {
    let (x0, w, h) = (LEFT, W - LEFT - RIGHT, PANEL_H);
    let _ = writeln!(
        out,
        r##"<text x="{x0}" y="{}" class="title">{}</text>"##,
        y0 - 10.0,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" class="frame"/>"##
    );
    let px = |v: f64| x0 + x.norm(v) * w;
    let py = |a: &Axis, v: f64| y0 + h - a.norm(v) * h;
    for t in x.ticks() {
        let xx = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{y0}" x2="{xx:.1}" y2="{:.1}" class="grid"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            y0 + h,
            y0 + h + 14.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" class="label" text-anchor="middle">{}</text>"##,
        x0 + w / 2.0,
        y0 + h + 30.0,
        esc(&x.label)
    );
    for t in left.ticks() {
        let yy = py(left, t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 5.0,
            yy + 4.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        out,
        r##"<text transform="translate({:.1},{:.1}) rotate(-90)" class="label" text-anchor="middle">{}</text>"##,
        x0 - 50.0,
        y0 + h / 2.0,
        esc(&left.label)
    );
    if let Some(r) = right {
        for t in r.ticks() {
            let yy = py(r, t);
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" class="tick">{}</text>"##,
                x0 + w + 5.0,
                yy + 4.0,
                fmt_num(t)
            );
        }
        let _ = writeln!(
            out,
            r##"<text transform="translate({:.1},{:.1}) rotate(90)" class="label" text-anchor="middle">{}</text>"##,
            x0 + w + 50.0,
            y0 + h / 2.0,
            esc(&r.label)
        );
    }
    let mut lx = x0 + 10.0;
    for s in series {
        let axis = if s.right { right.unwrap_or(left) } else { left };
        if !s.points.is_empty() {
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(axis, b)))
                .collect();
            if s.dots {
                for p in &pts {
                    let (a, b) = p.split_once(',').expect("formatted above");
                    let _ = writeln!(
                        out,
                        r##"<circle cx="{a}" cy="{b}" r="2" fill="{}"/>"##,
                        s.color
                    );
                }
            } else {
                let _ = writeln!(
                    out,
                    r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"##,
                    pts.join(" "),
                    s.color
                );
            }
        }
        let _ = writeln!(
            out,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"##,
            y0 + 6.0,
            s.color,
            lx + 14.0,
            y0 + 15.0,
            esc(s.name)
        );
        lx += 30.0 + s.name.len() as f64 * 6.5;
    }
}

fn col(timeline: &[Value], key: &str) -> Vec<(f64, f64)> {
    timeline
        .iter()
        .filter_map(|r| Some((r["t"].as_f64()?, r[key].as_f64()?)))
        .collect()
}

fn max_of(series: &[&Vec<(f64, f64)>]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(0.0, f64::max)
}

/// The plot of one report.
pub fn svg(r: &Value) -> String {
    let empty = Vec::new();
    let tl = r["timeline"].as_array().unwrap_or(&empty);
    let t_max = tl
        .iter()
        .filter_map(|x| x["t"].as_f64())
        .fold(1.0, f64::max);
    let x = Axis::linear(t_max, "seconds since start");
    let h = TOP + 3.0 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"##
    );
    out += r##"<style>.title{font-size:14px;font-weight:bold}.tick{font-size:11px;fill:#444}.label{font-size:12px;fill:#222}.frame{fill:none;stroke:#888}.grid{stroke:#e4e4e4}</style>
<rect width="100%" height="100%" fill="white"/>
"##;
    let c = &r["config"];
    let head = format!(
        "{} — {} SSE + {} WebSocket subscribers, {} workers, target {}",
        r["label"].as_str().unwrap_or(""),
        c["sse"],
        c["ws"],
        c["workers"],
        c["target"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="22" class="title">{}</text>"##,
        esc(&head)
    );

    // Panel 1: latency percentiles of the deliveries received in each second.
    let (p50, p90, p99, pmax) = (
        col(tl, "p50_ms"),
        col(tl, "p90_ms"),
        col(tl, "p99_ms"),
        col(tl, "max_ms"),
    );
    let lat_min = [&p50]
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(f64::INFINITY, f64::min);
    let lat_min = if lat_min.is_finite() {
        10f64.powf(lat_min.max(0.1).log10().floor())
    } else {
        1.0
    };
    let lat_max = 10f64.powf(max_of(&[&pmax]).max(lat_min * 10.0).log10().ceil());
    let ly = Axis {
        min: lat_min,
        max: lat_max,
        log: true,
        label: "ms (published_at → received)".into(),
    };
    let fan = &r["fanout"]["latency_ms_hold_cycles"];
    let title1 = format!(
        "Fan-out latency per second (hold cycles: p50 {} / p90 {} / p99 {} / max {} ms)",
        fan["p50"], fan["p90"], fan["p99"], fan["max"]
    );
    panel(
        &mut out,
        TOP,
        &title1,
        &x,
        &ly,
        None,
        &[
            Series::new("p50", "#1b9e77", p50).dotted(),
            Series::new("p90", "#7570b3", p90).dotted(),
            Series::new("p99", "#d95f02", p99).dotted(),
            Series::new("max", "#e7298a", pmax).dotted(),
        ],
    );

    // Panel 2: open subscribers, server memory.
    let open = col(tl, "open");
    let rss = col(tl, "server_rss_mib");
    let oy = Axis::linear(max_of(&[&open]).max(1.0) * 1.1, "open subscribers");
    let ry = Axis::linear(max_of(&[&rss]).max(1.0) * 1.1, "server RSS MiB");
    let s = &r["server"];
    let title2 = if s.is_null() {
        "Open subscribers".to_string()
    } else {
        format!(
            "Open subscribers and server RSS ({} KiB per connection at the end of the hold)",
            s["rss_kib_per_connection"]
        )
    };
    let y2 = TOP + PANEL_H + GAP;
    panel(
        &mut out,
        y2,
        &title2,
        &x,
        &oy,
        Some(&ry),
        &[
            Series::new("open", "#1f78b4", open),
            Series::new("RSS MiB", "#e31a1c", rss).on_right(),
        ],
    );

    // Panel 3: deliveries per second, server CPU.
    let del = col(tl, "deliveries");
    let cpu = col(tl, "server_cpu_percent");
    let ccpu = col(tl, "client_cpu_percent");
    let dy = Axis::linear(max_of(&[&del]).max(1.0) * 1.1, "deliveries / s");
    let cy = Axis::linear(
        max_of(&[&cpu, &ccpu]).max(100.0) * 1.1,
        "CPU % (100 = one core)",
    );
    let y3 = TOP + 2.0 * (PANEL_H + GAP);
    let title3 = format!(
        "Deliveries per second (hold mean {} /s), CPU of server and load generator (100 = one core)",
        r["deliveries"]["per_second_hold_mean"]
    );
    panel(
        &mut out,
        y3,
        &title3,
        &x,
        &dy,
        Some(&cy),
        &[
            Series::new("deliveries/s", "#33a02c", del),
            Series::new("server CPU %", "#ff7f00", cpu).on_right(),
            Series::new("load generator CPU %", "#a6761d", ccpu).on_right(),
        ],
    );
    out += "</svg>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_of_a_small_report() {
        let r = serde_json::json!({
            "label": "t", "config": {"sse": 1, "ws": 1, "workers": 1, "target": "127.0.0.1:1"},
            "fanout": {"latency_ms_hold_cycles": {"p50": 1.0}},
            "deliveries": {"per_second_hold_mean": 2.0},
            "server": null,
            "timeline": [
                {"t": 0.0, "open": 1, "deliveries": 0},
                {"t": 1.0, "open": 2, "deliveries": 2, "p50_ms": 3.0, "p90_ms": 4.0, "p99_ms": 5.0, "max_ms": 6.0},
            ],
        });
        let s = svg(&r);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("<circle"));
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn ticks_are_round() {
        let a = Axis::linear(19_000.0, "");
        assert_eq!(a.ticks()[1], 5_000.0);
        let l = Axis {
            min: 1.0,
            max: 1_000.0,
            log: true,
            label: String::new(),
        };
        assert!(l.ticks().contains(&100.0));
    }
}
