//! `compare`: measures, side by side in one run, the limits (raw channels, raw lapin,
//! raw async-nats), the peer (Python oslo.messaging on the same RabbitMQ) and ours on
//! each executor; prints the table with ratios and the targets, writes every figure
//! as JSON (`--json FILE`), and rewrites `docs/PERFORMANCE.md` and
//! `docs/performance.svg`.
//!
//! Run: `cargo run --release -p benches --bin compare [-- --quick] [-- --json FILE]`.
//! Brokers default to the local RabbitMQ and NATS (or `MESSAGING_TEST_RABBIT_URL` /
//! `MESSAGING_TEST_NATS_URL`); one that does not answer is reported as skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use benches::ExecutorKind;
use benches::machine::Machine;
use benches::oslo::{self, OsloCounts};
use benches::ours::{self, NotifyBench, Payload, RpcBench};
use benches::raw::{channels, lapin, nats};
use benches::report::{Bound, Kind, Measure, Report, Row, ScaleRow, Target};
use benches::scale::{self, MemoryFigures};
use benches::stats::{Latency, Rate, median};
use clap::Parser;
use serde_json::json;

/// Compare this workspace with the limits and with Python oslo.messaging.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Args {
    /// A short run (about a minute): fewer messages, one run per figure.
    #[arg(long)]
    quick: bool,
    /// Also write every figure and ratio as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Runs per figure (the median is kept); default 3, 1 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Payload bytes for every message.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// RabbitMQ URL [default: $MESSAGING_TEST_RABBIT_URL or the local broker].
    #[arg(long)]
    rabbit_url: Option<String>,
    /// NATS URL [default: $MESSAGING_TEST_NATS_URL or the local server].
    #[arg(long)]
    nats_url: Option<String>,
    /// Skip RabbitMQ (and oslo.messaging, which needs it).
    #[arg(long)]
    no_rabbit: bool,
    /// Skip NATS.
    #[arg(long)]
    no_nats: bool,
    /// Skip Python oslo.messaging.
    #[arg(long)]
    no_oslo: bool,
    /// Skip the memory and concurrency measurements.
    #[arg(long)]
    no_scale: bool,
    /// Do not rewrite docs/PERFORMANCE.md and docs/performance.svg.
    #[arg(long)]
    no_docs: bool,
    /// Internal: measure one executor's memory in this fresh process, print JSON.
    #[arg(long, hide = true, value_name = "EXECUTOR")]
    probe_memory: Option<String>,
}

/// How many messages each figure moves.
#[derive(Clone, Copy, Debug)]
struct Counts {
    runs: usize,
    ping_pong: usize,
    channel: u64,
    memory_calls: usize,
    memory_casts: u64,
    memory_notifications: u64,
    broker_calls: usize,
    rabbit_casts: u64,
    nats_casts: u64,
    notifications: u64,
    oslo: OsloCounts,
    scale_seconds: f64,
}

impl Counts {
    fn new(args: &Args) -> Counts {
        let quick = args.quick;
        let pick = |full: u64, short: u64| if quick { short } else { full };
        Counts {
            runs: args.runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
            ping_pong: pick(200_000, 20_000) as usize,
            channel: pick(2_000_000, 200_000),
            memory_calls: pick(100_000, 10_000) as usize,
            memory_casts: pick(300_000, 30_000),
            memory_notifications: pick(100_000, 10_000),
            broker_calls: pick(3_000, 500) as usize,
            rabbit_casts: pick(40_000, 5_000),
            // Core NATS drops what a subscriber's buffer (65 536 messages) cannot
            // hold: a burst larger than that measures loss, not throughput.
            nats_casts: pick(50_000, 20_000),
            notifications: pick(20_000, 3_000),
            oslo: OsloCounts {
                calls: pick(2_000, 300) as usize,
                casts: pick(20_000, 2_000),
                notifications: pick(20_000, 2_000),
                payload: args.payload,
            },
            scale_seconds: if quick { 0.5 } else { 2.0 },
        }
    }
}

const LIMIT: Duration = Duration::from_secs(120);

/// Messages held in flight by the memory probe, of [`IN_FLIGHT_BYTES`] each.
const IN_FLIGHT: u64 = 10_000;
const IN_FLIGHT_BYTES: usize = 1024;

struct Run {
    counts: Counts,
    payload: usize,
    rows: Vec<Row>,
    rabbit_queues: Vec<String>,
}

