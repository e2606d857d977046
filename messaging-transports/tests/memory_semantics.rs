//! The in-memory transport follows oslo's fake-driver semantics, woken by notification.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use messaging_core::dispatch::block_on;
use messaging_core::reply::{RecvError, ReplyEvent};
use messaging_core::{
    IncomingMessage, ListenOptions, Listener, Message, Polled, Priority, SendOptions, Subscription,
    Target, Transport,
};
use messaging_transports::memory::MemoryTransport;

const LONG: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(30));

fn rpc(transport: &MemoryTransport, topic: &str, server: &str) -> Box<dyn Listener> {
    transport
        .listen(
            &Subscription::Rpc(Target::new(topic).with_server(server)),
            &ListenOptions::default(),
        )
        .unwrap()
}

fn notifications(
    transport: &MemoryTransport,
    topic: &str,
    pool: Option<&str>,
    options: ListenOptions,
) -> Box<dyn Listener> {
    transport
        .listen(
            &Subscription::Notifications {
                targets: vec![Target::new(topic)],
                priorities: vec![Priority::Info],
                pool: pool.map(str::to_owned),
            },
            &options,
        )
        .unwrap()
}

fn cast(transport: &MemoryTransport, target: &Target, body: &str) {
    block_on(transport.cast(
        target,
        Message::new(body.to_owned()),
        &SendOptions::default(),
    ))
    .unwrap();
}

fn notify(transport: &MemoryTransport, topic: &str, body: &str) {
    block_on(transport.notify(
        &Target::new(topic),
        Priority::Info,
        Message::new(body.to_owned()),
    ))
    .unwrap();
}

fn bodies(polled: Polled) -> Vec<String> {
    match polled {
        Polled::Messages(batch) => batch.iter().map(body).collect(),
        Polled::Idle => Vec::new(),
        Polled::Closed => panic!("listener closed"),
    }
}

fn body(incoming: &IncomingMessage) -> String {
    String::from_utf8(incoming.message().body.to_vec()).unwrap()
}

