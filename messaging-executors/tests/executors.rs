//! What each executor promises beyond the shared contract: bounded queues and
//! on-demand workers for the thread pool; async handlers without a thread each, and
//! blocking work that never stalls the runtime, for the event loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use messaging_core::dispatch::block_on;
use messaging_core::{
    CallOptions, Dispatch, Dispatcher, Executor, IncomingMessage, ListenOptions, Message, Polled,
    SendOptions, Server, ServerError, Subscription, Target, Transport,
};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use messaging_testkit::{
    FakeHandle, FakeTransport, Recorder, ServerThread, fake_transport, within,
};

const STEP: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(100);
const LIMIT: Duration = Duration::from_secs(60);

struct Rig {
    transport: Arc<FakeTransport>,
    fake: FakeHandle,
    server: Server,
}

fn rig(executor: impl Executor, dispatcher: impl Dispatcher) -> Rig {
    let (transport, fake) = fake_transport();
    let server = Server::builder(
        transport.clone(),
        Subscription::Rpc(Target::new("t").with_server("s")),
        dispatcher,
        executor,
    )
    .build()
    .unwrap();
    Rig {
        transport,
        fake,
        server,
    }
}

impl Rig {
    fn cast(&self, body: &str) {
        block_on(self.transport.cast(
            &Target::new("t"),
            Message::new(body.to_owned()),
            &SendOptions::default(),
        ))
        .unwrap();
    }

    fn queued(&self) -> usize {
        let listener = self
            .transport
            .listen(
                &Subscription::Rpc(Target::new("t").with_server("probe")),
                &ListenOptions::default(),
            )
            .unwrap();
        let mut n = 0;
        // Count and put back: requeue keeps the messages for the server.
        let mut taken = Vec::new();
        while let Ok(Polled::Messages(batch)) = listener.poll(Some(Duration::from_millis(20))) {
            n += batch.len();
            taken.extend(batch);
        }
        for m in taken {
            m.requeue().unwrap();
        }
        listener.cleanup();
        n
    }
}

