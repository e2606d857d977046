//! Reading oslo.config files: the fixtures' values, oslo's order of files and dirs,
//! which value wins (overrides, newer files, the URL's query, the transport section,
//! `[DEFAULT]`), and the INI rules seen through whole files.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use messaging_config::{Config, NotificationSettings, Origin, Source};
use support::{Scratch, fixture};

fn nova() -> Config {
    Config::from_files([fixture("nova.conf")]).unwrap()
}

fn nova_with_dir() -> Config {
    Config::builder()
        .config_file(fixture("nova.conf"))
        .config_dir(fixture("nova.conf.d"))
        .load()
        .unwrap()
}

fn one_file(text: &str) -> (Scratch, Config) {
    let scratch = Scratch::new("files");
    let file = scratch.file("service.conf", text);
    let config = Config::from_files([file]).unwrap();
    (scratch, config)
}

fn option<'a>(url: &'a messaging_core::TransportUrl, key: &str) -> Option<&'a str> {
    url.option(key)
}

#[test]
fn nova_conf_gives_the_typed_messaging_options() {
    let config = nova();
    assert_eq!(config.files(), [fixture("nova.conf")]);
    assert_eq!(config.control_exchange(), "nova");
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(180));
    assert_eq!(config.executor_thread_pool_size(), 32);
    assert!(config.rpc_ping_enabled());
    let url = config.transport_url().unwrap();
    assert_eq!(url.scheme(), "rabbit");
    assert_eq!(url.virtual_host(), Some("nova"));
    assert_eq!(url.hosts().len(), 2);
    for host in url.hosts() {
        assert_eq!(host.username.as_deref(), Some("nova"));
        // `$$` in the file is one `$`.
        assert_eq!(host.password.as_ref().unwrap().expose(), "Sup3r$ecret");
    }
    let n = config.notification_settings();
    assert_eq!(n.drivers, ["messagingv2", "log"]);
    assert_eq!(n.topics, ["notifications", "versioned_notifications"]);
    assert_eq!(n.retry, Some(3));
    assert_eq!(n.routing_config, None);
    assert!(n.is_enabled());
    let bus = n.transport_url.as_ref().unwrap();
    assert_eq!(
        bus.to_string(),
        "rabbit://notify:***@192.0.2.20:5672/notifications"
    );
}

#[test]
fn the_rabbit_section_becomes_the_urls_options() {
    let config = nova();
    let url = config.rpc_transport_url().unwrap();
    let mut expected: Vec<(&str, &str)> = vec![
        ("amqp_durable_queues", "true"),
        ("control_exchange", "nova"),
        ("direct_mandatory_flag", "On"),
        ("heartbeat_rate", "2"),
        ("heartbeat_timeout_threshold", "30"),
        ("kombu_reconnect_delay", "0.5"),
        ("rabbit_interval_max", "20"),
        ("rabbit_qos_prefetch_count", "50"),
        ("rabbit_quorum_queue", "True"),
        ("rabbit_retry_backoff", "4"),
        ("rabbit_retry_interval", "2"),
        ("rabbit_transient_queues_ttl", "600"),
    ];
    expected.sort();
    let got: Vec<(&str, &str)> = url
        .options()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // rpc_conn_pool_size is oslo's, and means nothing here: not passed on.
    assert_eq!(got, expected);
    assert_eq!(
        url.hosts()[0].password.as_ref().unwrap().expose(),
        "Sup3r$ecret"
    );
    // The notification bus gets the same section, on its own URL.
    let bus = config.notification_transport_url().unwrap();
    assert_eq!(bus.virtual_host(), Some("notifications"));
    assert_eq!(option(&bus, "heartbeat_rate"), Some("2"));
    assert_eq!(option(&bus, "control_exchange"), Some("nova"));
}

#[test]
fn a_config_dir_adds_its_conf_files_sorted_by_name_after_the_file_before_it() {
    let config = nova_with_dir();
    let dir = fixture("nova.conf.d");
    assert_eq!(
        config.files(),
        [
            fixture("nova.conf"),
            dir.join("05-audit.conf"),
            dir.join("10-timeouts.conf"),
            dir.join("20-timeouts.conf"),
        ],
        "hidden files and files not named *.conf are not read"
    );
    // 20- is read after 10-, which is read after nova.conf.
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(300));
    assert_eq!(
        config.origin("DEFAULT", "rpc_response_timeout"),
        Origin::File {
            path: dir.join("20-timeouts.conf"),
            line: 3
        }
    );
    assert_eq!(
        option(
            &config.rpc_transport_url().unwrap(),
            "kombu_reconnect_delay"
        ),
        Some("1.5")
    );
    // driver is multi-valued: every file's values, in file order.
    let n = config.notification_settings();
    assert_eq!(n.drivers, ["messagingv2", "log", "routing"]);
    assert_eq!(
        n.routing_config,
        Some(PathBuf::from("/etc/nova/notification-routing.yaml"))
    );
}

