//! The servers: `rpc-server` (`info`, `sync_start`, `sync_done`), `notify-server` and
//! `batch-notify-server`, standalone or in a client's process (`--with-server`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use messaging_core::notify::{
    Notification, NotificationDispatcher, NotificationEndpoint, NotificationResult,
};
use messaging_core::rpc::{Endpoint, HandlerError, RpcDispatcher};
use messaging_core::{
    Context, Dispatcher, ListenOptions, Priority, Subscription, Target, Untrusted,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::message::{SyncMessage, seq, stamp, wall_now};
use super::stats::{Collector, ErrorKind, LatencyKind, Recorder};
use super::{JsonFile, POLL, SECOND, executor_name, limit_seconds, redacted, tick_until};
use crate::commands::running::Serving;
use crate::commands::serve::executor;
use crate::commands::{invalid_target, open_json, unwritten};
use crate::{
    CliError, ExecutorChoice, MAX_SECONDS, Output, Shutdown, SimCommon, SimServerArgs,
    positive_seconds, seconds,
};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Rpc,
    Notify,
    BatchNotify,
}

impl Side {
    pub(super) fn label(self) -> &'static str {
        match self {
            Side::Rpc => "rpc-server",
            Side::Notify => "notify-server",
            Side::BatchNotify => "batch-notify-server",
        }
    }
}

/// What a server is asked to be.
#[derive(Clone, Debug)]
pub(super) struct Spec {
    pub(super) side: Side,
    pub(super) topic: String,
    pub(super) server: String,
    pub(super) executor: ExecutorChoice,
    /// How long each handler sleeps before answering.
    pub(super) wait: Duration,
    /// Notify servers: requeue each message once.
    pub(super) requeue: bool,
    /// Batch size and timeout (batch-notify-server).
    pub(super) batch: Option<(usize, Duration)>,
}

/// The longest client id (`sync_start`) or publisher id (`--requeue`) kept: a
/// peer's text, kept for the whole run.
const MAX_CLIENT_ID: usize = 255;

/// The most `--sync` clients kept at once (oslo's simulator runs at most a few
/// thousand per process).
const MAX_CLIENTS: usize = 65_536;

/// oslo's `ServerControlEndpoint`: the clients that said `sync_start` and not yet
/// `sync_done`; once the last one is done the server stops a second later. Ids longer
/// than [`MAX_CLIENT_ID`] and clients beyond [`MAX_CLIENTS`] are refused, so that a
/// peer cannot grow it without bound.
#[derive(Debug, Default)]
struct Sync {
    state: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    clients: HashSet<String>,
    /// When the set last became empty at a `sync_done`.
    all_done_at: Option<Instant>,
}

impl Sync {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, id: String) -> Result<(), &'static str> {
        if id.len() > MAX_CLIENT_ID {
            return Err("the client id is longer than 255 bytes");
        }
        let mut state = self.lock();
        if state.clients.len() >= MAX_CLIENTS && !state.clients.contains(&id) {
            return Err("too many --sync clients at once (65536)");
        }
        state.clients.insert(id);
        state.all_done_at = None;
        Ok(())
    }

    /// Whether that was the last client.
    fn done(&self, id: &str) -> bool {
        let mut state = self.lock();
        state.clients.remove(id);
        if state.clients.is_empty() {
            state.all_done_at = Some(Instant::now());
        }
        state.clients.is_empty()
    }

    /// Whether the server should stop now: a second after the last client was done.
    fn stop_due(&self, now: Instant) -> bool {
        self.lock().all_done_at.is_some_and(|at| now >= at + SECOND)
    }
}

/// Notify servers with `--requeue`: which messages were requeued once already.
#[derive(Debug, Default)]
struct Requeues {
    seen: Mutex<HashSet<(String, u64)>>,
    count: AtomicU64,
}

impl Requeues {
    /// Whether `(publisher, seq)` is new (and now seen). A message without a seq, or
    /// of a publisher id longer than [`MAX_CLIENT_ID`], is never requeued.
    fn first_time(&self, publisher: &str, message: &Value) -> bool {
        let Some(seq) = seq(message) else {
            return false;
        };
        if publisher.len() > MAX_CLIENT_ID {
            return false;
        }
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((publisher.to_owned(), seq))
    }
}

