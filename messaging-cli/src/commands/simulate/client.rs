//! The clients: `rpc-client` (call, cast, fanout; `--sync`; `--targets`) and
//! `notify-client`, `-p` threads sharing one transport.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::notify::Notifier;
use messaging_core::rpc::RpcClient;
use messaging_core::{Context, Target};
use serde_json::{Value, json};

use super::message::{InfoKwargs, Outgoing, SyncMessage, check_reply, wall_now};
use super::payload::{self, MAX_PAYLOAD, PayloadSpec, Rng};
use super::server::{Running, Side, Spec};
use super::stats::{Collector, ErrorKind, LatencyKind, Recorder, Summary, micros};
use super::{JsonFile, POLL, SECOND, executor_name, limit_seconds, redacted, tick_until};
use crate::commands::{invalid_target, open_json, unless_stopped, unwritten};
use crate::{
    CliError, DEFAULT_GRACE, Output, Shutdown, SimClientArgs, SimCommon, SyncMode,
    positive_seconds, seconds,
};

/// With `--with-server`: how long the server may receive nothing before the client
/// stops waiting for it to catch up.
const STALL: Duration = Duration::from_secs(3);
/// The most `-p` clients (threads).
const MAX_CLIENTS: usize = 4096;
/// `-m` when not given.
const DEFAULT_MESSAGES: u64 = 1000;
/// The event type of the notifications sent (oslo's).
const EVENT_TYPE: &str = "compute.start";

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Load {
    Call,
    Cast,
    Fanout,
    Notify,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Call => "call",
            Load::Cast => "cast",
            Load::Fanout => "fanout",
            Load::Notify => "notify",
        }
    }

    fn side(self) -> Side {
        match self {
            Load::Notify => Side::Notify,
            _ => Side::Rpc,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Load::Notify => "notify-client",
            _ => "rpc-client",
        }
    }

    fn latency_kind(self) -> LatencyKind {
        match self {
            Load::Call => LatencyKind::RoundTrip,
            _ => LatencyKind::Send,
        }
    }
}

/// A client run: what to send, how, and (rpc-client) how to sync.
#[derive(Debug)]
pub(super) struct ClientRun<'a> {
    pub(super) load: Load,
    pub(super) args: &'a SimClientArgs,
    pub(super) sync: Option<SyncMode>,
}

/// `TOPIC.SERVER` split at its first dot (oslo: `target.partition('.')`).
fn parse_target(text: &str, fanout: bool) -> Result<Target, CliError> {
    let (topic, server) = text.split_once('.').unwrap_or((text, ""));
    let mut target = Target::new(topic).with_fanout(fanout);
    if !fanout && !server.is_empty() {
        target.server = Some(server.to_owned());
    }
    target.validate_for_send().map_err(|e| {
        CliError::usage(format!(
            "--targets {}: {}",
            one_word(text),
            invalid_target(e).message
        ))
    })?;
    Ok(target)
}

/// `text` quoted for an error, control characters escaped.
fn one_word(text: &str) -> String {
    format!("{:?}", text)
}

/// The targets client `i` sends to: `targets[i % len]`.
fn targets(common: &SimCommon, load: Load, err: &Output) -> Result<Vec<Target>, CliError> {
    let fanout = load == Load::Fanout;
    if load == Load::Notify || common.targets.is_empty() {
        if load == Load::Notify && !common.targets.is_empty() {
            err.note("warning: notify-client ignores --targets (-tg): it sends to --topic");
        }
        let mut target = Target::new(common.topic.clone()).with_fanout(fanout);
        if !fanout && !common.server.is_empty() {
            target.server = Some(common.server.clone());
        }
        target.validate_for_send().map_err(invalid_target)?;
        return Ok(vec![target]);
    }
    common
        .targets
        .iter()
        .map(|t| parse_target(t, fanout))
        .collect()
}

/// `TOPIC.SERVER` (an empty SERVER: any server), or `TOPIC` for fanout and
/// notifications.
fn target_name(target: &Target, load: Load) -> String {
    let topic = target.topic.as_deref().unwrap_or_default();
    match load {
        Load::Fanout | Load::Notify => topic.to_owned(),
        _ => format!("{topic}.{}", target.server.as_deref().unwrap_or_default()),
    }
}