#[test]
fn files_and_dirs_are_read_in_the_order_given() {
    let scratch = Scratch::new("order");
    let last = scratch.file(
        "last.conf",
        "[DEFAULT]\nrpc_response_timeout = 7\n[oslo_messaging_notifications]\ndriver = noop\n",
    );
    let dir_last = Config::builder()
        .sources([
            Source::File(last.clone()),
            Source::File(fixture("nova.conf")),
            Source::Dir(fixture("nova.conf.d")),
        ])
        .load()
        .unwrap();
    assert_eq!(dir_last.rpc_response_timeout(), Duration::from_secs(300));
    assert_eq!(
        dir_last.notification_settings().drivers,
        ["noop", "messagingv2", "log", "routing"]
    );
    let file_last = Config::builder()
        .config_file(fixture("nova.conf"))
        .config_dir(fixture("nova.conf.d"))
        .config_file(&last)
        .load()
        .unwrap();
    assert_eq!(file_last.rpc_response_timeout(), Duration::from_secs(7));
    assert_eq!(
        file_last.notification_settings().drivers,
        ["messagingv2", "log", "routing", "noop"]
    );
    assert_eq!(file_last.files().last(), Some(&last));
}

#[test]
fn overrides_win_over_every_file_and_defaults_come_last() {
    let config = Config::builder()
        .config_file(fixture("nova.conf"))
        .config_dir(fixture("nova.conf.d"))
        .set_override("DEFAULT", "rpc_response_timeout", "5")
        .set_override("DEFAULT", "transport_url", "memory:///override")
        .set_override("oslo_messaging_notifications", "driver", "log")
        .set_override("oslo_messaging_notifications", "topics", "audit")
        .load()
        .unwrap();
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(5));
    assert_eq!(
        config.origin("DEFAULT", "rpc_response_timeout"),
        Origin::Override
    );
    assert_eq!(
        config.transport_url().unwrap().to_string(),
        "memory:///override"
    );
    assert_eq!(config.notification_settings().drivers, ["log"]);
    assert_eq!(config.notification_settings().topics, ["audit"]);
    // Untouched options keep the files' values; unset ones their defaults.
    assert_eq!(config.control_exchange(), "nova");
    let bare = Config::builder().load().unwrap();
    assert_eq!(bare.rpc_response_timeout(), Duration::from_secs(60));
    assert_eq!(bare.executor_thread_pool_size(), 64);
    assert!(!bare.rpc_ping_enabled());
    assert_eq!(bare.control_exchange(), "openstack");
    assert_eq!(bare.notification_settings(), &{
        let n = one_file("[DEFAULT]\n").1;
        n.notification_settings().clone()
    });
    let defaults: &NotificationSettings = bare.notification_settings();
    assert!(defaults.drivers.is_empty() && !defaults.is_enabled());
    assert_eq!(defaults.topics, ["notifications"]);
    assert_eq!(defaults.retry, None);
    assert_eq!(
        bare.origin("DEFAULT", "rpc_response_timeout"),
        Origin::Default
    );
}

#[test]
fn the_urls_query_wins_over_the_section_and_older_names_still_count() {
    let config = Config::from_files([fixture("neutron.conf")]).unwrap();
    // rpc_thread_pool_size is executor_thread_pool_size's older name.
    assert_eq!(config.executor_thread_pool_size(), 16);
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(120));
    assert!(!config.rpc_ping_enabled());
    assert_eq!(config.control_exchange(), "openstack");
    let url = config.rpc_transport_url().unwrap();
    // heartbeat_rate = 2 in [OSLO_MESSAGING_RABBIT], 4 in the URL: the URL wins.
    assert_eq!(option(&url, "heartbeat_rate"), Some("4"));
    assert_eq!(option(&url, "kombu_reconnect_timeout"), Some("30"));
    assert_eq!(option(&url, "kombu_failover_strategy"), Some("shuffle"));
    assert_eq!(option(&url, "ssl"), Some("false"));
    assert_eq!(option(&url, "rabbit_ha_queues"), Some("no"));
    // control_exchange is not set anywhere: the transport's default applies.
    assert_eq!(option(&url, "control_exchange"), None);
    // No notification URL: the RPC one (oslo's fallback).
    assert_eq!(config.notification_transport_url().unwrap(), url);
    assert_eq!(
        config.notification_settings().transport_url.as_ref(),
        config.transport_url()
    );
}