#[derive(Deserialize)]
struct InfoArgs {
    message: Value,
}

#[derive(Deserialize)]
struct SyncArgs {
    message: SyncMessage,
}

/// Records one received message, stamping it; `false` if it is not a simulator
/// message (recorded as an `invalid` error).
fn receive(record: &Recorder, message: &mut Value) -> bool {
    match stamp(message, wall_now()) {
        Some((bytes, latency)) => {
            tracing::debug!(seq = seq(message), bytes, "simulate: received");
            record.ok(bytes, latency, Instant::now());
            true
        }
        None => {
            record.error(ErrorKind::Invalid);
            false
        }
    }
}

fn sleep(wait: Duration) {
    if !wait.is_zero() {
        thread::sleep(wait);
    }
}

/// A server running on its own thread.
pub(super) struct Running {
    serving: Serving,
    pub(super) recorder: Arc<Recorder>,
    pub(super) executor: ExecutorChoice,
    pub(super) description: String,
    sync: Arc<Sync>,
    requeues: Arc<Requeues>,
}

impl Running {
    /// Connects to `url` and starts serving `spec`; notes from the handlers (`--sync`
    /// clients) go to `err`.
    pub(super) fn start(
        url: &str,
        spec: &Spec,
        err: &Output,
        shutdown: &Shutdown,
    ) -> Result<Running, CliError> {
        let transport = open_json(url)?;
        let recorder = Recorder::new();
        let sync = Arc::new(Sync::default());
        let requeues = Arc::new(Requeues::default());
        let wait = spec.wait;
        let (subscription, dispatcher, description): (_, Box<dyn Dispatcher>, _) = match spec.side {
            Side::Rpc => {
                let record = recorder.clone();
                let info = move |_ctx: Context, args: InfoArgs| {
                    let mut message = args.message;
                    if !receive(&record, &mut message) {
                        return Err(HandlerError::new(
                            "ValueError",
                            "not a simulator message: [seq, cargo, client_ts, server_ts, \
                             return_ts] or {seq, cargo, client_ts, server_ts}",
                        )
                        .with_module("builtins")
                        .expected());
                    }
                    sleep(wait);
                    Ok::<_, HandlerError>(message)
                };
                let (started, done) = (sync.clone(), sync.clone());
                let (start_note, done_note) = (err.clone(), err.clone());
                let endpoint = Endpoint::new()
                    .method("info", info)
                    // A client's id is a peer's text: shown escaped and cut, so it
                    // cannot write escape sequences to the terminal or flood it.
                    .method("sync_start", move |_ctx, args: SyncArgs| {
                        let id = args.message.id;
                        let shown = Untrusted::new(&id).to_string();
                        started.start(id).map_err(|reason| {
                            HandlerError::new("ValueError", reason)
                                .with_module("builtins")
                                .expected()
                        })?;
                        start_note.note(&format!("rpc-server: client {shown} started"));
                        Ok::<_, HandlerError>(Value::Null)
                    })
                    .method("sync_done", move |_ctx, args: SyncArgs| {
                        let id = args.message.id;
                        let shown = Untrusted::new(&id);
                        done_note.note(&format!("rpc-server: client {shown} is done"));
                        if done.done(&id) {
                            done_note
                                .note("rpc-server: every --sync client is done: stopping in 1 s");
                        }
                        Ok::<_, HandlerError>(Value::Null)
                    });
                let target = Target::new(spec.topic.clone()).with_server(spec.server.clone());
                target.validate_for_listen().map_err(invalid_target)?;
                let description = format!("serving {target}");
                let dispatcher = RpcDispatcher::new(vec![endpoint])
                    .map_err(|e| CliError::failure(e.to_string()))?;
                (Subscription::Rpc(target), Box::new(dispatcher), description)
            }
            Side::Notify | Side::BatchNotify => {
                let endpoint = notification_endpoint(spec, &recorder, &requeues);
                let target = Target::new(spec.topic.clone());
                target
                    .validate_for_notification_listen()
                    .map_err(invalid_target)?;
                let description = format!("listening on {target}");
                let dispatcher = NotificationDispatcher::new(vec![endpoint], spec.requeue);
                let subscription = Subscription::Notifications {
                    targets: vec![target],
                    priorities: dispatcher.priorities(),
                    pool: None,
                };
                (subscription, Box::new(dispatcher), description)
            }
        };
        let listen = match spec.batch {
            Some((size, timeout)) => ListenOptions::batch(size, Some(timeout)),
            None => ListenOptions::default(),
        };
        let dispatcher = move |batch| dispatcher.dispatch(batch);
        let (serving, _) = Serving::start_with(
            transport,
            subscription,
            listen,
            dispatcher,
            executor(spec.executor),
            shutdown,
        )?;
        Ok(Running {
            serving,
            recorder,
            executor: spec.executor,
            description,
            sync,
            requeues,
        })
    }