fn drain(listener: &dyn Listener) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = bodies(listener.poll(SHORT).unwrap());
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[test]
fn a_topic_queue_is_shared_by_competing_servers() {
    let t = MemoryTransport::new();
    let a = rpc(&t, "compute", "a");
    let b = rpc(&t, "compute", "b");
    for i in 0..10 {
        cast(&t, &Target::new("compute"), &i.to_string());
    }
    let mut got = drain(&*a);
    got.extend(drain(&*b));
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn waiting_servers_of_a_topic_take_turns() {
    let t = MemoryTransport::new();
    let listeners: Vec<Arc<dyn Listener>> = (0..3)
        .map(|i| Arc::from(rpc(&t, "compute", &format!("s{i}"))))
        .collect();
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (l, tx) = (l.clone(), tx.clone());
            thread::spawn(move || {
                while let Ok(Polled::Messages(batch)) = l.poll(LONG) {
                    for _ in batch {
                        tx.send(i).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut per_server = [0; 3];
    for i in 0..30 {
        // Let every server go back to waiting before the next message.
        thread::sleep(Duration::from_millis(2));
        cast(&t, &Target::new("compute"), &i.to_string());
        per_server[rx.recv_timeout(Duration::from_secs(10)).unwrap()] += 1;
    }
    for l in &listeners {
        l.stop();
    }
    for th in threads {
        th.join().unwrap();
    }
    assert!(
        per_server.iter().all(|&n| n >= 5),
        "unfair distribution {per_server:?}"
    );
}

#[test]
fn server_queues_store_and_forward() {
    let t = MemoryTransport::new();
    let target = Target::new("compute").with_server("later");
    cast(&t, &target, "early");
    let listener = rpc(&t, "compute", "later");
    assert_eq!(drain(&*listener), ["early"]);
}

#[test]
fn fanout_reaches_every_server_and_is_dropped_without_servers() {
    let t = MemoryTransport::new();
    cast(&t, &Target::new("compute").with_fanout(true), "nobody");
    let a = rpc(&t, "compute", "a");
    let b = rpc(&t, "compute", "b");
    cast(&t, &Target::new("compute").with_fanout(true), "all");
    assert_eq!(drain(&*a), ["all"]);
    assert_eq!(drain(&*b), ["all"]);
}

#[test]
fn exchanges_are_isolated() {
    let t = MemoryTransport::new();
    let listener = t
        .listen(
            &Subscription::Rpc(Target::new("compute").with_server("s").with_exchange("x")),
            &ListenOptions::default(),
        )
        .unwrap();
    cast(&t, &Target::new("compute"), "default exchange");
    cast(&t, &Target::new("compute").with_exchange("x"), "exchange x");
    assert_eq!(drain(&*listener), ["exchange x"]);
}

#[test]
fn notifications_are_stored_before_a_listener_exists_and_each_pool_gets_a_copy() {
    let t = MemoryTransport::new();
    notify(&t, "notifications", "stored");
    let plain = notifications(&t, "notifications", None, ListenOptions::default());
    let pool_a1 = notifications(&t, "notifications", Some("a"), ListenOptions::default());
    let pool_a2 = notifications(&t, "notifications", Some("a"), ListenOptions::default());
    let pool_b = notifications(&t, "notifications", Some("b"), ListenOptions::default());
    for i in 0..6 {
        notify(&t, "notifications", &format!("n{i}"));
    }
    let mut expected: Vec<String> = vec!["stored".into()];
    expected.extend((0..6).map(|i| format!("n{i}")));
    assert_eq!(drain(&*plain), expected);
    assert_eq!(
        drain(&*pool_b),
        expected,
        "a new pool starts with a copy of what waits"
    );
    let mut a = drain(&*pool_a1);
    let a2 = drain(&*pool_a2);
    assert!(a2.is_empty() || !a.is_empty());
    a.extend(a2);
    a.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(a, sorted, "listeners of one pool share a single copy");
}

#[test]
fn notification_priorities_are_separate_topics() {
    let t = MemoryTransport::new();
    let info = notifications(&t, "n", None, ListenOptions::default());
    block_on(t.notify(&Target::new("n"), Priority::Error, Message::new("error"))).unwrap();
    notify(&t, "n", "info");
    assert_eq!(drain(&*info), ["info"]);
}

#[test]
fn requeue_puts_the_message_at_the_end() {
    let t = MemoryTransport::new();
    let listener = notifications(&t, "n", None, ListenOptions::default());
    notify(&t, "n", "first");
    notify(&t, "n", "second");
    let Polled::Messages(mut batch) = listener.poll(LONG).unwrap() else {
        panic!("expected a message")
    };
    let first = batch.pop().unwrap();
    assert_eq!(body(&first), "first");
    first.requeue().unwrap();
    assert_eq!(drain(&*listener), ["second", "first"]);
}

#[test]
fn batches_fill_up_to_the_size_or_the_timeout() {
    let t = MemoryTransport::new();
    let listener = notifications(
        &t,
        "n",
        None,
        ListenOptions::batch(100, Some(Duration::from_millis(200))),
    );
    for i in 0..205 {
        notify(&t, "n", &i.to_string());
    }
    let sizes: Vec<usize> = (0..3)
        .map(|_| bodies(listener.poll(LONG).unwrap()).len())
        .collect();
    assert_eq!(sizes, [100, 100, 5]);
}

#[test]
fn a_partial_batch_waits_for_more_until_the_batch_timeout() {
    let t = Arc::new(MemoryTransport::new());
    let listener = notifications(
        &t,
        "n",
        None,
        ListenOptions::batch(3, Some(Duration::from_secs(5))),
    );
    notify(&t, "n", "1");
    let sender = {
        let t = t.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            notify(&t, "n", "2");
            notify(&t, "n", "3");
        })
    };
    assert_eq!(bodies(listener.poll(LONG).unwrap()), ["1", "2", "3"]);
    sender.join().unwrap();
}

#[test]
fn a_blocked_poll_is_woken_by_a_message_not_a_timer() {
    let t = Arc::new(MemoryTransport::new());
    let listener = rpc(&t, "compute", "s");
    let sender = {
        let t = t.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            cast(&t, &Target::new("compute"), "wake");
        })
    };
    let started = Instant::now();
    assert_eq!(
        bodies(listener.poll(Some(Duration::from_secs(30))).unwrap()),
        ["wake"]
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    sender.join().unwrap();
}

#[test]
fn stop_wakes_a_blocked_poll_and_leaves_untaken_messages_queued() {
    let t = MemoryTransport::new();
    let listener: Arc<dyn Listener> = Arc::from(rpc(&t, "compute", "s"));
    let poller = {
        let l = listener.clone();
        thread::spawn(move || matches!(l.poll(None).unwrap(), Polled::Closed))
    };
    thread::sleep(Duration::from_millis(20));
    listener.stop();
    assert!(poller.join().unwrap(), "a stopped listener reports Closed");
    cast(&t, &Target::new("compute"), "after stop");
    assert!(matches!(listener.poll(LONG).unwrap(), Polled::Closed));
    listener.cleanup();
    let next = rpc(&t, "compute", "s2");
    assert_eq!(drain(&*next), ["after stop"]);
}

#[test]
fn poll_async_is_woken_and_cancel_safe() {
    let t = Arc::new(MemoryTransport::new());
    let a = rpc(&t, "compute", "a");
    let b: Arc<dyn Listener> = Arc::from(rpc(&t, "compute", "b"));
    // A pending async poll that is dropped must not swallow the message it was picked for.
    {
        let mut fut = a.poll_async();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let waiting_b = {
            let b = b.clone();
            thread::spawn(move || bodies(b.poll(LONG).unwrap()))
        };
        thread::sleep(Duration::from_millis(20));
        cast(&t, &Target::new("compute"), "once");
        drop(fut);
        assert_eq!(waiting_b.join().unwrap(), ["once"]);
    }
    let sender = {
        let t = t.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            cast(&t, &Target::new("compute"), "async");
        })
    };
    assert_eq!(bodies(block_on(a.poll_async()).unwrap()), ["async"]);
    sender.join().unwrap();
    a.stop();
    assert!(matches!(block_on(a.poll_async()).unwrap(), Polled::Closed));
}