#[test]
fn thread_pool_queue_is_bounded_and_the_poller_stops_taking_messages() {
    within(LIMIT, "backpressure", || {
        let recorder = Recorder::new();
        let rig = rig(
            ThreadPoolExecutor::new()
                .with_max_workers(1)
                .with_queue_capacity(1),
            recorder.dispatcher(),
        );
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        for i in 0..10 {
            rig.cast(&format!("gate:{i}"));
        }
        assert!(recorder.wait_started(1, STEP));
        std::thread::sleep(SETTLE);
        // One running, one in the queue, one held by the blocked poller.
        let delivered = rig.fake.listener_counts().delivered;
        assert!(
            delivered <= 3,
            "the pool took {delivered} messages with one worker and a queue of one"
        );
        assert!(rig.queued() >= 7, "the rest stays on the transport");
        recorder.open_gate();
        assert!(recorder.wait_processed(10, STEP));
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn thread_pool_runs_handlers_concurrently_and_a_slow_one_blocks_nobody() {
    within(LIMIT, "concurrency", || {
        let recorder = Recorder::new();
        let rig = rig(
            ThreadPoolExecutor::new().with_max_workers(4),
            recorder.dispatcher(),
        );
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        for i in 0..3 {
            rig.cast(&format!("gate:{i}"));
        }
        assert!(recorder.wait_started(3, STEP), "three handlers run at once");
        rig.cast("quick");
        assert!(
            recorder.wait_processed(1, STEP),
            "a fourth worker serves while three are busy"
        );
        assert_eq!(recorder.processed(), ["quick"]);
        recorder.open_gate();
        assert!(recorder.wait_processed(4, STEP));
        running.stop_and_wait().unwrap();
    });
}

/// Blocking work goes to tokio's blocking pool; async work uses the runtime.
fn mixed(recorder: &Recorder) -> impl Dispatcher {
    let blocking = recorder.dispatcher();
    let asynchronous = recorder.async_dispatcher();
    move |batch: Vec<IncomingMessage>| {
        if batch.iter().any(|m| m.message().body.starts_with(b"gate:")) {
            blocking.dispatch(batch)
        } else {
            asynchronous.dispatch(batch)
        }
    }
}

#[test]
fn event_loop_blocking_work_never_stalls_the_runtime() {
    within(LIMIT, "blocking work", || {
        let recorder = Recorder::new();
        let rig = rig(
            EventLoopExecutor::new().with_worker_threads(1),
            mixed(&recorder),
        );
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        rig.cast("gate:blocking");
        assert!(recorder.wait_started(1, STEP));
        for i in 0..5 {
            rig.cast(&format!("async-{i}"));
        }
        assert!(
            recorder.wait_processed(5, STEP),
            "async handlers ran on the single runtime thread while a blocking one was held"
        );
        recorder.open_gate();
        assert!(recorder.wait_processed(6, STEP));
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn event_loop_runs_async_handlers_concurrently_on_one_thread() {
    within(LIMIT, "async concurrency", || {
        const N: usize = 10;
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let done = Arc::new(AtomicUsize::new(0));
        let dispatcher = {
            let (barrier, done) = (barrier.clone(), done.clone());
            move |batch: Vec<IncomingMessage>| {
                let (barrier, done) = (barrier.clone(), done.clone());
                Dispatch::future(async move {
                    drop(batch);
                    // Completes only once all N handlers are in flight together.
                    barrier.wait().await;
                    done.fetch_add(1, Ordering::SeqCst);
                })
            }
        };
        let rig = rig(EventLoopExecutor::new().with_worker_threads(1), dispatcher);
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        for i in 0..N {
            rig.cast(&i.to_string());
        }
        let deadline = std::time::Instant::now() + STEP;
        while done.load(Ordering::SeqCst) < N && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            done.load(Ordering::SeqCst),
            N,
            "all handlers met at the barrier"
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn event_loop_takes_no_more_messages_than_it_may_run() {
    within(LIMIT, "max concurrency", || {
        let recorder = Recorder::new();
        let rig = rig(
            EventLoopExecutor::new().with_max_concurrency(2),
            recorder.dispatcher(),
        );
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        for i in 0..6 {
            rig.cast(&format!("gate:{i}"));
        }
        assert!(recorder.wait_started(2, STEP));
        std::thread::sleep(SETTLE);
        assert_eq!(rig.fake.listener_counts().delivered, 2);
        assert_eq!(recorder.started().len(), 2);
        recorder.open_gate();
        assert!(recorder.wait_processed(6, STEP));
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn event_loop_runs_on_a_runtime_you_provide() {
    within(LIMIT, "external runtime", || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let recorder = Recorder::new();
        let rig = rig(
            EventLoopExecutor::with_handle(runtime.handle().clone()),
            recorder.async_dispatcher(),
        );
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        rig.cast("hello");
        assert!(recorder.wait_processed(1, STEP));
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn blocking_executor_processes_in_order_and_drives_async_handlers() {
    within(LIMIT, "blocking order", || {
        let recorder = Recorder::new();
        let rig = rig(BlockingExecutor::new(), recorder.async_dispatcher());
        for i in 0..20 {
            rig.cast(&i.to_string());
        }
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        assert!(recorder.wait_processed(20, STEP));
        assert_eq!(
            recorder.processed(),
            (0..20).map(|i| i.to_string()).collect::<Vec<_>>()
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn blocking_executor_takes_nothing_until_execute() {
    within(LIMIT, "no execute", || {
        let recorder = Recorder::new();
        let rig = rig(BlockingExecutor::new(), recorder.dispatcher());
        rig.server.start().unwrap();
        rig.cast("waits");
        std::thread::sleep(SETTLE);
        assert!(recorder.processed().is_empty());
        rig.server.stop().unwrap();
        rig.server.wait().unwrap();
        assert_eq!(rig.queued(), 1, "the message stays on the transport");
    });
}

// ===== the Server API around the executors =====

#[test]
fn an_invalid_target_is_refused_when_the_server_is_built() {
    let (transport, _) = fake_transport();
    let err = Server::builder(
        transport,
        Subscription::Rpc(Target::new("topic-only")),
        |_: Vec<IncomingMessage>| Dispatch::nothing(),
        BlockingExecutor::new(),
    )
    .build()
    .unwrap_err();
    assert!(matches!(err, ServerError::InvalidTarget(_)));
    assert_eq!(
        err.to_string(),
        "a server's target must have topic and server names specified: <Target topic=topic-only>"
    );
}

#[test]
fn pinned_calls_never_move_to_another_epoch() {
    let rig = rig(BlockingExecutor::new(), |_: Vec<IncomingMessage>| {
        Dispatch::nothing()
    });
    let first = rig.server.start().unwrap();
    rig.server.stop().unwrap();
    rig.server.wait().unwrap();
    let second = rig.server.start().unwrap();
    assert_eq!((first.get(), second.get()), (1, 2));
    let pinned_to_first = CallOptions::new().epoch(first).timeout(STEP);
    assert_eq!(
        rig.server.stop_with(&pinned_to_first).unwrap(),
        first,
        "a finished epoch: at once"
    );
    assert_eq!(
        rig.server.start_with(&pinned_to_first).unwrap(),
        first,
        "a pinned start never restarts"
    );
    assert!(rig.server.state().is_running());

    // An epoch this server has not reached is refused, not waited for.
    let other = rig_with_blocking();
    let err = other
        .server
        .stop_with(&CallOptions::new().epoch(second))
        .unwrap_err();
    assert!(matches!(err, ServerError::UnknownEpoch { .. }), "{err}");
    rig.server.stop().unwrap();
    rig.server.wait().unwrap();
}

fn rig_with_blocking() -> Rig {
    rig(BlockingExecutor::new(), |_: Vec<IncomingMessage>| {
        Dispatch::nothing()
    })
}

#[test]
fn dropping_a_running_server_stops_it() {
    within(LIMIT, "drop", || {
        let recorder = Recorder::new();
        let rig = rig(ThreadPoolExecutor::new(), recorder.dispatcher());
        rig.server.start().unwrap();
        let Rig {
            transport,
            fake,
            server,
            ..
        } = rig;
        drop(server);
        assert_eq!(
            fake.listener_counts().stopped,
            1,
            "the listener was stopped"
        );
        block_on(transport.cast(
            &Target::new("t"),
            Message::new("late"),
            &SendOptions::default(),
        ))
        .unwrap();
        std::thread::sleep(SETTLE);
        assert!(recorder.processed().is_empty());
    });
}

/// Dropping the last handle of an event-loop server, running or stopped but not waited
/// for, lets its async handlers finish and answer, with the executor's own runtime (not
/// shut down under them) and with one you provide; the listener is cleaned up once
/// they are done.
#[test]
fn dropping_an_event_loop_server_lets_its_async_handlers_finish() {
    within(LIMIT, "drop an event-loop server", || {
        let external = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for (executor, stop_first) in [
            (EventLoopExecutor::new().with_worker_threads(1), false),
            (EventLoopExecutor::new().with_worker_threads(1), true),
            (
                EventLoopExecutor::with_handle(external.handle().clone()),
                false,
            ),
        ] {
            let recorder = Recorder::new();
            let rig = rig(executor, recorder.async_dispatcher());
            rig.server.start().unwrap();
            let mut reply = block_on(rig.transport.call(
                &Target::new("t"),
                Message::new("gate:call"),
                &SendOptions::default(),
            ))
            .unwrap();
            for i in 0..3 {
                rig.cast(&format!("gate:{i}"));
            }
            assert!(recorder.wait_started(4, STEP), "every message was taken");
            let Rig { fake, server, .. } = rig;
            if stop_first {
                server.stop().unwrap();
            }
            drop(server);
            recorder.open_gate();
            assert_eq!(
                reply.recv_timeout(Some(STEP)),
                Ok(messaging_core::reply::ReplyEvent::Reply(Ok(
                    Bytes::from_static(b"gate:call")
                ))),
                "the call in flight was answered"
            );
            assert!(recorder.wait_processed(4, STEP), "every handler finished");
            let deadline = std::time::Instant::now() + STEP;
            while fake.listener_counts().cleaned_up == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the listener was cleaned up"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
}

#[test]
fn replies_lost_by_the_transport_leave_the_caller_to_its_timeout() {
    within(LIMIT, "lost reply", || {
        let recorder = Recorder::new();
        let rig = rig(ThreadPoolExecutor::new(), recorder.dispatcher());
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        rig.fake.drop_replies(true);
        let mut reply = block_on(rig.transport.call(
            &Target::new("t"),
            Message::new("lost"),
            &SendOptions::default(),
        ))
        .unwrap();
        assert!(
            recorder.wait_processed(1, STEP),
            "the handler ran and replied"
        );
        assert_eq!(rig.fake.listener_counts().replies, 1);
        assert_eq!(
            reply.recv_timeout(Some(SETTLE)),
            Err(messaging_core::reply::RecvError::Timeout),
            "the reply was lost, the channel stays open: the caller times out"
        );
        rig.fake.drop_replies(false);
        let mut reply = block_on(rig.transport.call(
            &Target::new("t"),
            Message::new("kept"),
            &SendOptions::default(),
        ))
        .unwrap();
        assert_eq!(
            reply.recv_timeout(Some(STEP)),
            Ok(messaging_core::reply::ReplyEvent::Reply(Ok(
                Bytes::from_static(b"kept")
            )))
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn failing_acknowledgements_are_reported_to_the_handler() {
    within(LIMIT, "ack fault", || {
        let (tx, rx) = std::sync::mpsc::channel();
        let dispatcher = move |batch: Vec<IncomingMessage>| {
            let tx = tx.clone();
            Dispatch::blocking(move || {
                for mut m in batch {
                    let _ = tx.send(m.acknowledge().is_err());
                }
            })
        };
        let rig = rig(BlockingExecutor::new(), dispatcher);
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        rig.fake.fail_acks(true);
        rig.cast("x");
        assert!(
            rx.recv_timeout(STEP).unwrap(),
            "the injected ack failure reached the handler"
        );
        running.stop_and_wait().unwrap();
    });
}

#[test]
fn slow_delivery_still_drains_on_stop() {
    within(LIMIT, "slow delivery", || {
        let recorder = Recorder::new();
        let rig = rig(ThreadPoolExecutor::new(), recorder.dispatcher());
        rig.fake.delay_delivery(Some(Duration::from_millis(30)));
        let running = ServerThread::spawn(rig.server.clone()).unwrap();
        for i in 0..3 {
            rig.cast(&i.to_string());
        }
        assert!(recorder.wait_started(1, STEP));
        running.stop_and_wait().unwrap();
        assert_eq!(
            recorder.processed().len() + rig.queued(),
            3,
            "slow or not, nothing is lost"
        );
    });
}
