//! The notification consumers' acknowledgement wait (`notification_ack_wait`) on NATS:
//! a notification a listener holds is never redelivered while it holds it (it is told
//! to JetStream as in progress every third of the wait), and one a listener lost is
//! redelivered after the wait, not after five minutes. Runs when
//! `MESSAGING_TEST_NATS_URL` is set; each test keeps its notifications in a stream of
//! its own, removed at the end.

mod nats_admin;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_lite::StreamExt;
use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::{Context, Priority, Target, ids};
use messaging_executors::BlockingExecutor;
use messaging_testkit::{ServerThread, with_options, within};
use nats_admin::{Streams, poolless_consumer, stream_name};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Value {
    n: u64,
}

fn url() -> Option<String> {
    let Ok(url) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return None;
    };
    Some(url)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &ids::hex_id()[..10])
}

/// A listener of `topic`'s info notifications, one at a time (the blocking executor),
/// each handled for `handling`; records what it handled, and when.
fn listener(
    url: &str,
    topic: &str,
    handling: Duration,
    handled: &Arc<Mutex<Vec<(u64, Instant)>>>,
) -> ServerThread {
    let handled = handled.clone();
    let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification<Value>| {
        handled.lock().unwrap().push((n.payload.n, Instant::now()));
        std::thread::sleep(handling);
        NotificationResult::Handled
    });
    let listener = messaging_core::notify::listener(
        messaging_transports::open(url).unwrap(),
        vec![Target::new(topic)],
        vec![endpoint],
        ListenerOptions::new(),
        BlockingExecutor::new(),
    )
    .build()
    .unwrap();
    ServerThread::spawn(listener).unwrap()
}

/// Three notifications handled one after another for 2.5 s each, with a one-second
/// acknowledgement wait: each waits (pulled, in the listener's buffer) or runs for
/// longer than the wait, and none is redelivered. Before, the wait was fixed (300 s)
/// and nothing told JetStream that a notification was in progress: with a wait this
/// short, each would have been redelivered every second.
#[test]
fn notifications_a_listener_holds_longer_than_the_ack_wait_are_not_redelivered() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "held notifications", move || {
        let prefix = unique("held");
        let streams = Streams::of(&url, std::slice::from_ref(&prefix));
        let url = with_options(
            &url,
            &[
                ("subject_prefix", &prefix),
                ("notification_ack_wait", "1"),
                ("consumer_ttl", "600"),
            ],
        );
        let topic = unique("held");
        let handled = Arc::new(Mutex::new(Vec::new()));
        let server = listener(&url, &topic, Duration::from_millis(2500), &handled);
        let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "held")
            .with_topics([topic.as_str()]);
        for n in 0..3 {
            block_on(notifier.info(&Context::new(), "held", &Value { n })).unwrap();
        }
        let started = Instant::now();
        while handled.lock().unwrap().len() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "not handled: {:?}",
                handled.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Time for a redelivery to show, had there been one.
        std::thread::sleep(Duration::from_secs(3));
        server.stop_and_wait().unwrap();
        let numbers: Vec<u64> = handled.lock().unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [0, 1, 2], "each handled once");
        let consumer = streams
            .admin()
            .consumer(&stream_name(&prefix), &poolless_consumer(&topic, "info"))
            .expect("the consumer");
        assert_eq!(consumer.config.ack_wait, Duration::from_secs(1));
        assert_eq!(consumer.num_redelivered, 0, "{consumer:?}");
        assert_eq!(consumer.num_ack_pending, 0, "{consumer:?}");
        eprintln!(
            "measured: 3 notifications held 2.5 to 7.5 s with a 1 s acknowledgement wait, \
             handled once each in {:.1?}",
            started.elapsed()
        );
    });
}

/// A notification delivered to a listener that never settles it (as when a
/// listener's connection drops with the notification on its way, or its process
/// dies) is redelivered to the next listener after `notification_ack_wait` (2 s here).
/// Before, after 300 s.
#[test]
fn a_notification_a_listener_lost_is_redelivered_after_the_ack_wait() {
    let Some(url) = url() else { return };
    within(Duration::from_secs(60), "lost notification", move || {
        let prefix = unique("lost");
        let _streams = Streams::of(&url, std::slice::from_ref(&prefix));
        let address = url
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("nats://")
            .to_owned();
        let url = with_options(
            &url,
            &[
                ("subject_prefix", &prefix),
                ("notification_ack_wait", "2"),
                ("consumer_ttl", "600"),
            ],
        );
        let topic = unique("lost");
        let notifier = Notifier::new(messaging_transports::open(&url).unwrap(), "lost")
            .with_topics([topic.as_str()]);
        block_on(notifier.info(&Context::new(), "lost", &Value { n: 7 })).unwrap();
        // The listener that loses it: takes it from the pool-less consumer the notifier
        // made, and never settles it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let taken = runtime.block_on(async {
            let client = async_nats::connect(address).await.unwrap();
            let consumer: jetstream::consumer::PullConsumer = jetstream::new(client)
                .get_stream(stream_name(&prefix))
                .await
                .unwrap()
                .get_consumer(&poolless_consumer(&topic, "info"))
                .await
                .unwrap();
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .unwrap();
            let message = batch.next().await.expect("a delivery").unwrap();
            assert_eq!(message.info().unwrap().delivered, 1);
            Instant::now()
        });
        let handled = Arc::new(Mutex::new(Vec::new()));
        let server = listener(&url, &topic, Duration::ZERO, &handled);
        while handled.lock().unwrap().is_empty() {
            assert!(
                taken.elapsed() < Duration::from_secs(20),
                "not redelivered within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = handled.lock().unwrap()[0].1 - taken;
        server.stop_and_wait().unwrap();
        assert_eq!(handled.lock().unwrap()[0].0, 7);
        assert!(
            after >= Duration::from_millis(1800) && after < Duration::from_secs(6),
            "redelivered {after:?} after it was taken (acknowledgement wait 2 s)"
        );
        eprintln!("measured: a notification its listener lost was redelivered after {after:?}");
    });
}