#[test]
fn calls_get_their_reply_and_heartbeats() {
    let t = MemoryTransport::new();
    let listener = rpc(&t, "compute", "s");
    let mut receiver = block_on(t.call(
        &Target::new("compute"),
        Message::new("2+2"),
        &SendOptions::default(),
    ))
    .unwrap();
    let Polled::Messages(mut batch) = listener.poll(LONG).unwrap() else {
        panic!("expected the call")
    };
    let mut call = batch.pop().unwrap();
    assert!(call.is_call());
    call.heartbeat().unwrap();
    call.reply(Ok(Bytes::from_static(b"4"))).unwrap();
    drop(call);
    assert_eq!(receiver.recv_timeout(LONG), Ok(ReplyEvent::Heartbeat));
    assert_eq!(
        receiver.recv_timeout(LONG),
        Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"4"))))
    );
    assert_eq!(receiver.recv_timeout(LONG), Err(RecvError::Disconnected));
}

#[test]
fn a_call_dropped_without_reply_disconnects_the_caller() {
    let t = MemoryTransport::new();
    let listener = rpc(&t, "compute", "s");
    let mut receiver = block_on(t.call(
        &Target::new("compute"),
        Message::new("x"),
        &SendOptions::default(),
    ))
    .unwrap();
    drop(bodies(listener.poll(LONG).unwrap()));
    assert_eq!(receiver.recv_timeout(LONG), Err(RecvError::Disconnected));
}

