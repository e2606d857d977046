//! The comparison's results: rows of figures under stable keys, targets computed from
//! them, and three renderings — the terminal table, the JSON file, and
//! `docs/PERFORMANCE.md` with its SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::machine::Machine;
use crate::scale::MemoryFigures;
use crate::stats::{Latency, Rate};

/// Who a figure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A limit: the same pattern with nothing of ours in between.
    Limit,
    /// This workspace.
    Ours,
    /// Python oslo.messaging.
    Peer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Limit => "limit",
            Kind::Ours => "ours",
            Kind::Peer => "oslo.messaging",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Kind::Limit => "#9e9e9e",
            Kind::Ours => "#1f77b4",
            Kind::Peer => "#ff7f0e",
        }
    }
}

/// A measured value, or why there is none.
#[derive(Clone, Debug)]
pub enum Measure {
    /// Sequential round trips.
    Latency(Latency),
    /// Messages per second.
    Rate(Rate),
    /// Not measured.
    Skipped(String),
}

/// One figure.
#[derive(Clone, Debug)]
pub struct Row {
    /// Stable key, e.g. `rabbit.ours.thread-pool.call`.
    pub key: String,
    /// The section it belongs to (`memory`, `rabbit`, `nats`).
    pub section: &'static str,
    /// Who it measures.
    pub kind: Kind,
    /// What a reader sees.
    pub label: String,
    /// The value.
    pub measure: Measure,
    /// The key of the figure it is compared with, if any.
    pub reference: Option<String>,
}

/// `at most` or `at least`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The ratio must not exceed the threshold.
    AtMost,
    /// The ratio must reach the threshold.
    AtLeast,
}

/// A target from the issue, with the ratio measured.
#[derive(Clone, Debug)]
pub struct Target {
    /// Stable key.
    pub key: String,
    /// What it says.
    pub description: String,
    /// The measured ratio, if both sides were measured.
    pub ratio: Option<f64>,
    /// The bound.
    pub bound: Bound,
    /// The threshold.
    pub threshold: f64,
}

impl Target {
    /// Whether it was met (`None` when not measured).
    pub fn met(&self) -> Option<bool> {
        self.ratio.map(|r| match self.bound {
            Bound::AtMost => r <= self.threshold,
            Bound::AtLeast => r >= self.threshold,
        })
    }

    fn rule(&self) -> String {
        match self.bound {
            Bound::AtMost => format!("≤ {}", trim(self.threshold)),
            Bound::AtLeast => format!("≥ {}", trim(self.threshold)),
        }
    }

    fn verdict(&self) -> &'static str {
        match self.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        }
    }
}