impl Run {
    fn push(
        &mut self,
        key: impl Into<String>,
        section: &'static str,
        kind: Kind,
        label: impl Into<String>,
        measure: Measure,
        reference: Option<&str>,
    ) {
        let row = Row {
            key: key.into(),
            section,
            kind,
            label: label.into(),
            measure,
            reference: reference.map(str::to_owned),
        };
        eprintln!("  {:<60} {}", row.label, brief(&row.measure));
        self.rows.push(row);
    }

    /// The run with the median p50 of `counts.runs` runs; the first failure skips it.
    fn latency(&self, mut f: impl FnMut() -> Result<Latency, String>) -> Measure {
        match (0..self.counts.runs).map(|_| f()).collect() {
            Ok(runs) => median(runs, |l: &Latency| l.p50_us)
                .map_or_else(|| Measure::Skipped("no run".to_owned()), Measure::Latency),
            Err(e) => Measure::Skipped(e),
        }
    }

    /// The run with the median rate of `counts.runs` runs; the first failure skips it.
    fn rate(&self, mut f: impl FnMut() -> Result<Rate, String>) -> Measure {
        match (0..self.counts.runs).map(|_| f()).collect() {
            Ok(runs) => median(runs, |r: &Rate| r.per_s)
                .map_or_else(|| Measure::Skipped("no run".to_owned()), Measure::Rate),
            Err(e) => Measure::Skipped(e),
        }
    }

    /// Ours on every executor over `url`: call, cast, notify.
    fn ours(
        &mut self,
        section: &'static str,
        url: &str,
        counts: (usize, u64, u64),
        references: (&str, &str, &str),
    ) {
        let payload = Payload::of_size(self.payload);
        let (calls, casts, notifications) = counts;
        for kind in ExecutorKind::ALL {
            let name = kind.name();
            // The event loop's limit is a tokio hop, the others' a thread hop.
            let (call_ref, cast_ref) = if section == "memory" && kind == ExecutorKind::EventLoop {
                (
                    "memory.limit.tokio.ping_pong",
                    "memory.limit.tokio.throughput",
                )
            } else {
                (references.0, references.1)
            };
            match RpcBench::start(url, kind).map(Arc::new) {
                Ok(bench) => {
                    let warmup = (calls / 10).max(50);
                    let call = self.latency(|| {
                        bench
                            .timed_calls(warmup, &payload)
                            .and_then(|_| bench.timed_calls(calls, &payload))
                            .map(Latency::from_nanos)
                            .map_err(|e| e.to_string())
                    });
                    self.push(
                        format!("{section}.ours.{name}.call"),
                        section,
                        Kind::Ours,
                        if kind == ExecutorKind::EventLoop {
                            format!("ours, {name}: call (from a task on its runtime)")
                        } else {
                            format!("ours, {name}: call")
                        },
                        call,
                        Some(call_ref),
                    );
                    let cast = self.rate(|| {
                        ours::throughput(casts, bench.casts(), LIMIT, || Ok(bench.cast(&payload)?))
                            .map_err(|e| e.to_string())
                    });
                    self.push(
                        format!("{section}.ours.{name}.cast"),
                        section,
                        Kind::Ours,
                        format!("ours, {name}: cast → server"),
                        cast,
                        Some(cast_ref),
                    );
                    if section == "rabbit" {
                        self.rabbit_queues.extend(bench.queues());
                    }
                }
                Err(e) => {
                    for what in ["call", "cast"] {
                        self.push(
                            format!("{section}.ours.{name}.{what}"),
                            section,
                            Kind::Ours,
                            format!("ours, {name}: {what}"),
                            Measure::Skipped(e.to_string()),
                            None,
                        );
                    }
                }
            }
            let notify = match NotifyBench::start(url, kind) {
                Ok(bench) => {
                    if section == "rabbit" {
                        self.rabbit_queues.extend(bench.queues());
                    }
                    self.rate(|| {
                        ours::throughput(notifications, bench.received(), LIMIT, || {
                            bench.notify(&payload)
                        })
                        .map_err(|e| e.to_string())
                    })
                }
                Err(e) => Measure::Skipped(e.to_string()),
            };
            self.push(
                format!("{section}.ours.{name}.notify"),
                section,
                Kind::Ours,
                format!("ours, {name}: notify → listener"),
                notify,
                Some(references.2),
            );
        }
    }
}

fn brief(measure: &Measure) -> String {
    match measure {
        Measure::Latency(l) => format!("p50 {:.2} µs, p99 {:.2} µs", l.p50_us, l.p99_us),
        Measure::Rate(r) => format!("{:.0} msgs/s", r.per_s),
        Measure::Skipped(reason) => format!("skipped: {reason}"),
    }
}