#[test]
fn a_lower_case_default_section_is_another_section() {
    let config = Config::from_files([fixture("neutron.conf")]).unwrap();
    assert_eq!(
        config.transport_url().unwrap().to_string(),
        "rabbit://neutron:***@192.0.2.10:5672/neutron?heartbeat_rate=4"
    );
    assert_eq!(
        config
            .value("default", "rpc_response_timeout")
            .unwrap()
            .unwrap()
            .as_str(),
        "1"
    );
}

#[test]
fn control_exchange_comes_from_the_url_then_the_section_then_default() {
    let base = "[DEFAULT]\ncontrol_exchange = nova\ntransport_url = rabbit://h/";
    let (_s, c) = one_file(&format!("{base}\n"));
    assert_eq!(
        option(&c.rpc_transport_url().unwrap(), "control_exchange"),
        Some("nova")
    );
    let (_s, c) = one_file(&format!(
        "{base}\n[oslo_messaging_rabbit]\ncontrol_exchange = cells\n"
    ));
    assert_eq!(
        option(&c.rpc_transport_url().unwrap(), "control_exchange"),
        Some("cells")
    );
    let (_s, c) = one_file(&format!(
        "{base}?control_exchange=query\n[oslo_messaging_rabbit]\ncontrol_exchange = cells\n"
    ));
    assert_eq!(
        option(&c.rpc_transport_url().unwrap(), "control_exchange"),
        Some("query")
    );
}

#[test]
fn a_url_option_hides_the_sections_value_under_another_name() {
    let (_s, c) = one_file(
        "[DEFAULT]\ntransport_url = rabbit://h/?heartbeat=10\n\
         [oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 60\nprefetch = 5\nrabbit_qos_prefetch_count = 7\n",
    );
    let url = c.rpc_transport_url().unwrap();
    assert_eq!(option(&url, "heartbeat"), Some("10"));
    assert_eq!(option(&url, "heartbeat_timeout_threshold"), None);
    // Two names of one option in one file: oslo's own name wins.
    assert_eq!(option(&url, "rabbit_qos_prefetch_count"), Some("7"));
    assert_eq!(option(&url, "prefetch"), None);
}

#[test]
fn sections_apply_to_their_own_transport_only() {
    let rabbit_and_nats = "[oslo_messaging_rabbit]\nheartbeat_rate = 2\n\
                           [oslo_messaging_nats]\nsubject_prefix = cells.one\ntls = False\nprefetch = 10\n";
    let (_s, c) = one_file(&format!(
        "[DEFAULT]\ntransport_url = memory:///m\ncontrol_exchange = nova\n{rabbit_and_nats}"
    ));
    let url = c.rpc_transport_url().unwrap();
    assert_eq!(url.to_string(), "memory:///m?control_exchange=nova");
    let (_s, c) = one_file(&format!(
        "[DEFAULT]\ntransport_url = nats://127.0.0.1:4222\n{rabbit_and_nats}"
    ));
    let url = c.rpc_transport_url().unwrap();
    assert_eq!(
        url.to_string(),
        "nats://127.0.0.1:4222?prefetch=10&subject_prefix=cells.one&tls=False"
    );
}

#[test]
fn the_notification_bus_has_its_own_url_and_falls_back_to_default() {
    let (_s, c) = one_file(
        "[DEFAULT]\ntransport_url = memory:///rpc\n\
         [oslo_messaging_notifications]\ntransport_url = memory:///notify\n",
    );
    assert_eq!(c.rpc_transport_url().unwrap().virtual_host(), Some("rpc"));
    assert_eq!(
        c.notification_transport_url().unwrap().virtual_host(),
        Some("notify")
    );
    // An empty value is no URL: the fallback applies.
    let (_s, c) = one_file(
        "[DEFAULT]\ntransport_url = memory:///rpc\n[oslo_messaging_notifications]\ntransport_url =\n",
    );
    assert_eq!(
        c.notification_transport_url().unwrap().virtual_host(),
        Some("rpc")
    );
    // A notification URL alone: no RPC transport.
    let (_s, c) = one_file("[oslo_messaging_notifications]\ntransport_url = memory:///n\n");
    assert_eq!(
        c.notification_transport_url().unwrap().virtual_host(),
        Some("n")
    );
    let error = c.rpc_transport_url().unwrap_err();
    assert!(
        matches!(error, messaging_config::ConfigError::NoTransportUrl { .. }),
        "{error}"
    );
}

