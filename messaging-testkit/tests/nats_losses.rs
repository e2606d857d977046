//! No silent loss on NATS (issue 12, item 4), against the server in
//! `MESSAGING_TEST_NATS_URL` (skipped without it): a deliberately slow RPC listener
//! under a flood of casts drops what exceeds `max_pending`, warns with the counts, and
//! `NatsTransport::stats()` accounts for every cast (sent − handled = dropped); a
//! notification listener with the smallest `max_pending` loses nothing (its pulls ask
//! only for what fits). Each test prints what it measured.

mod nats_admin;

use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::Notifier;
use messaging_core::{
    Context, ListenOptions, Message, Polled, Priority, SendOptions, Subscription, Target,
    Transport, TransportUrl, ids,
};
use messaging_testkit::{LogCapture, with_options, within};
use messaging_transports::nats::NatsTransport;
use nats_admin::Streams;
use tracing::Level;

fn url() -> Option<String> {
    match std::env::var("MESSAGING_TEST_NATS_URL") {
        Ok(url) => Some(with_options(&url, &[("consumer_ttl", "600")])),
        Err(_) => {
            eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
            None
        }
    }
}

/// A captured event's field, if it has it.
fn field<'a>(event: &'a messaging_testkit::CapturedEvent, name: &str) -> Option<&'a str> {
    event
        .fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn unique(what: &str) -> String {
    format!("{what}_{}", &ids::hex_id()[..10])
}

fn open(url: &str) -> NatsTransport {
    NatsTransport::open(&TransportUrl::parse(url).unwrap()).unwrap()
}

/// Takes one message every `pause` until none arrives for `idle`; returns how many.
fn drain_slowly(listener: &dyn messaging_core::Listener, pause: Duration, idle: Duration) -> u64 {
    let mut handled = 0;
    loop {
        match listener.poll(Some(idle)).unwrap() {
            Polled::Messages(messages) => {
                for mut message in messages {
                    let _ = message.acknowledge();
                    handled += 1;
                }
                std::thread::sleep(pause);
            }
            Polled::Idle => return handled,
            Polled::Closed => panic!("the listener closed"),
        }
    }
}

#[test]
fn a_slow_listener_under_a_flood_warns_and_every_lost_cast_is_counted() {
    let Some(base) = url() else { return };
    let logs = LogCapture::global();
    within(Duration::from_secs(180), "flood", move || {
        const SENT: u64 = 5000;
        const MAX_PENDING: &str = "17";
        let topic = unique("flood");
        let target = Target::new(topic.clone()).with_server("s1");
        let listening = open(&with_options(
            &base,
            &[("prefetch", "4"), ("max_pending", MAX_PENDING)],
        ));
        let listener = listening
            .listen(
                &Subscription::Rpc(target.clone()),
                &ListenOptions::default(),
            )
            .unwrap();
        assert_eq!(listening.stats(), Default::default());

        // The flood: every cast is handed to the client (and flushed when the sender
        // is dropped) before the listener takes its first message.
        let started = Instant::now();
        let sender = open(&base);
        for n in 0..SENT {
            block_on(sender.cast(
                &target,
                Message::new(format!("m{n}")),
                &SendOptions::default(),
            ))
            .unwrap();
        }
        drop(sender);
        let sending = started.elapsed();
        // A listener that takes a message every 2 ms, far slower than the flood.
        let handled = drain_slowly(
            listener.as_ref(),
            Duration::from_millis(2),
            Duration::from_secs(2),
        );
        let stats = listening.stats();
        eprintln!("measured: {SENT} casts sent in {sending:?}, {handled} handled, stats {stats:?}");
        assert!(handled > 0, "the listener handled nothing");
        assert!(
            stats.dropped_pending > 0,
            "a flood must overflow: {stats:?}"
        );
        assert_eq!(
            SENT - handled,
            stats.dropped(),
            "every cast not handled is counted as dropped: {stats:?}"
        );
        assert_eq!(stats.dropped_on_stop, 0);
        assert_eq!(stats.rejected, 0);
        assert!(stats.warnings >= 1, "{stats:?}");

        listener.cleanup();
        drop(listener);
        drop(listening); // reports what was not reported yet
        let warnings: Vec<_> = logs
            .events()
            .into_iter()
            .filter(|e| {
                e.level == Level::WARN
                    && e.message.contains("NATS dropped messages")
                    && field(e, "max_pending") == Some(MAX_PENDING)
            })
            .collect();
        let count_in = |e: &messaging_testkit::CapturedEvent, name: &str| -> u64 {
            field(e, name).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let reported: u64 = warnings.iter().map(|e| count_in(e, "dropped")).sum();
        eprintln!(
            "measured: {} warning(s) reporting {reported} drops: {:?}",
            warnings.len(),
            warnings
                .iter()
                .map(|e| e.fields.clone())
                .collect::<Vec<_>>()
        );
        // One per burst so far, and one more for the rest when the transport went.
        let count = warnings.len() as u64;
        assert!(
            (stats.warnings..=stats.warnings + 1).contains(&count),
            "{count} warnings, {stats:?}"
        );
        assert_eq!(
            reported,
            stats.dropped_pending + stats.dropped_by_client,
            "the warnings add up to the counts"
        );
        assert!(
            warnings
                .iter()
                .any(|e| field(e, "listeners").is_some_and(|l| l.contains(&topic))),
            "a warning names the listener"
        );
    });
}

#[test]
fn notifications_are_never_dropped_whatever_max_pending() {
    let Some(base) = url() else { return };
    LogCapture::global();
    within(Duration::from_secs(120), "notifications", move || {
        const SENT: u64 = 300;
        let topic = unique("pending_notify");
        let prefix = unique("pn");
        let _streams = Streams::of(&base, std::slice::from_ref(&prefix));
        let url = with_options(
            &base,
            &[
                ("subject_prefix", &prefix),
                ("prefetch", "100"),
                ("max_pending", "1"),
            ],
        );
        let listening = open(&url);
        let subscription = Subscription::Notifications {
            targets: vec![Target::new(topic.clone())],
            priorities: vec![Priority::Info],
            pool: None,
        };
        let listener = listening
            .listen(&subscription, &ListenOptions::default())
            .unwrap();
        let notifier =
            Notifier::new(std::sync::Arc::new(open(&url)), "losses").with_topics([topic.as_str()]);
        for n in 0..SENT {
            block_on(notifier.info(&Context::new(), "flood", &n)).unwrap();
        }
        let started = Instant::now();
        let handled = drain_slowly(listener.as_ref(), Duration::ZERO, Duration::from_secs(3));
        let stats = listening.stats();
        eprintln!(
            "measured: {handled}/{SENT} notifications with max_pending=1 in {:?}, stats {stats:?}",
            started.elapsed()
        );
        assert_eq!(handled, SENT);
        assert_eq!(stats.dropped(), 0, "{stats:?}");
        listener.cleanup();
    });
}