fn memory_section(run: &mut Run) {
    eprintln!("in-process (memory://)");
    let c = run.counts;
    let size = run.payload;
    let warmup = c.ping_pong / 20;
    let m = run.latency(|| Ok(channels::crossbeam_ping_pong(warmup, c.ping_pong)));
    run.push(
        "memory.limit.crossbeam.ping_pong",
        "memory",
        Kind::Limit,
        "crossbeam bounded(1) ping-pong, 2 threads",
        m,
        None,
    );
    let m = run.latency(|| Ok(channels::std_ping_pong(warmup, c.ping_pong / 10)));
    run.push(
        "memory.limit.std.ping_pong",
        "memory",
        Kind::Limit,
        "std mpsc ping-pong, 2 threads",
        m,
        None,
    );
    let m = run.latency(|| Ok(channels::tokio_ping_pong(warmup, c.ping_pong)));
    run.push(
        "memory.limit.tokio.ping_pong",
        "memory",
        Kind::Limit,
        "tokio mpsc(1) ping-pong, 2 tasks, 2 workers",
        m,
        None,
    );
    let m = run.rate(|| Ok(channels::crossbeam_throughput(c.channel, size)));
    run.push(
        "memory.limit.crossbeam.throughput",
        "memory",
        Kind::Limit,
        format!("crossbeam bounded(1024), Vec<u8>({size})"),
        m,
        None,
    );
    let m = run.rate(|| Ok(channels::tokio_throughput(c.channel, size)));
    run.push(
        "memory.limit.tokio.throughput",
        "memory",
        Kind::Limit,
        format!("tokio mpsc(1024), Vec<u8>({size}), 2 workers"),
        m,
        None,
    );
    run.ours(
        "memory",
        "memory:///compare",
        (c.memory_calls, c.memory_casts, c.memory_notifications),
        (
            "memory.limit.crossbeam.ping_pong",
            "memory.limit.crossbeam.throughput",
            "memory.limit.crossbeam.throughput",
        ),
    );
}

fn rabbit_section(
    run: &mut Run,
    url: &str,
    with_oslo: bool,
    versions: &mut BTreeMap<String, String>,
) {
    eprintln!("RabbitMQ ({})", ours::redact(url));
    let skip = |run: &mut Run, reason: String| {
        run.push(
            "rabbit.limit.lapin.request_reply",
            "rabbit",
            Kind::Limit,
            "raw lapin",
            Measure::Skipped(reason),
            None,
        );
    };
    let uri = match lapin::amqp_uri(url) {
        Ok(uri) => uri,
        Err(e) => return skip(run, e.to_string()),
    };
    if !lapin::reachable(&uri, Duration::from_secs(5)) {
        return skip(run, format!("no RabbitMQ answers at {}", ours::redact(url)));
    }
    if let Some(version) = package_version("rabbitmq-server") {
        versions.insert("RabbitMQ".to_owned(), version);
    }
    let c = run.counts;
    let size = run.payload;
    // The same acks, prefetch and confirm window as our transport's defaults.
    let m = run.rate(|| {
        lapin::publish_consume(&uri, c.rabbit_casts, size, 64, 1024).map_err(|e| e.to_string())
    });
    run.push(
        "rabbit.limit.lapin.publish_consume",
        "rabbit",
        Kind::Limit,
        "raw lapin publish → consume (confirms ≤1024 in flight, ack each, prefetch 64)",
        m,
        None,
    );
    let m = run.latency(|| {
        lapin::request_reply(&uri, 200, c.broker_calls, size).map_err(|e| e.to_string())
    });
    run.push(
        "rabbit.limit.lapin.request_reply",
        "rabbit",
        Kind::Limit,
        "raw lapin request → reply via a named reply queue",
        m,
        None,
    );
    run.ours(
        "rabbit",
        url,
        (c.broker_calls, c.rabbit_casts, c.notifications),
        (
            "rabbit.limit.lapin.request_reply",
            "rabbit.limit.lapin.publish_consume",
            "rabbit.limit.lapin.publish_consume",
        ),
    );
    if with_oslo {
        let figures = oslo::python().and_then(|python| oslo::run(&python, url, c.oslo));
        match figures {
            Ok(f) => {
                versions.insert("oslo.messaging".to_owned(), f.version.clone());
                run.push(
                    "rabbit.oslo.call",
                    "rabbit",
                    Kind::Peer,
                    "oslo.messaging (threading): call",
                    Measure::Latency(f.call),
                    Some("rabbit.limit.lapin.request_reply"),
                );
                run.push(
                    "rabbit.oslo.cast",
                    "rabbit",
                    Kind::Peer,
                    "oslo.messaging (threading): cast → server",
                    Measure::Rate(f.cast),
                    Some("rabbit.limit.lapin.publish_consume"),
                );
                run.push(
                    "rabbit.oslo.notify",
                    "rabbit",
                    Kind::Peer,
                    "oslo.messaging (threading): notify → listener",
                    Measure::Rate(f.notify),
                    Some("rabbit.limit.lapin.publish_consume"),
                );
            }
            Err(e) => {
                run.push(
                    "rabbit.oslo.call",
                    "rabbit",
                    Kind::Peer,
                    "oslo.messaging",
                    Measure::Skipped(e.to_string()),
                    None,
                );
            }
        }
    }
}