    /// Deliveries requeued by `--requeue` so far.
    pub(super) fn requeued(&self) -> u64 {
        self.requeues.count.load(Ordering::Relaxed)
    }

    /// Stops, finishing the messages in progress within `grace` (see
    /// [`Serving::stop`]).
    pub(super) fn stop(
        self,
        grace: Duration,
        err: &Output,
        shutdown: &Shutdown,
    ) -> Result<(), CliError> {
        self.serving.stop(grace, err, shutdown)
    }
}

/// The `info` handler of the notify servers, one at a time or in batches.
fn notification_endpoint(
    spec: &Spec,
    recorder: &Arc<Recorder>,
    requeues: &Arc<Requeues>,
) -> NotificationEndpoint {
    let (record, requeues, wait, requeue) =
        (recorder.clone(), requeues.clone(), spec.wait, spec.requeue);
    if spec.side == Side::BatchNotify {
        return NotificationEndpoint::new().on_batch(
            Priority::Info,
            move |batch: Vec<Notification<Value>>| {
                sleep(wait);
                if requeue {
                    // Every message is marked seen: none of them is requeued twice.
                    let mut new = false;
                    for n in &batch {
                        new |= requeues.first_time(&n.publisher_id, &n.payload);
                    }
                    if new {
                        requeues
                            .count
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        return NotificationResult::Requeue;
                    }
                }
                for mut n in batch {
                    receive(&record, &mut n.payload);
                }
                NotificationResult::Handled
            },
        );
    }
    NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
        let mut payload = n.payload;
        sleep(wait);
        if requeue && requeues.first_time(&n.publisher_id, &payload) {
            requeues.count.fetch_add(1, Ordering::Relaxed);
            return NotificationResult::Requeue;
        }
        receive(&record, &mut payload);
        NotificationResult::Handled
    })
}

/// A standalone server run: which, and its flags.
#[derive(Debug)]
pub(super) struct ServerRun<'a> {
    pub(super) side: Side,
    pub(super) args: &'a SimServerArgs,
    /// Notify servers' `--requeue`.
    pub(super) requeue: bool,
    /// `--batch-size`, `--batch-timeout` (batch-notify-server).
    pub(super) batch: Option<(usize, f64)>,
}