#[test]
fn ini_rules_seen_through_a_whole_file() {
    let (_s, c) = one_file(
        "# comment\n\
         ; another\n\
         [DEFAULT]\n\
         transport_url: \"memory:///quoted\"\n\
         rpc_response_timeout = 10\n\
         rpc_response_timeout = 20\n\
         rpc_ping_enabled = ON\n\
         service_name = value # not a comment\n\
         \n\
         [Oslo_Messaging_Notifications]\n\
         topics = a,\n\
         \x20 b ,\n\
         \tc,\n\
         retry = -1\n\
         routing_config =\n\
         driver = log\n\
         driver =\n",
    );
    assert_eq!(c.transport_url().unwrap().virtual_host(), Some("quoted"));
    assert_eq!(c.rpc_response_timeout(), Duration::from_secs(20));
    assert!(c.rpc_ping_enabled());
    assert_eq!(
        c.value("DEFAULT", "service_name")
            .unwrap()
            .unwrap()
            .as_str(),
        "value # not a comment"
    );
    let n = c.notification_settings();
    assert_eq!(n.topics, ["a", "b", "c"]);
    assert_eq!(n.retry, None);
    assert_eq!(n.routing_config, None);
    assert_eq!(n.drivers, ["log"], "an empty driver line adds none");
    let all: Vec<String> = c
        .values("oslo_messaging_notifications", "driver")
        .unwrap()
        .iter()
        .map(|v| v.as_str().to_owned())
        .collect();
    assert_eq!(all, ["log", ""]);
}

#[test]
fn booleans_take_every_oslo_spelling() {
    for (text, expected) in [
        ("true", true),
        ("TRUE", true),
        ("yes", true),
        ("On", true),
        ("1", true),
        ("false", false),
        ("No", false),
        ("off", false),
        ("0", false),
    ] {
        let (_s, c) = one_file(&format!("[DEFAULT]\nrpc_ping_enabled = {text}\n"));
        assert_eq!(c.rpc_ping_enabled(), expected, "{text}");
    }
}

#[test]
fn an_empty_number_means_the_default() {
    let (_s, c) = one_file("[DEFAULT]\nrpc_response_timeout =\nexecutor_thread_pool_size = \n");
    assert_eq!(c.rpc_response_timeout(), Duration::from_secs(60));
    assert_eq!(c.executor_thread_pool_size(), 64);
    let (_s, c) = one_file("[DEFAULT]\nrpc_response_timeout = 1_000\n");
    assert_eq!(c.rpc_response_timeout(), Duration::from_secs(1000));
}

#[test]
fn older_option_names_count_by_file_and_lose_within_one() {
    let scratch = Scratch::new("deprecated");
    let first = scratch.file("a.conf", "[DEFAULT]\nexecutor_thread_pool_size = 10\n");
    let second = scratch.file("b.conf", "[DEFAULT]\nrpc_thread_pool_size = 20\n");
    let both = scratch.file(
        "c.conf",
        "[DEFAULT]\nexecutor_thread_pool_size = 30\nrpc_thread_pool_size = 40\n",
    );
    let c = Config::from_files([&first, &second]).unwrap();
    assert_eq!(c.executor_thread_pool_size(), 20);
    let c = Config::from_files([&second, &first]).unwrap();
    assert_eq!(c.executor_thread_pool_size(), 10);
    let c = Config::from_files([&both]).unwrap();
    assert_eq!(c.executor_thread_pool_size(), 30);
}