/// This host's name, for the `--sync` client ids (oslo: `socket.gethostname()`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

enum Sender {
    Call(RpcClient),
    Cast(RpcClient),
    Notify(Notifier),
}

impl Sender {
    /// Sends one message; `None` if a stop request abandoned the send (connecting to
    /// a broker that does not answer, waiting for a reply, ...).
    fn send(
        &self,
        context: &Context,
        message: &Outgoing<'_>,
        shutdown: &Shutdown,
    ) -> Option<Result<(), (ErrorKind, String)>> {
        let rpc = |e: messaging_core::rpc::RpcError| (ErrorKind::of_rpc(&e), e.to_string());
        let kwargs = InfoKwargs { message };
        Some(match self {
            Sender::Call(client) => {
                let call = client.call::<_, Value>(context, "info", &kwargs);
                match unless_stopped(call, shutdown)?.map_err(rpc) {
                    Ok(reply) => {
                        check_reply(&reply, message.seq).map_err(|e| (ErrorKind::Mismatch, e))
                    }
                    Err(e) => Err(e),
                }
            }
            Sender::Cast(client) => {
                unless_stopped(client.cast(context, "info", &kwargs), shutdown)?.map_err(rpc)
            }
            Sender::Notify(notifier) => {
                unless_stopped(notifier.info(context, EVENT_TYPE, message), shutdown)?
                    .map_err(|e| (ErrorKind::of_notify(&e), e.to_string()))
            }
        })
    }
}

/// A client's side of oslo's `--sync` protocol.
struct Syncer {
    client: RpcClient,
    fanout: bool,
    id: String,
    synced: bool,
}

impl Syncer {
    /// Calls or fanout-casts `method` (`sync_start`, `sync_done`) with this client's
    /// id; `None` if a stop request abandoned it.
    fn send(&self, method: &str, shutdown: &Shutdown) -> Option<Result<(), String>> {
        let context = Context::new();
        let message = SyncMessage {
            id: self.id.clone(),
        };
        let kwargs = InfoKwargs { message: &message };
        let sent = if self.fanout {
            unless_stopped(self.client.cast(&context, method, &kwargs), shutdown)?
        } else {
            unless_stopped(
                self.client.call::<_, Value>(&context, method, &kwargs),
                shutdown,
            )?
            .map(drop)
        };
        Some(sent.map_err(|e| e.to_string()))
    }
}

/// When a client stops sending.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Messages(u64),
    Until(Instant),
}

/// One client thread's loop.
struct Worker {
    sender: Sender,
    sync: Option<Syncer>,
    texts: Arc<Vec<String>>,
    position: usize,
    limit: Limit,
    wait_after: Duration,
    stop: Arc<AtomicBool>,
    /// A stop request abandons the send in progress.
    shutdown: Shutdown,
    recorder: Arc<Recorder>,
    first_error: Arc<Mutex<Option<String>>>,
    err: Output,
}

