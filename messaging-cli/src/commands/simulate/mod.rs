//! `simulate`: a load generator after oslo.messaging's `tools/simulator.py`.
//!
//! * `rpc-server` serves `info(message)`: it stamps `server_ts` and returns the
//!   message; `notify-server` listens for `info` notifications. Both record the
//!   one-way latency from the message's `client_ts` (wall clock, so meaningful when
//!   both ends share a clock) and the payload bytes.
//! * `rpc-client` calls (or casts, or fanout-casts) `info` and `notify-client` sends
//!   `compute.start` notifications, from `-p` threads sharing one transport, each
//!   with its own client object (like an oslo service's green threads). A call's
//!   latency is its round trip on the client's monotonic clock.
//!
//! The message is `{"seq", "cargo", "client_ts", "server_ts"}` (`cargo`: random
//! lowercase text); the servers also accept oslo's list form
//! `[seq, cargo, client_ts, server_ts, return_ts]`, so oslo's own simulator clients can
//! drive them.

mod payload;
mod stats;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use messaging_core::notify::{
    Notification, NotificationDispatcher, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{Endpoint, HandlerError, RpcClient, RpcDispatcher};
use messaging_core::{Context, Dispatcher, Priority, Subscription, Target, TransportUrl};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::payload::{MAX_PAYLOAD, PayloadSpec, Rng};
use self::stats::{Collector, ErrorKind, LatencyKind, Recorder, Summary, micros};
use super::running::Serving;
use super::serve::executor;
use super::{invalid_target, open_json, unless_stopped, unwritten};
use crate::{
    CliError, DEFAULT_GRACE, ExecutorChoice, MAX_SECONDS, Output, Shutdown, SimClientArgs,
    SimCommon, SimServerArgs, SimulateArgs, SimulateMode, positive_seconds, seconds,
};

/// How often the control loop wakes between whole seconds (stop conditions).
const POLL: Duration = Duration::from_millis(20);
/// With `--with-server`: how long the server may receive nothing before the client
/// stops waiting for it to catch up.
const STALL: Duration = Duration::from_secs(3);
const SECOND: Duration = Duration::from_secs(1);
/// The most `-p` clients (threads).
const MAX_CLIENTS: usize = 4096;
/// The event type of the notifications sent (oslo's).
const EVENT_TYPE: &str = "compute.start";

pub(crate) fn run(
    args: &SimulateArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    match &args.mode {
        SimulateMode::RpcServer(a) => serve(Side::Rpc, a, out, err, shutdown),
        SimulateMode::NotifyServer(a) => serve(Side::Notify, a, out, err, shutdown),
        SimulateMode::RpcClient(a) => {
            let load = if a.fanout {
                Load::Fanout
            } else if a.cast {
                Load::Cast
            } else {
                Load::Call
            };
            let timeout = seconds(a.timeout, "--timeout")?;
            if timeout.is_zero() {
                return Err(CliError::usage("--timeout must be positive"));
            }
            send_load(load, &a.client, timeout, out, err, shutdown)
        }
        SimulateMode::NotifyClient(a) => {
            send_load(Load::Notify, a, Duration::ZERO, out, err, shutdown)
        }
    }
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Rpc,
    Notify,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Rpc => "rpc-server",
            Side::Notify => "notify-server",
        }
    }
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
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

fn executor_name(choice: ExecutorChoice) -> &'static str {
    match choice {
        ExecutorChoice::Blocking => "blocking",
        ExecutorChoice::ThreadPool => "thread-pool",
        ExecutorChoice::EventLoop => "event-loop",
    }
}

/// The URL with its password hidden.
fn redacted(url: &str) -> Result<String, CliError> {
    TransportUrl::parse(url)
        .map(|u| u.to_string())
        .map_err(|e| CliError::usage(e.to_string()))
}

fn limit_seconds(value: Option<f64>, what: &str) -> Result<Option<Duration>, CliError> {
    value
        .map(|v| positive_seconds(v, what, MAX_SECONDS))
        .transpose()
}

/// The `--json` file, created before the run so that a bad path fails early.
struct JsonFile(Option<(File, String)>);

impl JsonFile {
    fn create(path: Option<&Path>) -> Result<Self, CliError> {
        match path {
            None => Ok(JsonFile(None)),
            Some(path) => File::create(path)
                .map(|f| JsonFile(Some((f, path.display().to_string()))))
                .map_err(|e| CliError::usage(format!("cannot write {}: {e}", path.display()))),
        }
    }

    fn write(self, value: &Value) -> Result<(), CliError> {
        let Some((mut file, path)) = self.0 else {
            return Ok(());
        };
        serde_json::to_writer_pretty(&mut file, value)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush())
            .map_err(|e| CliError::failure(format!("cannot write {path}: {e}")))
    }
}