fn nats_section(run: &mut Run, url: &str, versions: &mut BTreeMap<String, String>) {
    eprintln!("NATS ({})", ours::redact(url));
    if !nats::reachable(url, Duration::from_secs(5)) {
        run.push(
            "nats.limit.request",
            "nats",
            Kind::Limit,
            "raw async-nats",
            Measure::Skipped(format!("no NATS answers at {}", ours::redact(url))),
            None,
        );
        return;
    }
    if let Some(version) = package_version("nats-server") {
        versions.insert("nats-server".to_owned(), version);
    }
    let c = run.counts;
    let size = run.payload;
    let m =
        run.rate(|| nats::publish_subscribe(url, c.nats_casts, size).map_err(|e| e.to_string()));
    run.push(
        "nats.limit.publish_subscribe",
        "nats",
        Kind::Limit,
        "raw async-nats publish → subscribe",
        m,
        None,
    );
    let m =
        run.latency(|| nats::request(url, 200, c.broker_calls, size).map_err(|e| e.to_string()));
    run.push(
        "nats.limit.request",
        "nats",
        Kind::Limit,
        "raw async-nats request → responder",
        m,
        None,
    );
    // Durable notification consumers of past runs expire after a minute.
    let ours_url = ours::with_option(url, "consumer_ttl", "60");
    run.ours(
        "nats",
        &ours_url,
        (c.broker_calls, c.nats_casts, c.notifications),
        (
            "nats.limit.request",
            "nats.limit.publish_subscribe",
            "nats.limit.publish_subscribe",
        ),
    );
}

fn package_version(package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !version.is_empty()).then_some(version)
}