#[test]
fn dollar_references_are_substituted() {
    let config = nova();
    assert_eq!(
        config
            .value("DEFAULT", "instances_path")
            .unwrap()
            .unwrap()
            .as_str(),
        "/var/lib/nova/instances"
    );
    let (_s, c) = one_file(
        "[DEFAULT]\nbroker = 127.0.0.1\nexchange = nova\n\
         transport_url = memory:///$broker\ncontrol_exchange = ${exchange}_cells\n\
         [oslo_messaging_notifications]\ntopics = ${DEFAULT.exchange}.notifications, literal$$\n",
    );
    assert_eq!(c.transport_url().unwrap().virtual_host(), Some("127.0.0.1"));
    assert_eq!(c.control_exchange(), "nova_cells");
    assert_eq!(
        c.notification_settings().topics,
        ["nova.notifications", "literal$"]
    );
}

#[test]
fn a_config_with_memory_urls_opens_both_transports() {
    use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient};
    use messaging_core::{Context, Target};

    let (_s, c) = one_file(
        "[DEFAULT]\ntransport_url = memory:///files-rpc\ncontrol_exchange = nova\nrpc_response_timeout = 5\n\
         [oslo_messaging_notifications]\ntransport_url = memory:///files-notify\n",
    );
    let transport = messaging_config::rpc_transport(&c).unwrap();
    let notifications = messaging_config::notification_transport(&c).unwrap();
    assert_eq!(transport.name(), "memory");
    assert_eq!(notifications.name(), "memory");
    let endpoint = Endpoint::new().method("echo", |_: Context, v: String| Ok::<_, HandlerError>(v));
    // The server's target names no exchange: the control exchange from the file applies,
    // and the client, naming "nova" explicitly, reaches it.
    let server = rpc::server(
        transport.clone(),
        Target::new("t").with_server("s"),
        vec![endpoint],
        messaging_executors::ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    server.start().unwrap();
    let client = RpcClient::new(transport, Target::new("t").with_exchange("nova"))
        .with_timeout(c.rpc_response_timeout());
    let echoed: String = client
        .call_blocking(&Context::new(), "echo", &"hi".to_owned())
        .unwrap();
    assert_eq!(echoed, "hi");
    server.stop().unwrap();
    server.wait().unwrap();
}

/// `notifier` builds what `[oslo_messaging_notifications]` says: nova's two drivers,
/// topics and retry; oslo's empty default sends nothing; the routing driver reads its
/// table, and without `routing_config` is refused.
#[test]
fn the_notifier_has_the_sections_drivers_topics_retry_and_routing_table() {
    use messaging_config::{ConfigError, notifier};
    use messaging_core::notify::{NotifyDriver, Retry};

    let memory = || messaging_transports::open("memory://").unwrap();
    let nova = notifier(&nova(), memory(), "compute.host1").unwrap();
    assert_eq!(
        nova.drivers(),
        [NotifyDriver::MessagingV2, NotifyDriver::Log]
    );
    assert_eq!(nova.topics(), ["notifications", "versioned_notifications"]);
    assert_eq!(nova.retry(), Some(Retry::Limit(3)));
    assert!(nova.routing().is_none());

    let (_scratch, empty) = one_file("[DEFAULT]\ntransport_url = memory://\n");
    let silent = notifier(&empty, memory(), "p").unwrap();
    assert!(silent.drivers().is_empty() && !silent.is_enabled());

    let scratch = Scratch::new("routing");
    let table = scratch.file(
        "routing.yaml",
        "group_1:\n  log:\n    accepted_priorities: [error, critical]\n",
    );
    let routed = scratch.file(
        "routed.conf",
        &format!(
            "[oslo_messaging_notifications]\ndriver = routing\nrouting_config = {}\n",
            table.display()
        ),
    );
    let routed = notifier(&Config::from_files([routed]).unwrap(), memory(), "p").unwrap();
    let table = routed.routing().expect("the routing table");
    assert_eq!(
        table.drivers_for("any.event", messaging_core::Priority::Error),
        [NotifyDriver::Log]
    );
    assert!(
        table
            .drivers_for("any.event", messaging_core::Priority::Info)
            .is_empty()
    );

    let (_scratch, untabled) = one_file("[oslo_messaging_notifications]\ndriver = routing\n");
    let err = notifier(&untabled, memory(), "p").unwrap_err();
    assert!(matches!(err, ConfigError::NoRoutingConfig), "{err}");
    let (_scratch, missing) = one_file(
        "[oslo_messaging_notifications]\ndriver = routing\nrouting_config = /nonexistent/r.yaml\n",
    );
    let err = notifier(&missing, memory(), "p").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/r.yaml"), "{err}");
}
