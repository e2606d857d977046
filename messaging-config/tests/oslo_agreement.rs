//! messaging-config reads config files as the real oslo.config does: the same files
//! are loaded by `tests/oslo_config_dump.py` with oslo.config 10.7.0 and oslo.messaging
//! 18.3.1's options (the RabbitMQ driver's view through `ConfigOptsProxy`, so the URL's
//! query wins as it does there), and every value is compared with ours.
//!
//! Runs when `MESSAGING_TEST_OSLO_PYTHON` is the venv's python
//! (`interop/setup-venv.sh`); otherwise it says it was skipped.

mod support;

use std::process::Command;

use messaging_config::{Config, Source};
use messaging_core::TransportUrl;
use serde_json::{Value, json};
use support::{Scratch, fixture};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oslo_config_dump.py");

fn python() -> Option<String> {
    match std::env::var("MESSAGING_TEST_OSLO_PYTHON") {
        Ok(python) => Some(python),
        Err(_) => {
            eprintln!("skipped: MESSAGING_TEST_OSLO_PYTHON is not set");
            None
        }
    }
}

/// What oslo.config makes of `sources` (and the extra `group.key` values).
fn oslo(python: &str, sources: &[Source], extra: &[&str]) -> Value {
    let mut command = Command::new(python);
    command.arg(SCRIPT).env("PYTHONWARNINGS", "ignore");
    for source in sources {
        match source {
            Source::File(path) => command.arg("--config-file").arg(path),
            Source::Dir(path) => command.arg("--config-dir").arg(path),
        };
    }
    for name in extra {
        command.args(["--value", name]);
    }
    let output = command.output().expect("runs the venv's python");
    assert!(
        output.status.success(),
        "oslo_config_dump.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

/// oslo's name for an option the transports also know by another.
fn oslo_name(key: &str) -> &str {
    match key {
        "kombu_reconnect_timeout" => "kombu_missing_consumer_retry_timeout",
        "heartbeat" => "heartbeat_timeout_threshold",
        "prefetch" => "rabbit_qos_prefetch_count",
        other => other,
    }
}

/// A URL as the script prints it: scheme, hosts with credentials, virtual host.
fn url_json(url: &TransportUrl) -> Value {
    let hosts: Vec<Value> = url
        .hosts()
        .iter()
        .map(|h| {
            json!([
                h.hostname,
                h.port,
                h.username,
                h.password.as_ref().map(|p| p.expose())
            ])
        })
        .collect();
    json!({"transport": url.scheme(), "virtual_host": url.virtual_host(), "hosts": hosts})
}

/// Compares what we pass the transport (strings) with oslo's typed values, option by
/// option; oslo's pool options are checked but not passed here.
fn compare_options(what: &str, ours: &TransportUrl, theirs: &Value) {
    let theirs = theirs.as_object().unwrap();
    let mut expected: Vec<&str> = theirs
        .keys()
        .map(String::as_str)
        .filter(|k| !["rpc_conn_pool_size", "conn_pool_min_size", "conn_pool_ttl"].contains(k))
        .collect();
    expected.sort();
    let mut got: Vec<&str> = ours
        .options()
        .keys()
        .map(|k| oslo_name(k))
        .filter(|k| *k != "control_exchange")
        .collect();
    got.sort();
    assert_eq!(got, expected, "{what}: the options set");
    for (key, text) in ours.options() {
        let Some(value) = theirs.get(oslo_name(key)) else {
            continue;
        };
        let same = match value {
            Value::Bool(b) => {
                let lower = text.to_ascii_lowercase();
                let ours = ["true", "1", "on", "yes"].contains(&lower.as_str());
                assert!(ours || ["false", "0", "off", "no"].contains(&lower.as_str()));
                ours == *b
            }
            Value::Number(n) => text.parse::<f64>().ok() == n.as_f64(),
            Value::String(s) => text == s,
            other => panic!("{what}: {key}: unexpected {other}"),
        };
        assert!(same, "{what}: {key}: ours `{text}`, oslo's {value}");
    }
}

fn compare(python: &str, sources: Vec<Source>, extra: &[&str]) {
    let theirs = oslo(python, &sources, extra);
    let config = Config::builder().sources(sources.clone()).load().unwrap();
    let n = config.notification_settings();
    let ours = json!({
        "DEFAULT": {
            "control_exchange": config.control_exchange(),
            "rpc_response_timeout": config.rpc_response_timeout().as_secs(),
            "executor_thread_pool_size": config.executor_thread_pool_size(),
            "rpc_ping_enabled": config.rpc_ping_enabled(),
        },
        "notifications": {
            "driver": n.drivers,
            "topics": n.topics,
            "retry": n.retry.map_or(-1, i64::from),
            "routing_config": n.routing_config.as_ref().map_or(String::new(), |p| p.display().to_string()),
        },
    });
    let what = format!("{sources:?}");
    assert_eq!(ours["DEFAULT"], theirs["DEFAULT"], "{what}");
    assert_eq!(ours["notifications"], theirs["notifications"], "{what}");
    for (purpose, url) in [
        ("rpc", config.rpc_transport_url().unwrap()),
        ("notification", config.notification_transport_url().unwrap()),
    ] {
        let mut their_url = theirs[purpose].clone();
        let options = their_url
            .as_object_mut()
            .unwrap()
            .remove("options")
            .unwrap();
        assert_eq!(url_json(&url), their_url, "{what}: {purpose} URL");
        compare_options(&format!("{what}: {purpose}"), &url, &options);
    }
    for name in extra {
        let (group, key) = name.split_once('.').unwrap();
        let value = config
            .value(group, key)
            .unwrap()
            .map(|v| v.as_str().to_owned());
        assert_eq!(
            Value::from(value),
            theirs["values"][*name],
            "{what}: {name}"
        );
    }
}

#[test]
fn nova_conf_and_its_conf_d_read_as_oslo_reads_them() {
    let Some(python) = python() else { return };
    compare(
        &python,
        vec![
            Source::File(fixture("nova.conf")),
            Source::Dir(fixture("nova.conf.d")),
        ],
        &[
            "DEFAULT.state_path",
            "DEFAULT.instances_path",
            "DEFAULT.my_ip",
            "keystone_authtoken.username",
        ],
    );
    compare(&python, vec![Source::File(fixture("nova.conf"))], &[]);
}

#[test]
fn neutron_conf_reads_as_oslo_reads_it() {
    let Some(python) = python() else { return };
    compare(
        &python,
        vec![Source::File(fixture("neutron.conf"))],
        &["DEFAULT.core_plugin", "agent.root_helper"],
    );
}

#[test]
fn the_ini_rules_agree_with_oslo_config() {
    let Some(python) = python() else { return };
    let scratch = Scratch::new("oslo-rules");
    let first = scratch.file(
        "a.conf",
        "# a comment\n\
         ; another\n\
         [DEFAULT]\n\
         transport_url: 'rabbit://u:p\\$1$$x@h1:5673,h2/vh?heartbeat_rate=9'\n\
         control_exchange = \"quoted\"\n\
         rpc_response_timeout = 10\n\
         rpc_response_timeout = 20\n\
         rpc_ping_enabled = On\n\
         extra = x # not a comment ; nor this\n\
         spaced   :   a value: with colons  \n\
         multi = first\n\
         \x20 second\n\
         \tthird\n\
         \n\
         [Oslo_Messaging_Rabbit]\n\
         heartbeat_rate: 3\n\
         rabbit_retry_interval =\n\
         \x20   7\n\
         kombu_failover_strategy = shuffle\n\
         amqp_auto_delete = YES\n\
         [oslo_messaging_notifications]\n\
         driver = messaging\n\
         topics = a,\n\
         \x20 b,\n\
         [default]\n\
         rpc_response_timeout = 99\n",
    );
    let second = scratch.file(
        "b.conf",
        "[DEFAULT]\n\
         rpc_response_timeout = 30\n\
         rpc_thread_pool_size = 8\n\
         [OSLO_MESSAGING_NOTIFICATIONS]\n\
         driver = log\n\
         retry = 0\n\
         transport_url = rabbit://n:$${a}@h3/\n\
         [oslo_messaging_rabbit]\n\
         heartbeat_rate = 5\n\
         rabbit_retry_backoff = 0\n",
    );
    let extra = ["DEFAULT.extra", "DEFAULT.spaced", "DEFAULT.multi"];
    compare(
        &python,
        vec![Source::File(first.clone()), Source::File(second.clone())],
        &extra,
    );
    compare(
        &python,
        vec![Source::File(second), Source::File(first)],
        &extra,
    );
    compare(&python, vec![Source::Dir(scratch.0.clone())], &extra);
}