/// A standalone server (`rpc-server`, `notify-server`, `batch-notify-server`).
pub(super) fn serve(
    common: &SimCommon,
    run: ServerRun<'_>,
    out: &Output,
    err: &Output,
    shutdown: &Shutdown,
) -> Result<(), CliError> {
    let ServerRun {
        side,
        args,
        requeue,
        batch,
    } = run;
    let label = side.label();
    let limit = limit_seconds(common.duration, "--duration")?;
    let grace = positive_seconds(args.grace, "--grace", MAX_SECONDS)?;
    if args.expect == Some(0) {
        return Err(CliError::usage("--expect must be at least 1"));
    }
    let wait = seconds(args.wait_before_answer, "--wait-before-answer")?;
    if side == Side::Rpc && common.server.is_empty() {
        return Err(CliError::usage("--server must not be empty"));
    }
    let batch = match batch {
        None => None,
        Some((0, _)) => return Err(CliError::usage("--batch-size must be at least 1")),
        Some((size, timeout)) => Some((
            size,
            positive_seconds(timeout, "--batch-timeout", MAX_SECONDS)?,
        )),
    };
    if !common.targets.is_empty() {
        err.note(&format!(
            "warning: {label} ignores --targets (-tg): it serves --topic/--server"
        ));
    }
    let url = redacted(common.transport_url())?;
    let json_file = JsonFile::create(common.json.as_deref())?;
    let spec = Spec {
        side,
        topic: common.topic.clone(),
        server: common.server.clone(),
        executor: args.executor,
        wait,
        requeue,
        batch,
    };
    let running = Running::start(common.transport_url(), &spec, err, shutdown)?;
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
        if deadline.is_some_and(|d| now >= d)
            || args.expect.is_some_and(|n| collector.count() >= n)
            || running.sync.stop_due(now)
        {
            break;
        }
    }
    let requeued = running.requeued();
    running.stop(grace, err, shutdown)?;
    collector.finish(err);
    let summary = collector.summary(None);
    let mut line = summary.line(label, LatencyKind::OneWay);
    if requeue {
        line.push_str(&format!("  requeued {requeued}"));
    }
    // The JSON file is written even when stdout fails.
    let printed = out.line(&line);
    json_file.write(&json!({
        "mode": label,
        "url": url,
        "topic": common.topic,
        "server": common.server,
        "targets": null,
        "executor": executor_name(args.executor),
        "send": null,
        "clients": null,
        "messages_per_client": null,
        "duration_limit_s": common.duration,
        "payload": null,
        "latency_kind": LatencyKind::OneWay.name(),
        "requeued": (side != Side::Rpc).then_some(requeued),
        "summary": summary.json(),
        "series": collector.series_json(),
        "server_side": null,
    }))?;
    printed.map_err(unwritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_stops_a_second_after_the_last_client() {
        let sync = Sync::default();
        let now = Instant::now();
        assert!(!sync.stop_due(now + SECOND * 10));
        sync.start("a".into()).unwrap();
        sync.start("b".into()).unwrap();
        assert!(!sync.done("a"));
        assert!(!sync.stop_due(Instant::now() + SECOND * 10));
        assert!(sync.done("b"));
        let done = Instant::now();
        assert!(!sync.stop_due(done));
        assert!(sync.stop_due(done + SECOND + SECOND / 10));
        // A client starting within that second keeps the server up.
        sync.start("c".into()).unwrap();
        assert!(!sync.stop_due(Instant::now() + SECOND * 10));
        assert!(!sync.done("never-started"));
        assert!(sync.done("c"));
        // oslo: a done without a start still stops a server nobody else syncs with.
        assert!(Sync::default().done("never-started"));
    }

    #[test]
    fn sync_refuses_long_ids_and_more_clients_than_it_keeps() {
        let sync = Sync::default();
        assert!(sync.start("i".repeat(MAX_CLIENT_ID + 1)).is_err());
        assert!(sync.start("i".repeat(MAX_CLIENT_ID)).is_ok());
        for i in 1..MAX_CLIENTS {
            sync.start(format!("c{i}")).unwrap();
        }
        // One too many; a client already known is still welcome.
        assert!(sync.start("one-more".to_owned()).is_err());
        assert!(sync.start("c1".to_owned()).is_ok());
        assert!(!sync.done("c1"));
    }

    #[test]
    fn a_publisher_id_too_long_to_remember_is_never_requeued() {
        let requeues = Requeues::default();
        let m = json!([1, "x", 1.0, 0, 0]);
        assert!(!requeues.first_time(&"p".repeat(MAX_CLIENT_ID + 1), &m));
        assert!(requeues.first_time(&"p".repeat(MAX_CLIENT_ID), &m));
    }

    #[test]
    fn each_message_is_requeued_once() {
        let requeues = Requeues::default();
        let m = json!([1, "x", 1.0, 0, 0]);
        assert!(requeues.first_time("publisher-0", &m));
        assert!(!requeues.first_time("publisher-0", &m));
        assert!(requeues.first_time("publisher-1", &m));
        assert!(!requeues.first_time("publisher-0", &json!({"no": "seq"})));
    }
}