fn memory_probes() -> Vec<MemoryFigures> {
    let Ok(me) = std::env::current_exe() else {
        return Vec::new();
    };
    let mut figures = Vec::new();
    for kind in ExecutorKind::ALL {
        let output = Command::new(&me)
            .args(["--probe-memory", kind.name()])
            .output();
        match output {
            Ok(o) if o.status.success() => {
                match serde_json::from_slice::<MemoryFigures>(&o.stdout) {
                    Ok(f) => {
                        eprintln!(
                            "  memory {:<12} idle +{} KiB, idle CPU {:.2}%, 10k in flight +{} KiB",
                            f.executor, f.idle_server_kib, f.idle_cpu_percent, f.in_flight_kib
                        );
                        figures.push(f);
                    }
                    Err(e) => eprintln!("  memory {}: unreadable probe output: {e}", kind.name()),
                }
            }
            Ok(o) => eprintln!(
                "  memory {}: the probe failed: {}",
                kind.name(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("  memory {}: cannot run the probe: {e}", kind.name()),
        }
    }
    figures
}

fn concurrency(run: &Run, urls: &[(&'static str, String, Vec<ExecutorKind>)]) -> Vec<ScaleRow> {
    let payload = Payload::of_size(run.payload);
    let duration = Duration::from_secs_f64(run.counts.scale_seconds);
    let mut rows = Vec::new();
    for (transport, url, kinds) in urls {
        for &kind in kinds {
            let bench = match RpcBench::start(url, kind) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("  {transport} {}: skipped: {e}", kind.name());
                    continue;
                }
            };
            for clients in [1, 4, 16, 64] {
                match scale::concurrent_calls(&bench, clients, duration, &payload) {
                    Ok((rate, latency)) => {
                        eprintln!(
                            "  {transport:<7} {:<12} {clients:>3} callers: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs",
                            kind.name(),
                            rate.per_s,
                            latency.p50_us,
                            latency.p99_us
                        );
                        rows.push(ScaleRow {
                            transport: (*transport).to_owned(),
                            executor: kind.name().to_owned(),
                            clients,
                            rate,
                            latency,
                        });
                    }
                    Err(e) => eprintln!("  {transport} {} {clients}: failed: {e}", kind.name()),
                }
            }
        }
    }
    rows
}

fn targets(report: &Report) -> Vec<Target> {
    let mut targets = Vec::new();
    let mut add = |key: String, description: String, ratio: Option<f64>, bound, threshold| {
        targets.push(Target {
            key,
            description,
            ratio,
            bound,
            threshold,
        });
    };
    for kind in ExecutorKind::ALL {
        let name = kind.name();
        let (ping, chan, limit) = if kind == ExecutorKind::EventLoop {
            (
                "memory.limit.tokio.ping_pong",
                "memory.limit.tokio.throughput",
                "tokio",
            )
        } else {
            (
                "memory.limit.crossbeam.ping_pong",
                "memory.limit.crossbeam.throughput",
                "crossbeam",
            )
        };
        add(
            format!("memory.call_rtt.{name}"),
            format!("memory:// call round trip, {name}, ÷ {limit} ping-pong"),
            report.ratio(&format!("memory.ours.{name}.call"), ping),
            Bound::AtMost,
            3.0,
        );
        add(
            format!("memory.cast_throughput.{name}"),
            format!("memory:// cast throughput, {name}, ÷ {limit} channel"),
            report.ratio(&format!("memory.ours.{name}.cast"), chan),
            Bound::AtLeast,
            0.5,
        );
    }
    for m in &report.memory {
        add(
            format!("memory.idle_cpu.{}", m.executor),
            format!(
                "idle server CPU, {}, % of a core (sleeps, not spins)",
                m.executor
            ),
            Some(m.idle_cpu_percent),
            Bound::AtMost,
            1.0,
        );
    }
    // What the broker allows at all: the oslo targets cannot be met by a client
    // that matches raw lapin if raw lapin itself does not meet them.
    add(
        "rabbit.cast_ceiling".to_owned(),
        "(ceiling) raw lapin cast throughput ÷ oslo.messaging".to_owned(),
        report.ratio("rabbit.limit.lapin.publish_consume", "rabbit.oslo.cast"),
        Bound::AtLeast,
        20.0,
    );
    add(
        "rabbit.call_ceiling".to_owned(),
        "(ceiling) oslo.messaging call round trip ÷ raw lapin request → reply".to_owned(),
        report.ratio("rabbit.oslo.call", "rabbit.limit.lapin.request_reply"),
        Bound::AtLeast,
        5.0,
    );
    for kind in ExecutorKind::ALL {
        let name = kind.name();
        let ours = |what: &str| format!("rabbit.ours.{name}.{what}");
        add(
            format!("rabbit.cast_vs_lapin.{name}"),
            format!("RabbitMQ cast throughput, {name}, ÷ raw lapin publish → consume"),
            report.ratio(&ours("cast"), "rabbit.limit.lapin.publish_consume"),
            Bound::AtLeast,
            0.9,
        );
        add(
            format!("rabbit.cast_vs_oslo.{name}"),
            format!("RabbitMQ cast throughput, {name}, ÷ oslo.messaging"),
            report.ratio(&ours("cast"), "rabbit.oslo.cast"),
            Bound::AtLeast,
            20.0,
        );
        add(
            format!("rabbit.call_vs_lapin.{name}"),
            format!("RabbitMQ call round trip, {name}, ÷ raw lapin request → reply"),
            report.ratio(&ours("call"), "rabbit.limit.lapin.request_reply"),
            Bound::AtMost,
            1.2,
        );
        add(
            format!("rabbit.call_vs_oslo.{name}"),
            format!("RabbitMQ call, {name}: oslo.messaging round trip ÷ ours"),
            report.ratio("rabbit.oslo.call", &ours("call")),
            Bound::AtLeast,
            5.0,
        );
        add(
            format!("nats.call_vs_raw.{name}"),
            format!("NATS call round trip, {name}, ÷ raw async-nats request"),
            report.ratio(&format!("nats.ours.{name}.call"), "nats.limit.request"),
            Bound::AtMost,
            1.2,
        );
        add(
            format!("nats.cast_vs_raw.{name}"),
            format!("NATS cast throughput, {name}, ÷ raw async-nats publish → subscribe"),
            report.ratio(
                &format!("nats.ours.{name}.cast"),
                "nats.limit.publish_subscribe",
            ),
            Bound::AtLeast,
            0.5,
        );
    }
    targets
}

fn probe(executor: &str) -> ExitCode {
    let Some(kind) = ExecutorKind::ALL.into_iter().find(|k| k.name() == executor) else {
        eprintln!("unknown executor {executor:?}");
        return ExitCode::from(2);
    };
    match scale::memory_probe(kind, IN_FLIGHT, IN_FLIGHT_BYTES, Duration::from_secs(1)) {
        Ok(figures) => {
            println!("{}", serde_json::to_string(&figures).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(executor) = &args.probe_memory {
        return probe(executor);
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: an unoptimised build; run with `cargo run --release -p benches --bin compare`"
        );
    }
    let counts = Counts::new(&args);
    let rabbit_url = args
        .rabbit_url
        .clone()
        .or_else(|| {
            std::env::var("MESSAGING_TEST_RABBIT_URL")
                .ok()
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "rabbit://guest:guest@127.0.0.1:5672/".to_owned());
    let nats_url = args
        .nats_url
        .clone()
        .or_else(|| {
            std::env::var("MESSAGING_TEST_NATS_URL")
                .ok()
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let mut run = Run {
        counts,
        payload: args.payload,
        rows: Vec::new(),
        rabbit_queues: Vec::new(),
    };
    let mut versions = BTreeMap::new();
    let machine = Machine::read();
    eprintln!(
        "compare: {} × {}, {} run(s) per figure, {} B payloads",
        machine.cores, machine.cpu, counts.runs, args.payload
    );
    memory_section(&mut run);
    if !args.no_rabbit {
        rabbit_section(&mut run, &rabbit_url, !args.no_oslo, &mut versions);
    }
    if !args.no_nats {
        nats_section(&mut run, &nats_url, &mut versions);
    }
    let (memory, scale) = if args.no_scale {
        (Vec::new(), Vec::new())
    } else {
        eprintln!("memory and concurrency");
        let memory = memory_probes();
        let mut urls = vec![(
            "memory",
            "memory:///scale".to_owned(),
            ExecutorKind::ALL.to_vec(),
        )];
        let brokers = [ExecutorKind::ThreadPool, ExecutorKind::EventLoop].to_vec();
        if !args.no_rabbit
            && run
                .rows
                .iter()
                .any(|r| r.key == "rabbit.limit.lapin.publish_consume")
        {
            urls.push(("rabbit", rabbit_url.clone(), brokers.clone()));
        }
        if !args.no_nats
            && run
                .rows
                .iter()
                .any(|r| r.key == "nats.limit.publish_subscribe")
        {
            urls.push(("nats", nats_url.clone(), brokers));
        }
        let scale = concurrency(&run, &urls);
        (memory, scale)
    };
    if !run.rabbit_queues.is_empty()
        && let Ok(uri) = lapin::amqp_uri(&rabbit_url)
        && let Err(e) = lapin::delete_queues(&uri, &run.rabbit_queues)
    {
        eprintln!("warning: could not delete the bench queues: {e}");
    }
    let mut settings = BTreeMap::new();
    settings.insert("quick".to_owned(), json!(args.quick));
    settings.insert("runs".to_owned(), json!(counts.runs));
    settings.insert("payload_bytes".to_owned(), json!(args.payload));
    settings.insert("counts".to_owned(), json!(format!("{counts:?}")));
    let mut report = Report {
        machine,
        settings,
        versions,
        rows: run.rows,
        targets: Vec::new(),
        memory,
        scale,
        command: format!(
            "cargo run --release -p benches --bin compare{}",
            if args.quick { " -- --quick" } else { "" }
        ),
    };
    report.targets = targets(&report);
    print!("{}", report.to_text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    if !args.no_docs {
        let docs = oslo::workspace_root().join("docs");
        let notes = std::fs::read_to_string(docs.join("performance-notes.md")).unwrap_or_default();
        let written = std::fs::create_dir_all(&docs)
            .and_then(|()| std::fs::write(docs.join("performance.svg"), report.to_svg()))
            .and_then(|()| {
                std::fs::write(
                    docs.join("PERFORMANCE.md"),
                    report.to_markdown("performance.svg", &notes),
                )
            });
        match written {
            Ok(()) => eprintln!("wrote docs/PERFORMANCE.md and docs/performance.svg"),
            Err(e) => {
                eprintln!("error: writing docs/: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
