//! The fixtures open real transports: nova.conf's RPC bus and its separate notification
//! bus (two vhosts of the test RabbitMQ, made and removed here), neutron.conf's single
//! bus, and a NATS bus whose `[oslo_messaging_nats]` section takes effect.
//!
//! Runs when `MESSAGING_TEST_RABBIT_URL` (and `rabbitmqctl`, as root) or
//! `MESSAGING_TEST_NATS_URL` are set; otherwise each test says it was skipped.

mod support;

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use messaging_config::{Config, notification_transport, rpc_transport};
use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult, Notifier,
};
use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient};
use messaging_core::{Context, Priority, Target, TransportUrl, ids};
use messaging_executors::{BlockingExecutor, ThreadPoolExecutor};
use support::{Scratch, fixture};

/// Long enough for a broker on this machine, short enough that a failure is quick.
const LIMIT: Duration = Duration::from_secs(30);

fn rabbit() -> Option<TransportUrl> {
    match std::env::var("MESSAGING_TEST_RABBIT_URL") {
        Ok(url) => Some(
            url.parse()
                .expect("MESSAGING_TEST_RABBIT_URL is a transport URL"),
        ),
        Err(_) => {
            eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
            None
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(["-q"])
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A vhost of the test broker, with the test user's permissions; deleted when dropped
/// (with everything declared in it), even when the test fails.
struct Vhost(String);

impl Vhost {
    fn new(prefix: &str, user: &str) -> Vhost {
        let name = format!("{prefix}_{}", &ids::hex_id()[..10]);
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Vhost(name);
        rabbitmqctl(&["set_permissions", "-p", &vhost.0, user, ".*", ".*", ".*"]);
        vhost
    }

    /// `rabbitmqctl list_<what>` in this vhost: one line per item.
    fn list(&self, what: &str, columns: &[&str]) -> Vec<String> {
        let mut args = vec![what, "-p", &self.0];
        args.extend(columns);
        rabbitmqctl(&args).lines().map(str::to_owned).collect()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.0])
            .output();
    }
}

/// `broker` (credentials, host, port) on `vhost`, written for a config file (`$` as
/// `$$`).
fn on_vhost(broker: &TransportUrl, vhost: &str) -> String {
    let host = &broker.hosts()[0];
    let user = host.username.as_deref().unwrap_or("guest");
    let password = host.password.as_ref().map_or("guest", |p| p.expose());
    format!(
        "rabbit://{user}:{password}@{}:{}/{vhost}",
        host.hostname.as_deref().unwrap_or("127.0.0.1"),
        host.port.unwrap_or(5672)
    )
    .replace('$', "$$")
}

fn echo_server(
    transport: std::sync::Arc<dyn messaging_core::Transport>,
    target: Target,
    pool: usize,
) -> messaging_core::Server {
    let endpoint = Endpoint::new().method("echo", |_: Context, v: String| Ok::<_, HandlerError>(v));
    let server = rpc::server(
        transport,
        target,
        vec![endpoint],
        ThreadPoolExecutor::new().with_max_workers(pool),
    )
    .unwrap()
    .build()
    .unwrap();
    server.start().unwrap();
    server
}

/// A listener for `topics` on the blocking executor, served on a thread; what it
/// receives (event types) arrives on the channel.
fn listen(
    transport: std::sync::Arc<dyn messaging_core::Transport>,
    topics: &[String],
) -> (
    messaging_core::Server,
    std::thread::JoinHandle<()>,
    mpsc::Receiver<String>,
) {
    let (tx, rx) = mpsc::channel();
    let endpoint =
        NotificationEndpoint::new().on(Priority::Info, move |n: Notification<String>| {
            let _ = tx.send(format!("{}:{}", n.event_type, n.payload));
            NotificationResult::Handled
        });
    let listener = messaging_core::notify::listener(
        transport,
        topics.iter().map(|t| Target::new(t.as_str())).collect(),
        vec![endpoint],
        ListenerOptions::new(),
        BlockingExecutor::new(),
    )
    .build()
    .unwrap();
    listener.start().unwrap();
    let serving = {
        let listener = listener.clone();
        std::thread::spawn(move || {
            let _ = listener.execute();
        })
    };
    (listener, serving, rx)
}

#[test]
fn nova_conf_opens_its_rpc_bus_and_its_separate_notification_bus() {
    let Some(broker) = rabbit() else { return };
    let user = broker.hosts()[0]
        .username
        .clone()
        .unwrap_or_else(|| "guest".into());
    let rpc_vhost = Vhost::new("cfg_rpc", &user);
    let notify_vhost = Vhost::new("cfg_notify", &user);
    let scratch = Scratch::new("brokers");
    // The test's broker, in a file read after nova.conf and its conf.d: later wins.
    let local = scratch.file(
        "99-test-broker.conf",
        &format!(
            "[DEFAULT]\ntransport_url = {}\n[oslo_messaging_notifications]\ntransport_url = {}\n",
            on_vhost(&broker, &rpc_vhost.0),
            on_vhost(&broker, &notify_vhost.0)
        ),
    );
    let config = Config::builder()
        .config_file(fixture("nova.conf"))
        .config_dir(fixture("nova.conf.d"))
        .config_file(&local)
        .load()
        .unwrap();
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(300));
    let settings = config.notification_settings().clone();

    let topic = format!("cfg_compute_{}", &ids::hex_id()[..8]);
    let rpc = rpc_transport(&config).unwrap();
    let server = echo_server(
        rpc.clone(),
        Target::new(topic.as_str()).with_server("compute-1"),
        config.executor_thread_pool_size(),
    );
    let client = RpcClient::new(rpc.clone(), Target::new(topic.as_str()))
        .with_timeout(config.rpc_response_timeout().min(LIMIT));
    let echoed: String = client
        .call_blocking(&Context::new(), "echo", &"from nova.conf".to_owned())
        .unwrap();
    assert_eq!(echoed, "from nova.conf");
    // The section reached the transport: the control exchange is nova's, and the topic
    // queue is a quorum queue (rabbit_quorum_queue = True).
    let exchanges = rpc_vhost.list("list_exchanges", &["name"]);
    assert!(exchanges.iter().any(|e| e == "nova"), "{exchanges:?}");
    let queues = rpc_vhost.list("list_queues", &["name", "type"]);
    assert!(
        queues.iter().any(|q| q == &format!("{topic}\tquorum")),
        "{queues:?}"
    );

    let notify = notification_transport(&config).unwrap();
    let (listener, serving, received) = listen(notify.clone(), &settings.topics);
    let notifier = Notifier::new(notify.clone(), "compute-1").with_topics(settings.topics.clone());
    block_on(notifier.info(
        &Context::new(),
        "compute.instance.create.end",
        &"vm-1".to_owned(),
    ))
    .unwrap();
    let mut got = vec![
        received.recv_timeout(LIMIT).unwrap(),
        received.recv_timeout(LIMIT).unwrap(),
    ];
    got.sort();
    assert_eq!(
        got,
        [
            "compute.instance.create.end:vm-1",
            "compute.instance.create.end:vm-1"
        ],
        "one copy per topic of [oslo_messaging_notifications] topics"
    );
    // They went over the notification bus, not the RPC one.
    let on_notify = notify_vhost.list("list_queues", &["name"]);
    for topic in &settings.topics {
        assert!(
            on_notify.contains(&format!("{topic}.info")),
            "{on_notify:?}"
        );
    }
    let on_rpc = rpc_vhost.list("list_queues", &["name"]);
    assert!(
        !on_rpc.iter().any(|q| q.ends_with(".info")),
        "no notification queue on the RPC bus: {on_rpc:?}"
    );

    for s in [&server, &listener] {
        s.stop().unwrap();
        s.wait().unwrap();
    }
    serving.join().unwrap();
    drop((client, notifier, rpc, notify, server, listener));
}

