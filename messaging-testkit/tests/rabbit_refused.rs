//! Permanent refusals by RabbitMQ (issue 9, item 8): wrong credentials, unknown
//! virtual hosts, access refused on a resource and failed preconditions fail every
//! operation at once with `TransportError::Refused`, log at most one line, and never
//! show the password. Before: `cast` took 26 s and `notify`
//! 56 s, retrying, with 40–70 log lines. Runs when `MESSAGING_TEST_RABBIT_URL` is set
//! (a `rabbit://guest:guest@host:port/` URL). A test binary of its own: it counts every
//! log line of the process.

use std::time::{Duration, Instant};

use messaging_core::dispatch::block_on;
use messaging_core::notify::{Notifier, NotifyError};
use messaging_core::rpc::{self, Endpoint, RpcClient, RpcError};
use messaging_core::{Context, ServerError, Target, TransportError, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use tracing::Level;

const PASSWORD: &str = "S3cret-but-wrong";

fn transport_error(what: &str, error: Option<TransportError>) -> TransportError {
    error.unwrap_or_else(|| panic!("{what}: not a transport error"))
}

/// Runs cast, call, notify and a server's start against `url`; returns each one's
/// error and how long it took.
fn operations(url: &str) -> Vec<(&'static str, TransportError, Duration)> {
    let topic = format!("refused_{}", &ids::hex_id()[..10]);
    let open = || messaging_transports::open(url).unwrap();
    let mut results = Vec::new();
    let mut time = |what: &'static str, op: &dyn Fn() -> Option<TransportError>| {
        let started = Instant::now();
        let error = transport_error(what, op());
        results.push((what, error, started.elapsed()));
    };
    time(
        "cast",
        &|| match RpcClient::new(open(), Target::new(topic.clone())).cast_blocking(
            &Context::new(),
            "m",
            &(),
        ) {
            Err(RpcError::Transport(e)) => Some(e),
            other => panic!("cast: {other:?}"),
        },
    );
    time(
        "call",
        &|| match RpcClient::new(open(), Target::new(topic.clone()))
            .with_timeout(Duration::from_secs(30))
            .call_blocking::<_, ()>(&Context::new(), "m", &())
        {
            Err(RpcError::Transport(e)) => Some(e),
            other => panic!("call: {other:?}"),
        },
    );
    time("notify", &|| match block_on(
        Notifier::new(open(), "p")
            .with_topics([topic.as_str()])
            .info(&Context::new(), "e", &()),
    ) {
        Err(NotifyError::Transport(e)) => Some(e),
        other => panic!("notify: {other:?}"),
    });
    time("server start", &|| {
        let server = rpc::server(
            open(),
            Target::new(topic.clone()).with_server("s1"),
            vec![Endpoint::new()],
            ThreadPoolExecutor::new(),
        )
        .unwrap()
        .build()
        .unwrap();
        match ServerThread::spawn(server) {
            Err(ServerError::Listen { source, .. }) => Some(source),
            Err(other) => panic!("server start: {other}"),
            Ok(_) => panic!("server start: it started"),
        }
    });
    results
}

#[test]
fn wrong_credentials_unknown_virtual_hosts_and_refused_resources_fail_at_once() {
    let Ok(url) = std::env::var("MESSAGING_TEST_RABBIT_URL") else {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return;
    };
    let Some(rest) = url.strip_prefix("rabbit://guest:guest@") else {
        eprintln!("skipped: the test needs a rabbit://guest:guest@host:port/ URL");
        return;
    };
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    let logs = LogCapture::global();
    within(Duration::from_secs(120), "refusals", move || {
        // An exchange declared durable (by a service with `amqp_durable_queues`), which
        // a service without the option cannot declare again: PRECONDITION_FAILED.
        let durable_exchange = "messaging_tests_durable";
        let durable = format!(
            "{url}?amqp_durable_queues=true&control_exchange={durable_exchange}&queue_ttl=60"
        );
        let _ = RpcClient::new(
            messaging_transports::open(&durable).unwrap(),
            Target::new("refused_setup"),
        )
        .with_retry(0)
        .cast_blocking(&Context::new(), "m", &());
        let cases = [
            (
                "wrong password",
                format!("rabbit://guest:{PASSWORD}@{host}/"),
            ),
            (
                "unknown virtual host",
                format!(
                    "rabbit://guest:guest@{host}/no_such_vhost_{}",
                    &ids::hex_id()[..8]
                ),
            ),
            (
                "access refused on a resource (a reserved exchange name)",
                format!("{url}?control_exchange=amq.messaging_refused"),
            ),
            (
                "precondition failed (an exchange declared durable elsewhere)",
                format!("{url}?control_exchange={durable_exchange}"),
            ),
        ];
        for (case, url) in cases {
            let before = logs.events().len();
            for (what, error, took) in operations(&url) {
                let text = error.to_string();
                eprintln!("measured: {case}: {what} failed after {took:?}: {text}");
                assert!(
                    matches!(error, TransportError::Refused { .. }),
                    "{case}: {what}: {error:?}"
                );
                assert!(error.is_permanent());
                assert!(
                    took < Duration::from_secs(3),
                    "{case}: {what} took {took:?}"
                );
                assert!(!text.contains(PASSWORD), "{case}: {what}: {text}");
            }
            let events = logs.events();
            let lines: Vec<_> = events[before..]
                .iter()
                .filter(|e| e.level <= Level::INFO)
                .collect();
            eprintln!(
                "measured: {case}: {} log lines at info or above for the four operations: {lines:?}",
                lines.len()
            );
            assert!(lines.len() <= 4, "{case}: at most one line per operation");
            assert!(
                events.iter().all(|e| !e.message.contains(PASSWORD)
                    && e.fields.iter().all(|(_, v)| !v.contains(PASSWORD))),
                "no log line shows the password"
            );
        }
    });
}
