//! Passwords in `transport_url` and values of keys naming a password, secret, token or
//! credential never reach a log line, a `Debug` output or an error; what is ignored is
//! logged once, by name.

mod support;

use messaging_config::{Config, ConfigError};
use messaging_testkit::LogCapture;
use support::{Scratch, fixture};
use tracing::Level;

/// Every secret the fixtures and the scratch file hold.
const SECRETS: &[&str] = &[
    "Sup3r",
    "N0tify-Pa55",
    "K3ystone-Pa55",
    "Neutr0n-Pa55",
    "db-s3cret",
    "t0ken-value",
    "hunter2",
];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
    }
}

/// Everything the events say: messages and fields.
fn logged(logs: &LogCapture) -> String {
    logs.events()
        .iter()
        .map(|e| format!("{} {:?}\n", e.message, e.fields))
        .collect()
}

fn with_secrets() -> (Scratch, Config, LogCapture) {
    let scratch = Scratch::new("secrets");
    let extra = scratch.file(
        "conf.d/50-secrets.conf",
        "[database]\nconnection = mysql+pymysql://nova:db-s3cret@192.0.2.5/nova\n\
         [DEFAULT]\nauth_token = t0ken-value\nadmin_password = hunter2\n",
    );
    let (logs, _guard) = LogCapture::start();
    let config = Config::builder()
        .config_file(fixture("nova.conf"))
        .config_dir(extra.parent().unwrap())
        .load()
        .unwrap();
    config.rpc_transport_url().unwrap();
    config.notification_transport_url().unwrap();
    (scratch, config, logs)
}

#[test]
fn logs_name_what_is_ignored_once_each_and_never_a_value() {
    let (_scratch, _config, logs) = with_secrets();
    let text = logged(&logs);
    assert_clean("the log", &text);
    assert!(
        logs.events().iter().all(|e| e.level == Level::DEBUG),
        "{text}"
    );
    // One line per unknown section, whatever the number of its options.
    for section in [
        "api",
        "keystone_authtoken",
        "notifications",
        "libvirt",
        "database",
    ] {
        assert_eq!(
            logs.count(Level::DEBUG, &format!("ignoring section [{section}]")),
            1,
            "{section}: {text}"
        );
    }
    // One line per unknown option of a known section.
    for key in [
        "my_ip",
        "state_path",
        "debug",
        "enabled_apis",
        "auth_token",
        "admin_password",
    ] {
        assert_eq!(
            logs.count(
                Level::DEBUG,
                &format!("ignoring unknown option `{key}` in [DEFAULT]")
            ),
            1,
            "{key}: {text}"
        );
    }
    assert_eq!(
        logs.count(Level::DEBUG, "ignoring unknown option `transport_url`"),
        0
    );
    assert_eq!(
        logs.count(Level::DEBUG, "`rpc_conn_pool_size` has no effect"),
        2,
        "{text}"
    );
    // The resolved URLs are logged, passwords hidden.
    assert_eq!(
        logs.count(Level::DEBUG, "RPC transport URL resolved"),
        1,
        "{text}"
    );
    assert!(text.contains("rabbit://nova:***@192.0.2.10:5672"), "{text}");
    assert!(
        text.contains("rabbit://notify:***@192.0.2.20:5672/notifications"),
        "{text}"
    );
}

#[test]
fn debug_output_hides_every_secret() {
    let (_scratch, config, _logs) = with_secrets();
    assert_clean("Config's Debug", &format!("{config:?}"));
    assert_clean("Config's Debug", &format!("{config:#?}"));
    assert_clean(
        "NotificationSettings' Debug",
        &format!("{:?}", config.notification_settings()),
    );
    assert_clean(
        "a URL's Debug",
        &format!("{:?}", config.rpc_transport_url().unwrap()),
    );
    assert_clean(
        "a URL's Display",
        &config.notification_transport_url().unwrap().to_string(),
    );
    for (group, key) in [
        ("DEFAULT", "transport_url"),
        ("DEFAULT", "admin_password"),
        ("DEFAULT", "auth_token"),
        ("keystone_authtoken", "password"),
    ] {
        let value = config.value(group, key).unwrap().unwrap();
        assert_clean(&format!("{key}'s Debug"), &format!("{value:?}"));
        assert!(SECRETS.iter().any(|s| value.as_str().contains(s)), "{key}");
    }
    let shown = config.value("DEFAULT", "my_ip").unwrap().unwrap();
    assert!(
        format!("{shown:?}").contains("192.0.2.31"),
        "not secret: shown"
    );
    let builder = Config::builder()
        .config_file(fixture("nova.conf"))
        .set_override("DEFAULT", "transport_url", "rabbit://u:hunter2@h/")
        .set_override("keystone_authtoken", "password", "K3ystone-Pa55");
    assert_clean("ConfigBuilder's Debug", &format!("{builder:?}"));
    assert!(format!("{builder:?}").contains("nova.conf"));
}

fn error_of(text: &str) -> ConfigError {
    let scratch = Scratch::new("secret-errors");
    let file = scratch.file("s.conf", text);
    match Config::from_files([&file]) {
        Err(error) => error,
        Ok(config) => config
            .value("DEFAULT", "admin_password")
            .err()
            .or_else(|| config.rpc_transport_url().err())
            .expect("an error"),
    }
}

#[test]
fn errors_never_quote_a_secret() {
    for (text, says) in [
        // A `$` in a password that should have been `$$`: the reference is part of it.
        (
            "[DEFAULT]\ntransport_url = rabbit://u:hun$ter2@h/\n",
            "a `$` in this value (hidden",
        ),
        (
            "[DEFAULT]\nadmin_password = hun${ter2}\n",
            "a `$` in this value (hidden",
        ),
        // Not a URL: there is no telling which part is the password.
        (
            "[DEFAULT]\ntransport_url = rabbit://u:hunter2@h:port/\n",
            "not a transport URL",
        ),
        (
            "[DEFAULT]\ntransport_url = rabbit//u:hunter2@h/\n",
            "not a transport URL",
        ),
        // A line the parser refuses is never quoted.
        ("[DEFAULT]\nadmin_password hunter2\n", "no `=` or `:`"),
        ("hunter2 = 1\n", "before any section"),
        // A transport refusing a section value, the URL holding a password.
        (
            "[DEFAULT]\ntransport_url = rabbit://u:hunter2@h/\n[oslo_messaging_rabbit]\nheartbeat_rate = x\n",
            "`heartbeat_rate`",
        ),
        (
            "[DEFAULT]\ntransport_url = nats://u:hunter2@h/?prefetch=0\n",
            "`prefetch`",
        ),
    ] {
        let error = error_of(text);
        let message = error.to_string();
        assert!(message.contains(says), "{text:?}: {message}");
        assert_clean("an error", &message);
        assert_clean("an error's Debug", &format!("{error:?}"));
    }
}

#[test]
fn the_notification_bus_password_stays_hidden_when_its_open_fails() {
    let scratch = Scratch::new("secret-open");
    let file = scratch.file(
        "s.conf",
        "[oslo_messaging_notifications]\ntransport_url = carrier://u:hunter2@h/\n",
    );
    let config = Config::from_files([&file]).unwrap();
    let error = messaging_config::notification_transport(&config)
        .map(drop)
        .unwrap_err();
    assert!(error.to_string().contains("carrier"), "{error}");
    assert_clean("an error", &error.to_string());
    assert_clean("an error's Debug", &format!("{error:?}"));
}