#[test]
fn neutron_conf_sends_notifications_over_its_rpc_bus() {
    let Some(broker) = rabbit() else { return };
    let user = broker.hosts()[0]
        .username
        .clone()
        .unwrap_or_else(|| "guest".into());
    let vhost = Vhost::new("cfg_neutron", &user);
    let config = Config::builder()
        .config_file(fixture("neutron.conf"))
        // As a command-line flag would: the test broker, with the fixture's query.
        .set_override(
            "DEFAULT",
            "transport_url",
            format!("{}?heartbeat_rate=4", on_vhost(&broker, &vhost.0)),
        )
        .load()
        .unwrap();
    let url = config.notification_transport_url().unwrap();
    assert_eq!(url, config.rpc_transport_url().unwrap());
    assert_eq!(url.option("kombu_failover_strategy"), Some("shuffle"));
    let notify = notification_transport(&config).unwrap();
    let topics = &config.notification_settings().topics;
    let (listener, serving, received) = listen(notify.clone(), topics);
    let notifier = Notifier::new(notify.clone(), "network-1").with_topics(topics.clone());
    block_on(notifier.info(&Context::new(), "port.create.end", &"p-1".to_owned())).unwrap();
    assert_eq!(received.recv_timeout(LIMIT).unwrap(), "port.create.end:p-1");
    assert!(
        vhost
            .list("list_queues", &["name"])
            .contains(&"notifications.info".to_owned())
    );
    listener.stop().unwrap();
    listener.wait().unwrap();
    serving.join().unwrap();
}

#[test]
fn the_nats_section_sets_the_subjects_the_transport_uses() {
    let Ok(nats) = std::env::var("MESSAGING_TEST_NATS_URL") else {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return;
    };
    let prefix = format!("cfg{}", &ids::hex_id()[..8]);
    let scratch = Scratch::new("nats");
    let file = scratch.file(
        "service.conf",
        &format!(
            "[DEFAULT]\ntransport_url = {nats}\ncontrol_exchange = cells\n\
             [oslo_messaging_nats]\nsubject_prefix = {prefix}\ncodec = json\ntls = False\n"
        ),
    );
    let config = Config::from_files([&file]).unwrap();
    let url = config.rpc_transport_url().unwrap();
    assert_eq!(url.option("subject_prefix"), Some(prefix.as_str()));
    assert_eq!(url.option("control_exchange"), Some("cells"));
    let transport = rpc_transport(&config).unwrap();
    let server = echo_server(transport.clone(), Target::new("t").with_server("s"), 4);
    let client = RpcClient::new(transport, Target::new("t")).with_timeout(LIMIT);
    let echoed: String = client
        .call_blocking(&Context::new(), "echo", &"over nats".to_owned())
        .unwrap();
    assert_eq!(echoed, "over nats");
    // A client on the default prefix does not reach the server: the section took effect.
    let elsewhere =
        messaging_transports::open(&format!("{nats}?codec=json&control_exchange=cells")).unwrap();
    let lost = RpcClient::new(elsewhere, Target::new("t"))
        .with_timeout(Duration::from_millis(500))
        .call_blocking::<_, String>(&Context::new(), "echo", &"lost".to_owned())
        .unwrap_err();
    assert!(lost.is_timeout(), "{lost}");
    server.stop().unwrap();
    server.wait().unwrap();
}