impl Worker {
    fn run(mut self) {
        let context = Context::new();
        let mut seq = 0;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            match self.limit {
                Limit::Messages(n) if seq >= n => break,
                Limit::Until(end) if Instant::now() >= end => break,
                _ => {}
            }
            // oslo: a client that could not sync tries again before its next message.
            if let Some(sync) = self.sync.as_mut().filter(|s| !s.synced) {
                match sync.send("sync_start", &self.shutdown) {
                    None => break,
                    Some(Ok(())) => sync.synced = true,
                    Some(Err(e)) => self.err.note(&format!(
                        "warning: client {}: sync_start failed: {e}",
                        sync.id
                    )),
                }
            }
            let cargo = self.texts[self.position].as_str();
            let message = Outgoing {
                seq,
                cargo,
                client_ts: wall_now(),
            };
            let sent = Instant::now();
            let Some(outcome) = self.sender.send(&context, &message, &self.shutdown) else {
                break; // abandoned: neither a success nor an error
            };
            let done = Instant::now();
            match outcome {
                Ok(()) => {
                    tracing::debug!(seq, bytes = cargo.len(), "simulate: sent");
                    self.recorder
                        .ok(cargo.len(), Some(micros(done - sent)), done);
                }
                Err((kind, message)) => {
                    tracing::debug!(seq, error = %message, "simulate: failed");
                    self.recorder.error(kind);
                    let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(message);
                }
            }
            seq += 1;
            self.position = (self.position + 1) % self.texts.len();
            if !self.wait_after.is_zero() {
                thread::sleep(self.wait_after);
            }
        }
        // oslo: a second for the last messages to arrive, then sync_done.
        if let Some(sync) = self.sync.filter(|s| s.synced) {
            if self.shutdown.wait_timeout(SECOND) {
                return;
            }
            if let Some(Err(e)) = sync.send("sync_done", &self.shutdown) {
                self.err.note(&format!(
                    "warning: client {}: sync_done failed: {e}",
                    sync.id
                ));
            }
        }
    }
}

/// The in-process server of `--with-server`, with its collector.
type InProcess = (Running, Collector);