// ---------------------------------------------------------------- the servers

/// Seconds since the epoch, like Python's `time.time()`.
fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Stamps `server_ts` into a simulator message; returns its payload bytes and the
/// one-way latency (µs) from `client_ts`, or `None` if it is not a simulator message.
fn stamp(message: &mut Value, now: f64) -> Option<(usize, Option<u32>)> {
    let (bytes, client_ts) = match message {
        Value::Object(map) => {
            let bytes = map.get("cargo")?.as_str()?.len();
            let client_ts = map.get("client_ts").and_then(Value::as_f64);
            map.insert("server_ts".to_owned(), now.into());
            (bytes, client_ts)
        }
        // oslo's Message(seq, cargo, client_ts, server_ts, return_ts).
        Value::Array(items) if items.len() >= 4 => {
            let bytes = items[1].as_str()?.len();
            let client_ts = items[2].as_f64();
            items[3] = now.into();
            (bytes, client_ts)
        }
        _ => return None,
    };
    let latency = client_ts
        .filter(|&t| t > 0.0)
        .and_then(|t| Duration::try_from_secs_f64((now - t).max(0.0)).ok())
        .map(micros);
    Some((bytes, latency))
}

#[derive(Deserialize)]
struct InfoArgs {
    message: Value,
}

/// A server running on its own thread.
struct Running {
    serving: Serving,
    recorder: Arc<Recorder>,
    executor: ExecutorChoice,
    description: String,
}

impl Running {
    fn start(
        side: Side,
        common: &SimCommon,
        server_name: &str,
        choice: ExecutorChoice,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<Running, CliError> {
        let transport = open_json(&common.url)?;
        let recorder = Recorder::new();
        let record = recorder.clone();
        let (subscription, dispatcher, description): (_, Box<dyn Dispatcher>, _) = match side {
            Side::Rpc => {
                let endpoint = Endpoint::new().method("info", move |_ctx, args: InfoArgs| {
                    let mut message = args.message;
                    match stamp(&mut message, wall_now()) {
                        Some((bytes, latency)) => record.ok(bytes, latency, Instant::now()),
                        None => {
                            record.error(ErrorKind::Invalid);
                            return Err(HandlerError::new(
                                "ValueError",
                                "not a simulator message: {seq, cargo, client_ts, server_ts}",
                            )
                            .with_module("builtins")
                            .expected());
                        }
                    }
                    if !wait.is_zero() {
                        thread::sleep(wait);
                    }
                    Ok::<_, HandlerError>(message)
                });
                let target = Target::new(common.topic.clone()).with_server(server_name);
                target.validate_for_listen().map_err(invalid_target)?;
                let description = format!("serving {target}");
                let dispatcher = RpcDispatcher::new(vec![endpoint])
                    .map_err(|e| CliError::failure(e.to_string()))?;
                (Subscription::Rpc(target), Box::new(dispatcher), description)
            }
            Side::Notify => {
                let endpoint = NotificationEndpoint::new().on(
                    Priority::Info,
                    move |n: Notification<Value>| {
                        let mut payload = n.payload;
                        match stamp(&mut payload, wall_now()) {
                            Some((bytes, latency)) => record.ok(bytes, latency, Instant::now()),
                            None => record.error(ErrorKind::Invalid),
                        }
                        if !wait.is_zero() {
                            thread::sleep(wait);
                        }
                        NotificationResult::Handled
                    },
                );
                let target = Target::new(common.topic.clone());
                target
                    .validate_for_notification_listen()
                    .map_err(invalid_target)?;
                let description = format!("listening on {target}");
                let dispatcher = NotificationDispatcher::new(vec![endpoint], false);
                let subscription = Subscription::Notifications {
                    targets: vec![target],
                    priorities: dispatcher.priorities(),
                    pool: None,
                };
                (subscription, Box::new(dispatcher), description)
            }
        };
        let dispatcher = move |batch| dispatcher.dispatch(batch);
        let (serving, _) = Serving::start(
            transport,
            subscription,
            dispatcher,
            executor(choice),
            shutdown,
        )?;
        Ok(Running {
            serving,
            recorder,
            executor: choice,
            description,
        })
    }

    /// Stops, finishing the messages in progress within `grace` (see
    /// [`Serving::stop`]).
    fn stop(self, grace: Duration, err: &Output, shutdown: &Shutdown) -> Result<(), CliError> {
        self.serving.stop(grace, err, shutdown)
    }
}

/// Ticks `collectors` for every whole second passed since the run started.
fn tick_until(
    now: Instant,
    next_tick: &mut Instant,
    collectors: &mut [&mut Collector],
    err: &Output,
) {
    while now >= *next_tick {
        for collector in collectors.iter_mut() {
            collector.tick(err, true);
        }
        *next_tick += SECOND;
    }
}

fn serve(
    side: Side,
    args: &SimServerArgs,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let label = side.label();
    let limit = limit_seconds(args.duration, "--duration")?;
    let grace = positive_seconds(args.grace, "--grace", MAX_SECONDS)?;
    if args.expect == Some(0) {
        return Err(CliError::usage("--expect must be at least 1"));
    }
    let wait = seconds(args.wait_before_answer, "--wait-before-answer")?;
    if side == Side::Rpc && args.common.server.is_empty() {
        return Err(CliError::usage("--server must not be empty"));
    }
    let url = redacted(&args.common.url)?;
    let json_file = JsonFile::create(args.common.json.as_deref())?;
    let running = Running::start(
        side,
        &args.common,
        &args.common.server,
        args.executor,
        wait,
        shutdown,
    )?;
    err.note(&format!(
        "{label}: {} on {}; stop with Ctrl-C",
        running.description,
        executor_name(args.executor)
    ));

    let mut collector = Collector::new(label, running.recorder.clone());
    let started = Instant::now();
    let deadline = limit.map(|d| started + d);
    let mut next_tick = started + SECOND;
    loop {
        let now = Instant::now();
        let mut wake = next_tick.min(now + POLL);
        if let Some(deadline) = deadline {
            wake = wake.min(deadline);
        }
        if shutdown.wait_timeout(wake.saturating_duration_since(now)) {
            break;
        }
        let now = Instant::now();
        tick_until(now, &mut next_tick, &mut [&mut collector], err);
        if deadline.is_some_and(|d| now >= d) || args.expect.is_some_and(|n| collector.count() >= n)
        {
            break;
        }
    }
    running.stop(grace, err, shutdown)?;
    collector.finish(err);
    let summary = collector.summary(None);
    // The JSON file is written even when stdout fails.
    let printed = out.line(&summary.line(label, LatencyKind::OneWay));
    json_file.write(&json!({
        "mode": label,
        "url": url,
        "topic": args.common.topic,
        "server": args.common.server,
        "executor": executor_name(args.executor),
        "send": null,
        "clients": null,
        "messages_per_client": null,
        "duration_limit_s": args.duration,
        "payload": null,
        "latency_kind": LatencyKind::OneWay.name(),
        "summary": summary.json(),
        "series": collector.series_json(),
        "server_side": null,
    }))?;
    printed.map_err(unwritten)
}

// ---------------------------------------------------------------- the clients

#[derive(Serialize)]
struct Outgoing<'a> {
    seq: u64,
    cargo: &'a str,
    client_ts: f64,
    server_ts: f64,
}