#[test]
fn invalid_targets_are_typed_errors() {
    let t = MemoryTransport::new();
    let err = block_on(t.cast(
        &Target::default(),
        Message::new(""),
        &SendOptions::default(),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("a topic is required to send"),
        "{err}"
    );
    let err = block_on(t.call(
        &Target::new("t").with_fanout(true),
        Message::new(""),
        &SendOptions::default(),
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("a call cannot be used with fanout"),
        "{err}"
    );
    let err = t
        .listen(
            &Subscription::Rpc(Target::new("t")),
            &ListenOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("topic and server"), "{err}");
}

#[test]
fn transports_opened_on_one_url_share_a_bus_and_other_urls_do_not() {
    let server_side = messaging_transports::open("memory:///shared-bus-test").unwrap();
    let client_side = messaging_transports::open("memory:///shared-bus-test").unwrap();
    let other = messaging_transports::open("memory:///another-bus-test").unwrap();
    let listener = server_side
        .listen(
            &Subscription::Rpc(Target::new("t").with_server("s")),
            &ListenOptions::default(),
        )
        .unwrap();
    block_on(other.cast(
        &Target::new("t"),
        Message::new("other"),
        &SendOptions::default(),
    ))
    .unwrap();
    block_on(client_side.cast(
        &Target::new("t"),
        Message::new("same"),
        &SendOptions::default(),
    ))
    .unwrap();
    assert_eq!(drain(&*listener), ["same"]);
}

#[test]
fn unknown_schemes_and_bad_urls_are_typed_errors() {
    let err = messaging_transports::open("kafka://h").unwrap_err();
    assert!(
        err.to_string().contains("no transport for scheme `kafka`"),
        "{err}"
    );
    let err = messaging_transports::open("rabbit://u:pw@h:notaport/").unwrap_err();
    assert!(
        err.to_string().contains("the port is not a number"),
        "{err}"
    );
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[test]
fn cleanup_wakes_a_blocked_poll() {
    let t = MemoryTransport::new();
    let listener: Arc<dyn Listener> = Arc::from(rpc(&t, "compute", "s"));
    let poller = {
        let l = listener.clone();
        thread::spawn(move || matches!(l.poll(None).unwrap(), Polled::Closed))
    };
    thread::sleep(Duration::from_millis(20));
    listener.cleanup();
    assert!(poller.join().unwrap());
}

#[test]
fn batch_timeouts_too_long_to_represent_wait_for_a_full_batch() {
    let t = MemoryTransport::new();
    let listener = notifications(&t, "n", None, ListenOptions::batch(2, Some(Duration::MAX)));
    notify(&t, "n", "1");
    assert!(matches!(
        listener.poll(SHORT).unwrap(),
        Polled::Messages(_) | Polled::Idle
    ));
    notify(&t, "n", "2");
    notify(&t, "n", "3");
    let got = bodies(listener.poll(LONG).unwrap());
    assert!(!got.is_empty() && got.len() <= 2, "{got:?}");
}

#[test]
fn an_async_batch_is_handed_out_at_its_timeout() {
    let t = MemoryTransport::new();
    let listener = notifications(
        &t,
        "n",
        None,
        ListenOptions::batch(10, Some(Duration::from_millis(50))),
    );
    notify(&t, "n", "1");
    notify(&t, "n", "2");
    assert_eq!(bodies(block_on(listener.poll_async()).unwrap()), ["1", "2"]);
}

#[test]
fn bodies_over_max_message_size_are_refused_at_send() {
    let url = "memory:///max_size?max_message_size=1024";
    let transport =
        MemoryTransport::open(&messaging_core::TransportUrl::parse(url).unwrap()).unwrap();
    let listener = rpc(&transport, "sized", "s1");
    let target = Target::new("sized").with_server("s1");
    let send = |size: usize| {
        block_on(transport.cast(
            &target,
            Message::new(vec![b'x'; size]),
            &SendOptions::default(),
        ))
    };
    send(1024).expect("a body at the limit is sent");
    let err = send(1025).unwrap_err();
    assert!(
        matches!(
            err,
            messaging_core::TransportError::MessageTooLarge {
                size: 1025,
                limit: 1024
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
    assert!(
        block_on(transport.call(
            &target,
            Message::new(vec![0; 2048]),
            &SendOptions::default()
        ))
        .is_err()
    );
    assert!(
        block_on(transport.notify(
            &Target::new("sized"),
            Priority::Info,
            Message::new(vec![0; 2048])
        ))
        .is_err()
    );
    assert_eq!(
        drain(&*listener).len(),
        1,
        "only the body at the limit was delivered"
    );
}

#[test]
fn max_message_size_and_unknown_options_are_checked() {
    let open =
        |url: &str| MemoryTransport::open(&messaging_core::TransportUrl::parse(url).unwrap());
    assert!(
        open("memory:///x?max_message_size=0").is_ok(),
        "0 means no limit"
    );
    let err = open("memory:///x?max_message_size=lots")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`max_message_size` must be a whole number"),
        "{err}"
    );
    let err = open("memory:///x?max_mesage_size=10")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown option `max_mesage_size`"), "{err}");
}