pub(super) fn send_load(
    common: &SimCommon,
    run: ClientRun<'_>,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let ClientRun { load, args, sync } = run;
    let label = load.label();
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(CliError::usage(format!(
            "--clients must be between 1 and {MAX_CLIENTS}"
        )));
    }
    let limit = limit_seconds(common.duration, "--duration")?;
    let messages = match (limit, args.messages) {
        (Some(_), Some(m)) => {
            err.note(&format!(
                "warning: -m {m} ignored: -l sends for a duration (as oslo's simulator does)"
            ));
            DEFAULT_MESSAGES
        }
        (_, Some(0)) => return Err(CliError::usage("--messages must be at least 1")),
        (_, m) => m.unwrap_or(DEFAULT_MESSAGES),
    };
    let wait_after = seconds(args.wait_after, "--wait-after")?;
    let timeout = positive_seconds(args.timeout, "--timeout", crate::MAX_SECONDS)?;
    let exit_wait = seconds(args.exit_wait, "--exit-wait")?;
    let grace = Duration::from_secs_f64(DEFAULT_GRACE);
    let spec = match args.payload_size {
        Some(size) if size > MAX_PAYLOAD => {
            return Err(CliError::usage(format!(
                "--payload-size must be at most {MAX_PAYLOAD} bytes"
            )));
        }
        Some(size) => PayloadSpec::Fixed(size),
        None => PayloadSpec::Oslo,
    };
    let targets = targets(common, load, err)?;
    if args.with_server && !common.targets.is_empty() {
        return Err(CliError::usage(
            "--targets (-tg) and --with-server do not go together: the in-process server \
             serves --topic/--server",
        ));
    }
    let url = redacted(common.transport_url())?;
    let json_file = JsonFile::create(common.json.as_deref())?;

    let transport = open_json(common.transport_url())?;
    // The in-process server before the clients, so that the first messages find it.
    let mut server: Option<InProcess> = match args.with_server {
        true => {
            let spec = Spec {
                side: load.side(),
                topic: common.topic.clone(),
                server: match common.server.as_str() {
                    "" => "profiler_server".to_owned(),
                    name => name.to_owned(),
                },
                executor: args.executor,
                wait: Duration::ZERO,
                requeue: false,
                batch: None,
            };
            let running = Running::start(common.transport_url(), &spec, err, shutdown)?;
            err.note(&format!(
                "{}: {} on {} (in-process)",
                load.side().label(),
                running.description,
                executor_name(args.executor)
            ));
            let collector = Collector::new(load.side().label(), running.recorder.clone());
            Some((running, collector))
        }
        false => None,
    };

    let texts = payload::texts(
        spec,
        limit
            .is_none()
            .then(|| messages.saturating_mul(args.clients as u64)),
        args.seed,
    );
    let mut rng = Rng::new(args.seed ^ 0x5eed_5eed_5eed_5eed);
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(Mutex::new(None));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let started = Instant::now();
    let limit = match limit {
        Some(d) => Limit::Until(started + d),
        None => Limit::Messages(messages),
    };
    let names: Vec<String> = targets.iter().map(|t| target_name(t, load)).collect();
    err.note(&format!(
        "{label}: {} clients sending {} to {} ({}{})",
        args.clients,
        load.name(),
        match load {
            Load::Notify => format!("{} (event type {EVENT_TYPE})", names.join(", ")),
            _ => names.join(", "),
        },
        match limit {
            Limit::Messages(n) => format!("{n} messages each"),
            Limit::Until(_) => format!("for {:.1} s", common.duration.unwrap_or_default()),
        },
        match sync {
            Some(SyncMode::Call) => ", --sync call",
            Some(SyncMode::Fanout) => ", --sync fanout",
            None => "",
        }
    ));
    let salt = format!(
        "{:x}{:x}",
        std::process::id(),
        (wall_now() * 1e6) as u64 & 0xffff_ffff
    );
    let host = hostname();
    let mut workers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let target = targets[i % targets.len()].clone();
        let sender = match load {
            Load::Call => Sender::Call(
                RpcClient::new(transport.clone(), target.clone()).with_timeout(timeout),
            ),
            Load::Cast | Load::Fanout => Sender::Cast(
                RpcClient::new(transport.clone(), target.clone()).with_timeout(timeout),
            ),
            Load::Notify => Sender::Notify(
                Notifier::new(transport.clone(), format!("publisher-{i}"))
                    .with_topics([common.topic.clone()])
                    .with_timeout(timeout),
            ),
        };
        let syncer = sync.map(|mode| {
            let fanout = mode == SyncMode::Fanout;
            let mut sync_target = target.clone().with_fanout(fanout);
            if fanout {
                sync_target.server = None;
            }
            Syncer {
                client: RpcClient::new(transport.clone(), sync_target).with_timeout(timeout),
                fanout,
                id: format!("{i} {salt}@{host}"),
                synced: false,
            }
        });
        let worker = Worker {
            sender,
            sync: syncer,
            texts: texts.clone(),
            position: rng.below(texts.len() as u64) as usize,
            limit,
            wait_after,
            stop: stop.clone(),
            shutdown: shutdown.clone(),
            recorder: recorder.clone(),
            first_error: first_error.clone(),
            err: err.clone(),
        };
        let done = done_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("simulate-client-{i}"))
            .spawn(move || {
                worker.run();
                let _ = done.send(());
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for worker in workers {
                    let _ = worker.join();
                }
                if let Some((running, _)) = server {
                    let _ = running.stop(grace, err, shutdown);
                }
                return Err(CliError::failure(format!("cannot start a thread: {e}")));
            }
        }
    }
    drop(done_tx);

    // Until every client is done: a progress line per second.
    let mut collector = Collector::new(label, recorder);
    let mut next_tick = started + SECOND;
    let mut running_workers = workers.len();
    while running_workers > 0 {
        let now = Instant::now();
        match done_rx.recv_timeout(next_tick.min(now + POLL).saturating_duration_since(now)) {
            Ok(()) => running_workers -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break, // a client panicked
        }
        if shutdown.is_triggered() {
            stop.store(true, Ordering::Relaxed);
        }
        let mut collectors = vec![&mut collector];
        if let Some((_, c)) = server.as_mut() {
            collectors.push(c);
        }
        tick_until(Instant::now(), &mut next_tick, &mut collectors, err);
    }
    let elapsed = started.elapsed();
    let mut panicked = false;
    for worker in workers {
        panicked |= worker.join().is_err();
    }
    collector.finish(err);
    let client_summary = collector.summary(Some(elapsed));

    let server = match server {
        None => None,
        Some(in_process) => Some(catch_up_and_stop(
            in_process,
            client_summary.count,
            &mut next_tick,
            grace,
            err,
            shutdown,
        )?),
    };

    // The JSON file is written even when stdout fails.
    let mut printed =
        out.line(&client_summary.line(&format!("{label} ({})", load.name()), load.latency_kind()));
    if let (Ok(()), Some((_, _, summary))) = (&printed, &server) {
        printed = out.line(&summary.line(load.side().label(), LatencyKind::OneWay));
    }
    let payload = match spec {
        PayloadSpec::Fixed(size) => json!({"kind": "fixed", "size": size}),
        PayloadSpec::Oslo => json!({"kind": "oslo-distribution"}),
    };
    let server_json = match &server {
        None => Value::Null,
        Some((executor, collector, summary)) => json!({
            "executor": executor_name(*executor),
            "latency_kind": LatencyKind::OneWay.name(),
            "summary": summary.json(),
            "series": collector.series_json(),
        }),
    };
    json_file.write(&json!({
        "mode": label,
        "url": url,
        "topic": common.topic,
        "server": common.server,
        "targets": (load != Load::Notify).then_some(&names),
        "executor": args.with_server.then(|| executor_name(args.executor)),
        "send": load.name(),
        "clients": args.clients,
        "messages_per_client": common.duration.is_none().then_some(messages),
        "duration_limit_s": common.duration,
        "payload": payload,
        "latency_kind": load.latency_kind().name(),
        "requeued": null,
        "summary": client_summary.json(),
        "series": collector.series_json(),
        "server_side": server_json,
    }))?;
    printed.map_err(unwritten)?;

    if !exit_wait.is_zero() && !shutdown.is_triggered() {
        err.note(&format!(
            "{label}: done; keeping the connection open for {} s (--exit-wait)",
            exit_wait.as_secs_f64()
        ));
        shutdown.wait_timeout(exit_wait);
    }
    drop(transport);
    if panicked {
        return Err(CliError::failure("a client thread panicked"));
    }
    fail_if_nothing_worked(&client_summary, &first_error)
}