#[derive(Serialize)]
struct InfoKwargs<'a> {
    message: &'a Outgoing<'a>,
}

/// The part of the reply the client checks.
#[derive(Deserialize)]
struct Echo {
    seq: u64,
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
                let call = client.call::<_, Echo>(context, "info", &kwargs);
                match unless_stopped(call, shutdown)?.map_err(rpc) {
                    Ok(echo) if echo.seq == message.seq => Ok(()),
                    Ok(echo) => Err((
                        ErrorKind::Mismatch,
                        format!("sent seq {}, the reply has {}", message.seq, echo.seq),
                    )),
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

/// When a client stops sending.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Messages(u64),
    Until(Instant),
}

/// One client thread's loop.
struct Worker {
    sender: Sender,
    texts: Arc<Vec<String>>,
    position: usize,
    limit: Limit,
    wait_after: Duration,
    stop: Arc<AtomicBool>,
    /// A stop request abandons the send in progress.
    shutdown: Shutdown,
    recorder: Arc<Recorder>,
    first_error: Arc<Mutex<Option<String>>>,
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
            let cargo = self.texts[self.position].as_str();
            let message = Outgoing {
                seq,
                cargo,
                client_ts: wall_now(),
                server_ts: 0.0,
            };
            let sent = Instant::now();
            let Some(outcome) = self.sender.send(&context, &message, &self.shutdown) else {
                break; // abandoned: neither a success nor an error
            };
            let done = Instant::now();
            match outcome {
                Ok(()) => self
                    .recorder
                    .ok(cargo.len(), Some(micros(done - sent)), done),
                Err((kind, message)) => {
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
    }
}

fn send_load(
    load: Load,
    args: &SimClientArgs,
    timeout: Duration,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let label = load.label();
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(CliError::usage(format!(
            "--clients must be between 1 and {MAX_CLIENTS}"
        )));
    }
    let limit = limit_seconds(args.duration, "--duration")?;
    if limit.is_none() && args.messages == 0 {
        return Err(CliError::usage("--messages must be at least 1"));
    }
    let wait_after = seconds(args.wait_after, "--wait-after")?;
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
    let mut names = Target::new(args.common.topic.clone());
    if !args.common.server.is_empty() {
        names.server = Some(args.common.server.clone());
    }
    names.validate_for_send().map_err(invalid_target)?;
    let url = redacted(&args.common.url)?;
    let json_file = JsonFile::create(args.common.json.as_deref())?;