/// A concurrency figure: `clients` callers at once.
#[derive(Clone, Debug)]
pub struct ScaleRow {
    /// `memory`, `rabbit` or `nats`.
    pub transport: String,
    /// The executor.
    pub executor: String,
    /// Concurrent callers.
    pub clients: usize,
    /// Calls per second, all callers together.
    pub rate: Rate,
    /// Every call's latency.
    pub latency: Latency,
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Settings (`quick`, `runs`, `payload_bytes`, counts).
    pub settings: BTreeMap<String, Value>,
    /// Versions of what was measured against (broker, oslo.messaging).
    pub versions: BTreeMap<String, String>,
    /// The figures.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Memory per executor.
    pub memory: Vec<MemoryFigures>,
    /// Concurrency.
    pub scale: Vec<ScaleRow>,
    /// The command line that produced it.
    pub command: String,
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A number with three significant figures and thousands separators.
pub fn human(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    if value >= 1000.0 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl Report {
    /// The row under `key`.
    pub fn row(&self, key: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.key == key)
    }

    /// The median round trip under `key`, µs.
    pub fn p50(&self, key: &str) -> Option<f64> {
        match self.row(key).map(|r| &r.measure) {
            Some(Measure::Latency(l)) => Some(l.p50_us),
            _ => None,
        }
    }

    /// The rate under `key`, messages/s.
    pub fn per_s(&self, key: &str) -> Option<f64> {
        match self.row(key).map(|r| &r.measure) {
            Some(Measure::Rate(r)) => Some(r.per_s),
            _ => None,
        }
    }

    /// `row / reference`: the round trip ratio (×, lower is better) or the rate ratio
    /// (fraction, higher is better).
    pub fn ratio(&self, key: &str, reference: &str) -> Option<f64> {
        match (self.p50(key), self.p50(reference)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => match (self.per_s(key), self.per_s(reference)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            },
        }
    }

    /// The JSON document: every figure and ratio under stable keys.
    pub fn to_json(&self) -> Value {
        let mut figures = serde_json::Map::new();
        for row in &self.rows {
            let mut value = match &row.measure {
                Measure::Latency(l) => json!({
                    "kind": "latency", "count": l.count, "mean_us": l.mean_us,
                    "p50_us": l.p50_us, "p90_us": l.p90_us, "p99_us": l.p99_us, "max_us": l.max_us,
                }),
                Measure::Rate(r) => json!({
                    "kind": "rate", "count": r.count, "seconds": r.seconds, "per_s": r.per_s,
                }),
                Measure::Skipped(reason) => json!({"kind": "skipped", "reason": reason}),
            };
            value["label"] = json!(row.label);
            value["who"] = json!(row.kind.name());
            if let Some(reference) = &row.reference {
                value["reference"] = json!(reference);
                value["ratio_to_reference"] = json!(self.ratio(&row.key, reference));
            }
            figures.insert(row.key.clone(), value);
        }
        let targets: serde_json::Map<String, Value> = self
            .targets
            .iter()
            .map(|t| {
                (
                    t.key.clone(),
                    json!({
                        "description": t.description,
                        "ratio": t.ratio,
                        "comparison": match t.bound { Bound::AtMost => "<=", Bound::AtLeast => ">=" },
                        "threshold": t.threshold,
                        "met": t.met(),
                    }),
                )
            })
            .collect();
        let memory: serde_json::Map<String, Value> = self
            .memory
            .iter()
            .map(|m| {
                (
                    m.executor.clone(),
                    serde_json::to_value(m).unwrap_or(Value::Null),
                )
            })
            .collect();
        let scale: serde_json::Map<String, Value> = self
            .scale
            .iter()
            .map(|s| {
                (
                    format!("{}.{}.clients_{}", s.transport, s.executor, s.clients),
                    json!({
                        "calls_per_s": s.rate.per_s,
                        "p50_us": s.latency.p50_us,
                        "p99_us": s.latency.p99_us,
                        "max_us": s.latency.max_us,
                    }),
                )
            })
            .collect();
        json!({
            "schema_version": 1,
            "command": self.command,
            "machine": self.machine,
            "settings": self.settings,
            "versions": self.versions,
            "figures": figures,
            "targets": targets,
            "memory": memory,
            "scale": scale,
        })
    }

    /// The terminal table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for section in sections(&self.rows) {
            let _ = writeln!(out, "\n== {} ==", section_title(section));
            let _ = writeln!(
                out,
                "{:<58} {:>11} {:>11} {:>13} {:>10}",
                "", "p50 µs", "p99 µs", "msgs/s", "vs ref"
            );
            for row in self.rows.iter().filter(|r| r.section == section) {
                let ratio = row
                    .reference
                    .as_deref()
                    .and_then(|r| self.ratio(&row.key, r))
                    .map(|r| format!("{}×", human(r)))
                    .unwrap_or_default();
                let line = match &row.measure {
                    Measure::Latency(l) => format!(
                        "{:<58} {:>11} {:>11} {:>13} {:>10}",
                        row.label,
                        human(l.p50_us),
                        human(l.p99_us),
                        human(1e6 / l.mean_us.max(1e-9)),
                        ratio
                    ),
                    Measure::Rate(r) => format!(
                        "{:<58} {:>11} {:>11} {:>13} {:>10}",
                        row.label,
                        "",
                        "",
                        human(r.per_s),
                        ratio
                    ),
                    Measure::Skipped(reason) => format!("{:<58} skipped: {reason}", row.label),
                };
                let _ = writeln!(out, "{line}");
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n== Targets ==");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "{:<72} {:>9} {:>7}  {}",
                    t.description,
                    t.ratio.map(human).unwrap_or_else(|| "–".to_owned()),
                    t.rule(),
                    t.verdict()
                );
            }
        }
        if !self.memory.is_empty() {
            let _ = writeln!(out, "\n== Memory (memory://) ==");
            for m in &self.memory {
                let _ = writeln!(
                    out,
                    "{:<12} idle server +{} KiB, idle CPU {:.2}%, {} in flight +{} KiB ({} B/message), peak {} KiB",
                    m.executor,
                    m.idle_server_kib,
                    m.idle_cpu_percent,
                    m.in_flight,
                    m.in_flight_kib,
                    human(m.bytes_per_message),
                    m.peak_kib
                );
            }
        }
        if !self.scale.is_empty() {
            let _ = writeln!(out, "\n== Concurrent callers ==");
            for s in &self.scale {
                let _ = writeln!(
                    out,
                    "{:<7} {:<12} {:>3} clients: {:>11} calls/s, p50 {} µs, p99 {} µs",
                    s.transport,
                    s.executor,
                    s.clients,
                    human(s.rate.per_s),
                    human(s.latency.p50_us),
                    human(s.latency.p99_us)
                );
            }
        }
        out
    }

    /// `docs/PERFORMANCE.md`: the tables, the machine, the chart, then `notes` (the
    /// hand-written analysis) verbatim.
    pub fn to_markdown(&self, chart: &str, notes: &str) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# Performance\n");
        let _ = writeln!(
            out,
            "<!-- Generated by `{}`; edit docs/performance-notes.md, not this file. -->\n",
            self.command
        );
        let _ = writeln!(
            out,
            "Measured side by side in one run on {} UTC: {} × {}, {} GiB, Linux {}, {} ({} build). \
             Every figure is the median of {} run(s); payloads are {} bytes unless stated. \
             Reproduce: `{}` (about four minutes; `--quick` for a one-minute run).\n",
            m.date,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            m.rustc,
            if m.optimized { "release" } else { "debug" },
            self.settings.get("runs").cloned().unwrap_or(json!(1)),
            self.settings
                .get("payload_bytes")
                .cloned()
                .unwrap_or(json!(100)),
            self.command
        );
        if !self.versions.is_empty() {
            let list: Vec<String> = self
                .versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "Versions: {}.\n", list.join(", "));
        }
        let _ = writeln!(
            out,
            "![call round trip and throughput, log scale]({chart})\n"
        );
        if !self.targets.is_empty() {
            let _ = writeln!(out, "## Targets\n");
            let _ = writeln!(out, "| target | measured ratio | rule | |");
            let _ = writeln!(out, "|---|---:|---|---|");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    t.description,
                    t.ratio.map(human).unwrap_or_else(|| "–".to_owned()),
                    t.rule(),
                    match t.met() {
                        Some(true) => "✅ met",
                        Some(false) => "❌ missed",
                        None => "not measured",
                    }
                );
            }
            let _ = writeln!(out);
        }
        for section in sections(&self.rows) {
            let _ = writeln!(out, "## {}\n", section_title(section));
            let latency: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.section == section && matches!(r.measure, Measure::Latency(_)))
                .collect();
            if !latency.is_empty() {
                let _ = writeln!(
                    out,
                    "| sequential round trip | p50 µs | p90 µs | p99 µs | max µs | calls/s | vs reference |"
                );
                let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
                for row in latency {
                    if let Measure::Latency(l) = &row.measure {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {} | {} | {} | {} |",
                            row.label,
                            human(l.p50_us),
                            human(l.p90_us),
                            human(l.p99_us),
                            human(l.max_us),
                            human(1e6 / l.mean_us.max(1e-9)),
                            self.versus(row)
                        );
                    }
                }
                let _ = writeln!(out);
            }
            let rates: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.section == section && matches!(r.measure, Measure::Rate(_)))
                .collect();
            if !rates.is_empty() {
                let _ = writeln!(
                    out,
                    "| one-way throughput | msgs/s | messages | vs reference |"
                );
                let _ = writeln!(out, "|---|---:|---:|---|");
                for row in rates {
                    if let Measure::Rate(r) = &row.measure {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {} |",
                            row.label,
                            human(r.per_s),
                            human(r.count as f64),
                            self.versus(row)
                        );
                    }
                }
                let _ = writeln!(out);
            }
            for row in self
                .rows
                .iter()
                .filter(|r| r.section == section && matches!(r.measure, Measure::Skipped(_)))
            {
                if let Measure::Skipped(reason) = &row.measure {
                    let _ = writeln!(out, "- {}: not measured ({reason})", row.label);
                }
            }
            let _ = writeln!(out);
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                out,
                "## Memory and idle CPU (memory://, one fresh process per executor)\n"
            );
            let _ = writeln!(
                out,
                "| executor | process before | idle server | idle CPU | in flight | RSS growth | per message | peak RSS |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for m in &self.memory {
                let _ = writeln!(
                    out,
                    "| {} | {} KiB | +{} KiB | {:.2} % | {} × {} B | +{} KiB | {} B | {} KiB |",
                    m.executor,
                    human(m.process_kib as f64),
                    human(m.idle_server_kib as f64),
                    m.idle_cpu_percent,
                    human(m.in_flight as f64),
                    m.payload_bytes,
                    human(m.in_flight_kib as f64),
                    human(m.bytes_per_message),
                    human(m.peak_kib as f64)
                );
            }
            let _ = writeln!(out);
        }
        if !self.scale.is_empty() {
            let _ = writeln!(
                out,
                "## Concurrent callers (one shared client, sequential calls per caller)\n"
            );
            let _ = writeln!(
                out,
                "| transport | executor | callers | calls/s | p50 µs | p99 µs | max µs |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
            for s in &self.scale {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.transport,
                    s.executor,
                    s.clients,
                    human(s.rate.per_s),
                    human(s.latency.p50_us),
                    human(s.latency.p99_us),
                    human(s.latency.max_us)
                );
            }
            let _ = writeln!(out);
        }
        out.push_str(notes.trim_end());
        out.push('\n');
        out
    }

    fn versus(&self, row: &Row) -> String {
        let Some(reference) = &row.reference else {
            return String::new();
        };
        let label = self
            .row(reference)
            .map_or(reference.as_str(), |r| r.label.as_str());
        match self.ratio(&row.key, reference) {
            Some(ratio) => format!("{}× {}", human(ratio), label),
            None => String::new(),
        }
    }

    /// The SVG chart: median call round trip and throughput per row, log scales.
    pub fn to_svg(&self) -> String {
        let latency: Vec<(&Row, f64)> = self
            .rows
            .iter()
            .filter_map(|r| match &r.measure {
                Measure::Latency(l) if l.p50_us > 0.0 => Some((r, l.p50_us)),
                _ => None,
            })
            .collect();
        let rates: Vec<(&Row, f64)> = self
            .rows
            .iter()
            .filter_map(|r| match &r.measure {
                Measure::Rate(rate) if rate.per_s > 0.0 => Some((r, rate.per_s)),
                _ => None,
            })
            .collect();
        let (width, label_width, bar_height, gap) = (980.0, 420.0, 16.0, 4.0);
        let mut svg = String::new();
        let mut y = 0.0;
        let mut body = String::new();
        for (title, bars, unit) in [
            (
                "Sequential round trip, median (µs, log scale): shorter is better",
                &latency,
                "µs",
            ),
            (
                "One-way throughput (messages/s, log scale): longer is better",
                &rates,
                "/s",
            ),
        ] {
            if bars.is_empty() {
                continue;
            }
            y += 28.0;
            let _ = writeln!(
                body,
                r#"<text x="8" y="{y}" font-size="15" font-weight="bold">{}</text>"#,
                escape(title)
            );
            y += 12.0;
            let low = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
            let high = bars.iter().map(|b| b.1).fold(0.0, f64::max);
            let (lo, hi) = (
                low.log10().floor(),
                high.log10().ceil().max(low.log10().floor() + 1.0),
            );
            let plot = width - label_width - 90.0;
            let x_of = |v: f64| label_width + (v.log10() - lo) / (hi - lo) * plot;
            let top = y;
            let bottom = y + bars.len() as f64 * (bar_height + gap);
            let mut decade = lo;
            while decade <= hi {
                let x = x_of(10f64.powf(decade));
                let _ = writeln!(
                    body,
                    r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#666">{}</text>"##,
                    bottom + 12.0,
                    human(10f64.powf(decade))
                );
                decade += 1.0;
            }
            for (row, value) in bars.iter() {
                let x_end = x_of(*value).max(label_width + 1.0);
                let _ = writeln!(
                    body,
                    r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text><rect x="{label_width}" y="{y:.1}" width="{:.1}" height="{bar_height}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{} {unit}</text>"##,
                    label_width - 6.0,
                    y + bar_height - 4.0,
                    escape(&chart_label(row)),
                    x_end - label_width,
                    row.kind.colour(),
                    x_end + 4.0,
                    y + bar_height - 4.0,
                    human(*value)
                );
                y += bar_height + gap;
            }
            y += 18.0;
        }
        y += 10.0;
        let mut legend_x = 8.0;
        for kind in [Kind::Limit, Kind::Ours, Kind::Peer] {
            let _ = writeln!(
                body,
                r#"<rect x="{legend_x}" y="{y}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                kind.colour(),
                legend_x + 16.0,
                y + 10.0,
                kind.name()
            );
            legend_x += 140.0;
        }
        y += 24.0;
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" font-family="sans-serif">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        svg.push_str(&body);
        svg.push_str("</svg>\n");
        svg
    }
}

