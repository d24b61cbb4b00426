//! A small hand-written SVG: throughput against N, memory against N, and the provider's request
//! rate per second.

use std::fmt::Write as _;

use crate::sections::Results;

struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    /// Horizontal reference lines (value, label).
    marks: Vec<(f64, String)>,
    /// Draw the series as bars (one per x) instead of lines.
    bars: bool,
}

const W: f64 = 420.0;
const H: f64 = 330.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 112.0;

fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 && (v / 1000.0).fract().abs() < 1e-9 {
        format!("{}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Chart {
    fn draw(&self, out: &mut String, ox: f64, oy: f64) {
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
        let y_max = all
            .map(|p| p.1)
            .chain(self.marks.iter().map(|m| m.0))
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.1;
        let x_min = 0.0;
        let y_step = nice_step(y_max, 5.0);
        let y_top = (y_max / y_step).ceil() * y_step;
        let x_top = if self.bars { x_max + 1.0 } else { x_max };
        let sx = |x: f64| ox + LEFT + (x - x_min) / (x_top - x_min) * pw;
        let sy = |y: f64| oy + TOP + ph - y / y_top * ph;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
            ox + LEFT,
            oy + 18.0,
            esc(&self.title)
        );
        // Axes and grid.
        let mut y = 0.0;
        while y <= y_top + 1e-9 {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                sx(x_min),
                sy(y),
                sx(x_top),
                sy(y),
                sx(x_min) - 4.0,
                sy(y) + 3.0,
                fmt_num(y)
            );
            y += y_step;
        }
        let x_step = nice_step(x_top - x_min, 5.0);
        let mut x = x_min;
        while x <= x_top + 1e-9 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                sx(x),
                sy(0.0) + 13.0,
                fmt_num(x)
            );
            x += x_step;
        }
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
            sx(x_min),
            sy(0.0),
            sx(x_top),
            sy(0.0),
            sx(x_min),
            sy(0.0),
            sx(x_min),
            sy(y_top)
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate({:.1},{:.1}) rotate(-90)\" font-size=\"11\" \
             text-anchor=\"middle\">{}</text>",
            ox + LEFT + pw / 2.0,
            sy(0.0) + 28.0,
            esc(&self.x_label),
            ox + 14.0,
            oy + TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for s in &self.series {
            if self.bars {
                let bw = (pw / (x_top - x_min)).max(1.0) * 0.8;
                for (x, y) in &s.points {
                    let _ = writeln!(
                        out,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                        sx(*x) + 1.0,
                        sy(*y),
                        bw,
                        sy(0.0) - sy(*y),
                        s.color
                    );
                }
                continue;
            }
            let path: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>",
                path.join(" "),
                s.color,
                if s.dashed {
                    " stroke-dasharray=\"6,4\""
                } else {
                    ""
                }
            );
            for (x, y) in &s.points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    sx(*x),
                    sy(*y),
                    s.color
                );
            }
        }
        for (value, label) in &self.marks {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c00\" \
                 stroke-dasharray=\"2,3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" \
                 fill=\"#c00\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\" \
                 text-anchor=\"start\">{}</text>",
                sx(x_min),
                sy(*value),
                sx(x_top),
                sy(*value),
                sx(x_min) + 4.0,
                sy(*value) - 3.0,
                esc(label)
            );
        }
        // Legend under the plot.
        for (i, s) in self.series.iter().enumerate() {
            let lx = ox + LEFT;
            let ly = sy(0.0) + 46.0 + i as f64 * 14.0;
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{}\" \
                 stroke-width=\"3\"{}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                lx,
                ly - 3.0,
                lx + 16.0,
                ly - 3.0,
                s.color,
                if s.dashed {
                    " stroke-dasharray=\"4,3\""
                } else {
                    ""
                },
                lx + 20.0,
                ly,
                esc(&s.name)
            );
        }
    }
}

pub fn render(r: &Results) -> String {
    let mut charts = Vec::new();
    let best = r.best();
    if !best.is_empty() {
        let pick = |f: &dyn Fn(&crate::sections::Best) -> f64| -> Vec<(f64, f64)> {
            best.iter().map(|b| (b.n as f64, f(b))).collect()
        };
        charts.push(Chart {
            title: "Lifecycle throughput (CIs/s)".into(),
            x_label: "N (CIs created, then deleted, at once)".into(),
            y_label: "CIs per second".into(),
            series: vec![
                Series {
                    name: "operator: create to Running".into(),
                    color: "#1f77b4",
                    dashed: false,
                    points: pick(&|b| b.operator_provision),
                },
                Series {
                    name: "API floor: create".into(),
                    color: "#1f77b4",
                    dashed: true,
                    points: pick(&|b| b.floor_provision),
                },
                Series {
                    name: "operator: delete to gone".into(),
                    color: "#ff7f0e",
                    dashed: false,
                    points: pick(&|b| b.operator_delete),
                },
                Series {
                    name: "API floor: delete".into(),
                    color: "#ff7f0e",
                    dashed: true,
                    points: pick(&|b| b.floor_delete),
                },
            ],
            marks: Vec::new(),
            bars: false,
        });
    }
    let mut memory_series = Vec::new();
    if let Some(m) = &r.memory {
        memory_series.push(Series {
            name: "VmHWM, N Running CIs at start".into(),
            color: "#2ca02c",
            dashed: false,
            points: m
                .points
                .iter()
                .filter(|p| p.label == "idle" || p.label == "default")
                .map(|p| (p.cis as f64, p.memory.hwm_mib()))
                .collect(),
        });
    }
    if !best.is_empty() {
        memory_series.push(Series {
            name: "VmHWM, lifecycle of N at once".into(),
            color: "#9467bd",
            dashed: false,
            points: best
                .iter()
                .map(|b| (b.n as f64, b.operator_hwm_mib))
                .collect(),
        });
    }
    if !memory_series.is_empty() {
        charts.push(Chart {
            title: "Operator memory (MiB)".into(),
            x_label: "N (CIs)".into(),
            y_label: "MiB".into(),
            series: memory_series,
            marks: vec![
                (15.0, "idle target 15".into()),
                (40.0, "5,000-CI target 40".into()),
            ],
            bars: false,
        });
    }
    if let Some(l) = &r.load {
        charts.push(Chart {
            title: format!(
                "AAP polls per second, {} jobs, poll {}s",
                l.jobs, l.poll_interval_secs
            ),
            x_label: "second of the window".into(),
            y_label: "requests per second".into(),
            series: vec![Series {
                name: "job polls (simulator request log)".into(),
                color: "#8c564b",
                dashed: false,
                points: l
                    .per_second
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v as f64))
                    .collect(),
            }],
            marks: vec![(l.expected_per_second, "N / poll interval".into())],
            bars: true,
        });
    }
    let width = W * charts.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{H:.0}\" \
         viewBox=\"0 0 {width:.0} {H:.0}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for (i, chart) in charts.iter().enumerate() {
        chart.draw(&mut out, i as f64 * W, 0.0);
    }
    out.push_str("</svg>\n");
    out
}
