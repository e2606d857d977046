//! Notifications from contexts and routing tables a careless caller builds: tokens
//! nested inside other context values or of odd types, a routing table that names
//! drivers the notifier does not list (or the routing driver itself). No token
//! leaves; what the table chooses is sent, once per driver. Memory transport.

use std::time::Duration;

use messaging_core::dispatch::block_on;
use messaging_core::notify::{Notifier, NotifyDriver, Route, RoutingTable};
use messaging_core::{Context, IncomingMessage, Polled, Priority, Subscription, Target, ids};
use messaging_testkit::{LogCapture, within};
use serde_json::json;
use tracing::Level;

const LIMIT: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &ids::hex_id()[..10])
}

/// Sends one `info` notification with `context` through `notifier`'s transport and
/// returns what a listener of a pool of its own received, exactly as carried.
fn carried(
    notifier: impl FnOnce(std::sync::Arc<dyn messaging_core::Transport>, &str) -> Notifier,
    context: Context,
    expected: usize,
) -> Vec<IncomingMessage> {
    let transport =
        messaging_transports::open(&format!("memory:///{}", unique("hostile"))).unwrap();
    let topic = unique("hostile");
    let raw = transport
        .listen(
            &Subscription::Notifications {
                targets: vec![Target::new(topic.clone())],
                priorities: vec![Priority::Info],
                pool: Some("raw".to_owned()),
            },
            &Default::default(),
        )
        .unwrap();
    let notifier = notifier(transport.clone(), &topic);
    block_on(notifier.info(&context, "compute.instance.update", &json!({"n": 1}))).unwrap();
    let mut got = Vec::new();
    while got.len() < expected {
        match raw.poll(Some(Duration::from_secs(5))).unwrap() {
            Polled::Messages(batch) => got.extend(batch),
            other => panic!(
                "the raw listener got {other:?} after {} messages",
                got.len()
            ),
        }
    }
    // Nothing more than expected.
    if let Polled::Messages(batch) = raw.poll(Some(Duration::from_millis(200))).unwrap() {
        panic!("{} more notifications than {expected}", batch.len());
    }
    raw.stop();
    raw.cleanup();
    got
}

#[test]
fn tokens_nested_in_other_context_values_or_of_odd_types_never_leave() {
    within(LIMIT, "nested tokens", || {
        let secrets: Vec<String> = (0..6)
            .map(|i| format!("tok{i}-{}", ids::hex_id()))
            .collect();
        let context: Context = [
            ("user", json!("alice")),
            ("auth_token", json!({"id": secrets[0], "expires": 3})),
            (
                "request",
                json!({"auth_token": secrets[1], "service_token": secrets[2], "id": "req-1"}),
            ),
            (
                "history",
                json!([{"auth_token_info": {"token": secrets[3]}}, [{"auth_token": secrets[4]}]]),
            ),
            ("service_token", json!([secrets[5]])),
        ]
        .into_iter()
        .collect();
        let (logs, _guard) = LogCapture::start();
        let messages = carried(
            |transport, topic| {
                Notifier::new(transport, "compute.host1")
                    .with_topics([topic])
                    .with_drivers([NotifyDriver::MessagingV2, NotifyDriver::Log])
            },
            context,
            1,
        );
        let message = messages[0].message();
        let sent = serde_json::to_string(&message.context).unwrap();
        for secret in &secrets {
            assert!(!sent.contains(secret.as_str()), "{secret} left in {sent}");
            for event in logs.events() {
                let text = format!("{} {:?}", event.message, event.fields);
                assert!(!text.contains(secret.as_str()), "{secret} logged: {text}");
            }
        }
        // The rest is kept: the user, the request's own id, the list's shape.
        let context = &message.context;
        assert_eq!(context.get("user"), Some(&json!("alice")));
        assert_eq!(context.get("auth_token"), Some(&json!(null)));
        assert_eq!(
            context.get("request"),
            Some(&json!({"auth_token": null, "id": "req-1"}))
        );
        assert_eq!(
            context.get("history"),
            Some(&json!([{}, [{"auth_token": null}]]))
        );
        assert_eq!(context.get("service_token"), None);
    });
}

#[test]
fn a_routing_table_naming_drivers_not_listed_sends_through_them_once_each() {
    within(LIMIT, "routing", || {
        let (logs, _guard) = LogCapture::start();
        let table = RoutingTable::new()
            .group(
                "a",
                [
                    Route::new(NotifyDriver::Messaging).accepted_priorities(["info"]),
                    Route::new(NotifyDriver::Log).accepted_events(["compute.*"]),
                    // Never taken: the routing driver does not route to itself.
                    Route::new(NotifyDriver::Routing),
                ],
            )
            .group(
                "b",
                [
                    Route::new(NotifyDriver::Messaging),
                    Route::new(NotifyDriver::MessagingV2).accepted_events(["nothing.*"]),
                ],
            );
        // Only `routing` is listed; the table names messaging and log.
        let messages = carried(
            |transport, topic| {
                Notifier::new(transport, "compute.host1")
                    .with_topics([topic])
                    .with_driver(NotifyDriver::Routing)
                    .with_routing(table)
            },
            Context::new(),
            1,
        );
        assert_eq!(messages.len(), 1);
        assert_eq!(
            logs.count(Level::INFO, "notification"),
            1,
            "the log driver, once"
        );
        // A table that names only the routing driver sends nothing.
        let messages = carried(
            |transport, topic| {
                Notifier::new(transport, "compute.host1")
                    .with_topics([topic])
                    .with_driver(NotifyDriver::Routing)
                    .with_routing(
                        RoutingTable::new().group("self", [Route::new(NotifyDriver::Routing)]),
                    )
            },
            Context::new(),
            0,
        );
        assert!(messages.is_empty());
    });
}

#[test]
fn the_log_driver_never_writes_an_unmasked_payload_however_deep() {
    within(LIMIT, "deep payload", || {
        let password = format!("pw-{}", ids::hex_id());
        // Deeper than serde_json reads back (128 levels), a secret beside it.
        let deep = (0..200).fold(json!({"adminPass": password}), |v, _| json!([v]));
        let payload = json!({"deep": deep, "admin_password": password, "n": 1});
        let transport = messaging_transports::open("memory://").unwrap();
        let notifier = Notifier::new(transport, "compute.host1").with_driver(NotifyDriver::Log);
        let (logs, _guard) = LogCapture::start();
        block_on(notifier.info(&Context::new(), "compute.instance.update", &payload)).unwrap();
        let events = logs.events();
        assert_eq!(events.len(), 1, "{events:?}");
        let text = format!("{} {:?}", events[0].message, events[0].fields);
        assert!(
            !text.contains(password.as_str()),
            "the password was logged: {text}"
        );
        assert!(text.contains("not shown"), "{text}");
        assert!(text.contains("compute.instance.update"), "{text}");
    });
}