fn sections(rows: &[Row]) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for row in rows {
        if !seen.contains(&row.section) {
            seen.push(row.section);
        }
    }
    seen
}

/// A bar's label: short section name and label, cut to fit the label column.
fn chart_label(row: &Row) -> String {
    let section = match row.section {
        "memory" => "memory",
        "rabbit" => "RabbitMQ",
        "nats" => "NATS",
        other => other,
    };
    let label = format!("{section} · {}", row.label);
    if label.chars().count() <= 64 {
        label
    } else {
        label.chars().take(63).chain(['…']).collect()
    }
}

fn section_title(section: &str) -> &str {
    match section {
        "memory" => "in-process (memory://)",
        "rabbit" => "RabbitMQ",
        "nats" => "NATS",
        other => other,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let latency = |p50: f64| Latency {
            count: 10,
            mean_us: p50,
            p50_us: p50,
            p90_us: p50,
            p99_us: p50,
            max_us: p50,
        };
        let rate = |per_s: f64| Rate {
            count: 100,
            seconds: 100.0 / per_s,
            per_s,
        };
        let row = |key: &str, kind, measure, reference: Option<&str>| Row {
            key: key.to_owned(),
            section: "memory",
            kind,
            label: key.to_owned(),
            measure,
            reference: reference.map(str::to_owned),
        };
        Report {
            machine: Machine::read(),
            settings: BTreeMap::new(),
            versions: BTreeMap::new(),
            rows: vec![
                row(
                    "limit.ping",
                    Kind::Limit,
                    Measure::Latency(latency(0.5)),
                    None,
                ),
                row(
                    "ours.call",
                    Kind::Ours,
                    Measure::Latency(latency(1.0)),
                    Some("limit.ping"),
                ),
                row("limit.chan", Kind::Limit, Measure::Rate(rate(1000.0)), None),
                row(
                    "ours.cast",
                    Kind::Ours,
                    Measure::Rate(rate(600.0)),
                    Some("limit.chan"),
                ),
                row(
                    "ours.gone",
                    Kind::Ours,
                    Measure::Skipped("no broker".into()),
                    None,
                ),
            ],
            targets: vec![Target {
                key: "t".into(),
                description: "call ≤ 3× ping".into(),
                ratio: Some(2.0),
                bound: Bound::AtMost,
                threshold: 3.0,
            }],
            memory: Vec::new(),
            scale: Vec::new(),
            command: "compare".into(),
        }
    }

    #[test]
    fn ratios_compare_like_with_like() {
        let report = report();
        assert_eq!(report.ratio("ours.call", "limit.ping"), Some(2.0));
        assert_eq!(report.ratio("ours.cast", "limit.chan"), Some(0.6));
        assert_eq!(report.ratio("ours.gone", "limit.chan"), None);
        assert_eq!(report.targets[0].met(), Some(true));
    }

    #[test]
    fn renderings_carry_every_figure() {
        let report = report();
        let json = report.to_json();
        assert_eq!(json["figures"]["ours.call"]["ratio_to_reference"], 2.0);
        assert_eq!(json["figures"]["ours.gone"]["kind"], "skipped");
        assert_eq!(json["targets"]["t"]["met"], true);
        let text = report.to_text();
        assert!(text.contains("skipped: no broker") && text.contains("met"));
        let markdown = report.to_markdown("performance.svg", "## Notes\n");
        assert!(markdown.contains("| ours.call | 1.00 |") && markdown.ends_with("## Notes\n"));
        let svg = report.to_svg();
        assert!(svg.starts_with("<svg") && svg.contains("ours.cast") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.0), "1,234,567");
        assert_eq!(human(123.4), "123");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(0.1234), "0.123");
    }
}
