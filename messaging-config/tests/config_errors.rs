//! Every error names the file and line (and the section and key) at fault, is typed,
//! and says what is wrong; transport options get the transport's own bounds and words.

mod support;

use std::path::Path;

use messaging_config::{Config, ConfigError, Origin};
use support::{Scratch, fixture};

/// Loads `text` as one file and returns the error, with the file's path.
fn load_error(text: &str) -> (Scratch, std::path::PathBuf, ConfigError) {
    let scratch = Scratch::new("errors");
    let file = scratch.file("bad.conf", text);
    let error = Config::from_files([&file]).unwrap_err();
    (scratch, file, error)
}

/// Loads `text` (which must load) and resolves the RPC transport URL: its error.
fn rpc_error(text: &str) -> (Scratch, std::path::PathBuf, ConfigError) {
    let scratch = Scratch::new("errors");
    let file = scratch.file("bad.conf", text);
    let config = Config::from_files([&file]).unwrap();
    let error = config.rpc_transport_url().unwrap_err();
    (scratch, file, error)
}

/// Asserts `error` is about `key` of `section` at `file`:`line`, saying `says`.
fn assert_at(error: &ConfigError, file: &Path, line: usize, section: &str, key: &str, says: &str) {
    let text = error.to_string();
    assert_eq!(error.location(), Some((file, line)), "{text}");
    assert_eq!(error.option(), Some((section, key)), "{text}");
    let prefix = format!("{}:{line}: [{section}] {key}: ", file.display());
    assert!(
        text.starts_with(&prefix),
        "{text}\nexpected prefix {prefix}"
    );
    assert!(text.contains(says), "{text}\nexpected {says:?}");
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    for (text, line, says) in [
        ("[DEFAULT\n", 1, "invalid section (must end with `]`)"),
        ("[DEFAULT]\n[]\n", 2, "empty section name"),
        (
            "[DEFAULT]\na = 1\n\n  b\n",
            4,
            "unexpected continuation line",
        ),
        ("  a = 1\n", 1, "unexpected continuation line"),
        (
            "# header\n\na = 1\n[DEFAULT]\n",
            3,
            "an assignment before any section",
        ),
        (
            "[DEFAULT]\njust words\n",
            2,
            "no `=` or `:` in an assignment",
        ),
        ("[DEFAULT]\n= 1\n", 2, "key cannot be empty"),
        ("\u{feff}[DEFAULT]\n", 1, "byte order mark"),
    ] {
        let (_s, file, error) = load_error(text);
        assert!(
            matches!(&error, ConfigError::Syntax { line: l, .. } if *l == line),
            "{text:?}: {error:?}"
        );
        assert_eq!(error.location(), Some((file.as_path(), line)));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}:{line}: ", file.display())) && message.contains(says),
            "{text:?}: {message}"
        );
    }
}