/// The in-process server: lets it catch up with the `sent` messages (until it has them
/// all, or receives nothing for [`STALL`]), then stops it.
fn catch_up_and_stop(
    (running, mut collector): InProcess,
    sent: u64,
    next_tick: &mut Instant,
    grace: Duration,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(crate::ExecutorChoice, Collector, Summary), CliError> {
    let (mut seen, mut progressed) = (collector.count(), Instant::now());
    while seen < sent && progressed.elapsed() < STALL && !shutdown.wait_timeout(POLL) {
        tick_until(Instant::now(), next_tick, &mut [&mut collector], err);
        let now_seen = collector.count();
        if now_seen > seen {
            (seen, progressed) = (now_seen, Instant::now());
        }
    }
    let executor = running.executor;
    running.stop(grace, err, shutdown)?;
    collector.finish(err);
    let summary = collector.summary(None);
    Ok((executor, collector, summary))
}

fn fail_if_nothing_worked(
    summary: &Summary,
    first_error: &Mutex<Option<String>>,
) -> Result<(), CliError> {
    if summary.count == 0 && summary.error_count() > 0 {
        let first = first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        return Err(CliError::failure(format!(
            "every message failed ({} errors); the first: {first}",
            summary.error_count()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_dot_like_oslo() {
        let t = parse_target("compute.host.example", false).unwrap();
        assert_eq!(t.topic.as_deref(), Some("compute"));
        assert_eq!(t.server.as_deref(), Some("host.example"));
        assert_eq!(target_name(&t, Load::Call), "compute.host.example");
        // No dot, or nothing after it: any server of the topic.
        for text in ["compute", "compute."] {
            let t = parse_target(text, false).unwrap();
            assert_eq!(t.server, None, "{text}");
            assert_eq!(target_name(&t, Load::Cast), "compute.");
        }
        // Fanout: the topic only.
        let t = parse_target("compute.h1", true).unwrap();
        assert!(t.fanout && t.server.is_none());
        assert_eq!(target_name(&t, Load::Fanout), "compute");
        let error = parse_target(".h1", false).unwrap_err();
        assert_eq!(error.code, crate::exit::USAGE);
        assert!(
            error.message.starts_with("--targets \".h1\": "),
            "{}",
            error.message
        );
    }
}