    let transport = open_json(&args.common.url)?;
    // The in-process server before the clients, so that the first messages find it.
    let server_name = if args.common.server.is_empty() {
        "profiler_server"
    } else {
        args.common.server.as_str()
    };
    let mut server = match args.with_server {
        true => {
            let running = Running::start(
                load.side(),
                &args.common,
                server_name,
                args.executor,
                Duration::ZERO,
                shutdown,
            )?;
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
        (limit.is_none()).then(|| args.messages.saturating_mul(args.clients as u64)),
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
        None => Limit::Messages(args.messages),
    };
    let mut target = Target::new(args.common.topic.clone()).with_fanout(load == Load::Fanout);
    if load != Load::Fanout && !args.common.server.is_empty() {
        target.server = Some(args.common.server.clone());
    }
    err.note(&format!(
        "{label}: {} clients sending {} to {} ({})",
        args.clients,
        load.name(),
        if load == Load::Notify {
            format!("{} (event type {EVENT_TYPE})", args.common.topic)
        } else {
            target.to_string()
        },
        match limit {
            Limit::Messages(n) => format!("{n} messages each"),
            Limit::Until(_) => format!("for {:.1} s", args.duration.unwrap_or_default()),
        }
    ));
    let mut workers = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let sender = match load {
            Load::Call => Sender::Call(
                RpcClient::new(transport.clone(), target.clone()).with_timeout(timeout),
            ),
            Load::Cast | Load::Fanout => Sender::Cast(
                RpcClient::new(transport.clone(), target.clone()).with_timeout(timeout),
            ),
            Load::Notify => Sender::Notify(
                Notifier::new(transport.clone(), format!("publisher-{i}"))
                    .with_topics([args.common.topic.clone()]),
            ),
        };
        let worker = Worker {
            sender,
            texts: texts.clone(),
            position: rng.below(texts.len() as u64) as usize,
            limit,
            wait_after,
            stop: stop.clone(),
            shutdown: shutdown.clone(),
            recorder: recorder.clone(),
            first_error: first_error.clone(),
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

    // The in-process server: let it catch up with what was sent, then stop it.
    let server = match server {
        None => None,
        Some((running, mut server_collector)) => {
            let (mut seen, mut progressed) = (server_collector.count(), Instant::now());
            while seen < client_summary.count
                && progressed.elapsed() < STALL
                && !shutdown.wait_timeout(POLL)
            {
                tick_until(
                    Instant::now(),
                    &mut next_tick,
                    &mut [&mut server_collector],
                    err,
                );
                let now_seen = server_collector.count();
                if now_seen > seen {
                    (seen, progressed) = (now_seen, Instant::now());
                }
            }
            let executor = running.executor;
            running.stop(grace, err, shutdown)?;
            server_collector.finish(err);
            let summary = server_collector.summary(None);
            Some((executor, server_collector, summary))
        }
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
        "topic": args.common.topic,
        "server": args.common.server,
        "executor": args.with_server.then(|| executor_name(args.executor)),
        "send": load.name(),
        "clients": args.clients,
        "messages_per_client": args.duration.is_none().then_some(args.messages),
        "duration_limit_s": args.duration,
        "payload": payload,
        "latency_kind": load.latency_kind().name(),
        "summary": client_summary.json(),
        "series": collector.series_json(),
        "server_side": server_json,
    }))?;
    printed.map_err(unwritten)?;

    if panicked {
        return Err(CliError::failure("a client thread panicked"));
    }
    fail_if_nothing_worked(&client_summary, &first_error)
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
    fn stamp_reads_both_message_forms() {
        let mut object = json!({"seq": 1, "cargo": "abc", "client_ts": 100.0, "server_ts": 0});
        let (bytes, latency) = stamp(&mut object, 100.25).unwrap();
        assert_eq!((bytes, latency), (3, Some(250_000)));
        assert_eq!(object["server_ts"], 100.25);
        let mut list = json!([1, "abcd", 100.0, 0, 0]);
        assert_eq!(stamp(&mut list, 100.0), Some((4, Some(0))));
        assert_eq!(list[3], 100.0);
        // A client clock ahead of the server's: zero, not a panic.
        let mut ahead = json!({"cargo": "", "client_ts": 200.0});
        assert_eq!(stamp(&mut ahead, 100.0), Some((0, Some(0))));
        let mut nan = json!({"cargo": "", "client_ts": "x"});
        assert_eq!(stamp(&mut nan, 100.0), Some((0, None)));
        assert_eq!(stamp(&mut json!(7), 1.0), None);
        assert_eq!(stamp(&mut json!({"seq": 1}), 1.0), None);
    }
}