#[test]
fn a_file_not_in_utf8_is_an_error_at_its_line() {
    let scratch = Scratch::new("utf8");
    let file = scratch.path("latin1.conf");
    std::fs::write(&file, b"[DEFAULT]\n# caf\xe9\n").unwrap();
    let error = Config::from_files([&file]).unwrap_err();
    assert_eq!(error.location(), Some((file.as_path(), 2)), "{error}");
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

#[test]
fn missing_files_are_reported_together_and_a_missing_dir_at_once() {
    let scratch = Scratch::new("missing");
    let (a, b) = (scratch.path("a.conf"), scratch.path("b.conf"));
    let error = Config::builder()
        .config_file(&a)
        .config_file(fixture("nova.conf"))
        .config_file(&b)
        .load()
        .unwrap_err();
    match &error {
        ConfigError::FilesNotFound { paths } => assert_eq!(paths, &[a.clone(), b.clone()]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!("config file not found: {}, {}", a.display(), b.display())
    );
    let dir = scratch.path("conf.d");
    let error = Config::builder().config_dir(&dir).load().unwrap_err();
    assert!(
        matches!(&error, ConfigError::DirNotFound { path } if *path == dir),
        "{error}"
    );
    // A directory named like a config file is not readable as one.
    std::fs::create_dir_all(dir.join("sub.conf")).unwrap();
    let error = Config::builder().config_dir(&dir).load().unwrap_err();
    assert!(
        matches!(&error, ConfigError::Unreadable { path, .. } if *path == dir.join("sub.conf")),
        "{error}"
    );
}

#[test]
fn bad_messaging_values_name_file_line_section_and_key() {
    for (text, line, section, key, says) in [
        (
            "[DEFAULT]\nrpc_response_timeout = soon\n",
            2,
            "DEFAULT",
            "rpc_response_timeout",
            "must be a whole number, got `soon`",
        ),
        (
            "[DEFAULT]\n\nrpc_response_timeout = -5\n",
            3,
            "DEFAULT",
            "rpc_response_timeout",
            "must be from 0 to 31536000, got `-5`",
        ),
        (
            "[DEFAULT]\nexecutor_thread_pool_size = 0\n",
            2,
            "DEFAULT",
            "executor_thread_pool_size",
            "must be from 1 to 65536, got `0`",
        ),
        (
            "[DEFAULT]\nrpc_thread_pool_size = many\n",
            2,
            "DEFAULT",
            "rpc_thread_pool_size",
            "must be a whole number, got `many`",
        ),
        (
            "[DEFAULT]\nrpc_ping_enabled = maybe\n",
            2,
            "DEFAULT",
            "rpc_ping_enabled",
            "must be true or false (or yes/no, on/off, 1/0, in any case), got `maybe`",
        ),
        (
            "[DEFAULT]\nrpc_ping_enabled =\n",
            2,
            "DEFAULT",
            "rpc_ping_enabled",
            "must be true or false",
        ),
        (
            "[DEFAULT]\ncontrol_exchange = a*b\n",
            2,
            "DEFAULT",
            "control_exchange",
            "`*`, `#` and control characters are not allowed",
        ),
        (
            "[DEFAULT]\ntransport_url = no scheme\n",
            2,
            "DEFAULT",
            "transport_url",
            "not a transport URL: no scheme specified",
        ),
        (
            "[oslo_messaging_notifications]\ndriver = messagingv2\ndriver = messagingv3\n",
            3,
            "oslo_messaging_notifications",
            "driver",
            "unknown notification driver (known: messaging, messagingv2, routing, log, noop), got `messagingv3`",
        ),
        (
            "[OSLO_MESSAGING_NOTIFICATIONS]\ntopics = notifications,,audit\n",
            2,
            "oslo_messaging_notifications",
            "topics",
            "topic ``: the topic name is empty",
        ),
        (
            "[oslo_messaging_notifications]\nretry = forever\n",
            2,
            "oslo_messaging_notifications",
            "retry",
            "must be a whole number",
        ),
        (
            "[oslo_messaging_notifications]\nretry = 99999999999\n",
            2,
            "oslo_messaging_notifications",
            "retry",
            "must be at most 4294967295",
        ),
        (
            "[DEFAULT]\nlock_path = $state_path/lock\ncontrol_exchange = $nope\n",
            3,
            "DEFAULT",
            "control_exchange",
            "`$nope` names an option set in no config file",
        ),
        (
            "[oslo_messaging_notifications]\ndriver = log\ndriver = test\n",
            3,
            "oslo_messaging_notifications",
            "driver",
            "oslo's `test` driver (an in-memory list for oslo's own tests) is not implemented",
        ),
        (
            "[DEFAULT]\na = $b\nb = $a\ncontrol_exchange = $a\n",
            4,
            "DEFAULT",
            "control_exchange",
            "nested too deep (a loop?)",
        ),
    ] {
        let (_s, file, error) = load_error(text);
        assert_at(&error, &file, line, section, key, says);
    }
}

#[test]
fn the_value_of_the_newest_file_is_the_one_blamed() {
    let scratch = Scratch::new("newest");
    let good = scratch.file("a.conf", "[DEFAULT]\nrpc_response_timeout = 30\n");
    let bad = scratch.file("b.conf", "# later\n[DEFAULT]\nrpc_response_timeout = 3O\n");
    let error = Config::from_files([&good, &bad]).unwrap_err();
    assert_at(
        &error,
        &bad,
        3,
        "DEFAULT",
        "rpc_response_timeout",
        "got `3O`",
    );
    // The other way round, the good one wins and nothing is wrong.
    assert!(Config::from_files([&bad, &good]).is_ok());
}

#[test]
fn an_override_with_a_bad_value_is_an_error_naming_the_override() {
    let error = Config::builder()
        .config_file(fixture("nova.conf"))
        .set_override("DEFAULT", "rpc_response_timeout", "-1")
        .load()
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ConfigError::Value {
                origin: Origin::Override,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "override: [DEFAULT] rpc_response_timeout: must be from 0 to 31536000, got `-1`"
    );
}

#[test]
fn transport_section_values_get_the_transports_bounds_at_their_line() {
    let url = "[DEFAULT]\ntransport_url = rabbit://u:secret@h/\n";
    for (section_text, line, key, says) in [
        (
            "heartbeat_rate = often\n",
            4,
            "heartbeat_rate",
            "`heartbeat_rate` must be a whole number up to 1000, got `often`",
        ),
        (
            "kombu_reconnect_delay = 5\nheartbeat_rate = 3\n",
            4,
            "kombu_reconnect_delay",
            "`kombu_reconnect_delay` must be a number of seconds from 0 to 4.5, got `5`",
        ),
        (
            "rabbit_quorum_queue = maybe\n",
            4,
            "rabbit_quorum_queue",
            "`rabbit_quorum_queue` must be true or false, got `maybe`",
        ),
        (
            "kombu_failover_strategy = random\n",
            4,
            "kombu_failover_strategy",
            "round-robin or shuffle",
        ),
        (
            "ssl_ca_file = /etc/ssl/ca.pem\n",
            4,
            "ssl_ca_file",
            "`ssl_ca_file` is set but TLS is off",
        ),
        (
            "rabbit_stream_fanout = true\n",
            4,
            "rabbit_stream_fanout",
            "needs `rabbit_transient_quorum_queue=true`",
        ),
        (
            "rabbit_quorum_queue = true\nrabbit_ha_queues = true\n",
            5,
            "rabbit_ha_queues",
            "`rabbit_quorum_queue` and `rabbit_ha_queues` are both set",
        ),
        (
            "rpc_conn_pool_size = lots\n",
            4,
            "rpc_conn_pool_size",
            "must be a whole number, got `lots`",
        ),
        (
            "ssl_enforce_fips_mode = True\n",
            4,
            "ssl_enforce_fips_mode",
            "FIPS mode cannot be enforced",
        ),
    ] {
        let (_s, file, error) = rpc_error(&format!("{url}[oslo_messaging_rabbit]\n{section_text}"));
        assert_at(&error, &file, line, "oslo_messaging_rabbit", key, says);
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}

#[test]
fn two_bad_values_blame_the_one_the_transport_reports() {
    let (_s, file, error) = rpc_error(
        "[DEFAULT]\ntransport_url = rabbit://h/\n[oslo_messaging_rabbit]\n\
         heartbeat_rate = often\nrabbit_retry_interval = never\n",
    );
    let line = error.location().unwrap().1;
    assert!(line == 4 || line == 5, "{error}");
    let key = if line == 4 {
        "heartbeat_rate"
    } else {
        "rabbit_retry_interval"
    };
    assert_at(
        &error,
        &file,
        line,
        "oslo_messaging_rabbit",
        key,
        &format!("`{key}`"),
    );
}

#[test]
fn a_bad_url_option_is_blamed_on_the_transport_url_line() {
    let (_s, file, error) = rpc_error(
        "[DEFAULT]\n# the bus\ntransport_url = rabbit://u:secret@h/?heartbeat_rate=often\n\
         [oslo_messaging_rabbit]\nheartbeat_rate = 2\n",
    );
    assert_at(
        &error,
        &file,
        3,
        "DEFAULT",
        "transport_url",
        "`heartbeat_rate` must be a whole number",
    );
    assert!(!error.to_string().contains("secret"));
    let (_s, file, error) = rpc_error("[DEFAULT]\ntransport_url = kafka://h/\n");
    assert_at(&error, &file, 2, "DEFAULT", "transport_url", "kafka");
}

#[test]
fn a_bad_value_in_the_notification_bus_section_blames_its_line() {
    let scratch = Scratch::new("notify-errors");
    let file = scratch.file(
        "n.conf",
        "[DEFAULT]\ntransport_url = memory://\n\
         [oslo_messaging_notifications]\ntransport_url = nats://127.0.0.1:4222\n\
         [oslo_messaging_nats]\nprefetch = 0\n",
    );
    let config = Config::from_files([&file]).unwrap();
    // memory:// ignores the NATS section.
    assert!(config.rpc_transport_url().is_ok());
    let error = config.notification_transport_url().unwrap_err();
    assert_at(
        &error,
        &file,
        6,
        "oslo_messaging_nats",
        "prefetch",
        "`prefetch` must be a whole number from 1 to 100000, got `0`",
    );
    let error = messaging_config::notification_transport(&config)
        .map(drop)
        .unwrap_err();
    assert_eq!(error.location(), Some((file.as_path(), 6)));
}

#[test]
fn no_url_at_all_is_an_error_saying_what_to_set() {
    let config = Config::builder().load().unwrap();
    for error in [
        config.rpc_transport_url().unwrap_err(),
        messaging_config::rpc_transport(&config)
            .map(drop)
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, ConfigError::NoTransportUrl { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("set `transport_url` in [DEFAULT]"),
            "{error}"
        );
    }
    let error = config.notification_transport_url().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("set `transport_url` in [oslo_messaging_notifications] or [DEFAULT]"),
        "{error}"
    );
}

#[test]
fn sections_of_other_transports_are_not_checked() {
    // A broken NATS section does not matter to a rabbit URL, nor a broken rabbit
    // section to a NATS one, as in oslo (a driver reads its own section).
    let scratch = Scratch::new("other-sections");
    let file = scratch.file(
        "s.conf",
        "[DEFAULT]\ntransport_url = rabbit://h/\n\
         [oslo_messaging_nats]\nprefetch = 0\n",
    );
    assert!(
        Config::from_files([&file])
            .unwrap()
            .rpc_transport_url()
            .is_ok()
    );
    let file = scratch.file(
        "t.conf",
        "[DEFAULT]\ntransport_url = nats://h/\n\
         [oslo_messaging_rabbit]\nheartbeat_rate = often\n",
    );
    assert!(
        Config::from_files([&file])
            .unwrap()
            .rpc_transport_url()
            .is_ok()
    );
}
