//! Config files as a hostile (or careless) deployer writes them: endless and huge
//! files, FIFOs and symlink loops in config dirs, `$` substitutions that loop, fan out
//! or grow exponentially, secrets reached through `$` references, odd names. Loading
//! must end quickly with a clear error, in bounded memory, and never show a secret.
//! Tests that measure print what they measured to stderr.

mod support;

use std::time::{Duration, Instant};

use messaging_config::{Config, ConfigError};
use messaging_testkit::{LogCapture, within};
use support::Scratch;

/// How long any of these loads may take (debug build, a loaded machine).
const QUICK: Duration = Duration::from_secs(10);

/// Loads `sources` on a watched thread: a hang fails the test instead of hanging it.
fn load_within(what: &str, builder: messaging_config::ConfigBuilder) -> Result<Config, String> {
    let started = Instant::now();
    let result = within(QUICK, what, move || {
        builder.load().map_err(|e| e.to_string())
    });
    eprintln!("{what}: {:?}", started.elapsed());
    result
}

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let scratch = Scratch::new("hostile");
    let file = scratch.file("h.conf", text);
    Config::from_files([&file])
}

// ===== files and dirs =====

#[test]
fn a_fifo_named_like_a_config_file_in_a_config_dir_is_an_error_not_a_hang() {
    let scratch = Scratch::new("fifo");
    scratch.file("d/10-ok.conf", "[DEFAULT]\nrpc_response_timeout = 5\n");
    let fifo = scratch.path("d/x.conf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let error = load_within(
        "a FIFO in a dir",
        Config::builder().config_dir(scratch.path("d")),
    )
    .unwrap_err();
    assert!(error.contains("x.conf"), "{error}");
    assert!(error.contains("not a regular file"), "{error}");
}

#[test]
fn endless_files_are_refused_at_the_size_limit() {
    // Named directly, and reached through a symlink in a config dir.
    let error = load_within("/dev/zero", Config::builder().config_file("/dev/zero")).unwrap_err();
    assert!(error.contains("/dev/zero"), "{error}");
    assert!(error.contains("larger than"), "{error}");
    let scratch = Scratch::new("zero");
    std::fs::create_dir_all(scratch.path("d")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", scratch.path("d/zero.conf")).unwrap();
    let error = load_within(
        "a link to /dev/zero in a dir",
        Config::builder().config_dir(scratch.path("d")),
    )
    .unwrap_err();
    assert!(error.contains("zero.conf"), "{error}");
    assert!(error.contains("not a regular file"), "{error}");
}

#[test]
fn a_file_of_100_mb_is_refused_without_being_read() {
    let scratch = Scratch::new("huge");
    let path = scratch.file("huge.conf", "[DEFAULT]\n");
    // Sparse: no disk used, and nothing to read before the size is known.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let error = load_within("a 100 MB file", Config::builder().config_file(&path)).unwrap_err();
    assert!(error.contains("huge.conf"), "{error}");
    assert!(error.contains("larger than 4 MiB"), "{error}");
}

#[test]
fn a_file_just_under_the_limit_still_loads() {
    let scratch = Scratch::new("big");
    let mut text = String::from("[DEFAULT]\ntransport_url = memory://\n[filler]\n");
    let line = format!("k = {}\n", "v".repeat(1000));
    while text.len() + line.len() <= 4 << 20 {
        text.push_str(&line);
    }
    let path = scratch.file("big.conf", &text);
    let config = load_within("a 4 MiB file", Config::builder().config_file(&path)).unwrap();
    assert_eq!(config.files(), [path]);
}

#[test]
fn a_symlink_loop_in_a_config_dir_is_an_error() {
    let scratch = Scratch::new("loop");
    std::fs::create_dir_all(scratch.path("d")).unwrap();
    std::os::unix::fs::symlink(scratch.path("d/a.conf"), scratch.path("d/b.conf")).unwrap();
    std::os::unix::fs::symlink(scratch.path("d/b.conf"), scratch.path("d/a.conf")).unwrap();
    let error = load_within(
        "a symlink loop",
        Config::builder().config_dir(scratch.path("d")),
    )
    .unwrap_err();
    assert!(error.contains("a.conf"), "{error}");
}

#[test]
fn a_config_dir_of_5000_files_loads_in_order() {
    let scratch = Scratch::new("many");
    for i in 0..5000 {
        scratch.file(
            &format!("d/{i:05}.conf"),
            &format!("[DEFAULT]\nrpc_response_timeout = {}\n", i + 1),
        );
    }
    let config = load_within(
        "5000 files",
        Config::builder().config_dir(scratch.path("d")),
    )
    .unwrap();
    assert_eq!(config.files().len(), 5000);
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(5000));
}

#[test]
fn a_config_file_that_is_a_directory_is_an_error() {
    let scratch = Scratch::new("isdir");
    std::fs::create_dir_all(scratch.path("d.conf")).unwrap();
    let error = Config::from_files([scratch.path("d.conf")]).unwrap_err();
    assert!(matches!(error, ConfigError::Unreadable { .. }), "{error}");
}

#[test]
fn nul_bytes_and_invalid_utf8_are_handled_without_quoting_the_line() {
    let config = load_text("[DEFAULT]\nhost = a\0b\n[s\0x]\nk\0 = v\n").unwrap();
    assert_eq!(
        config.value("DEFAULT", "host").unwrap().unwrap().as_str(),
        "a\0b"
    );
    let scratch = Scratch::new("bytes");
    let path = scratch.path("b.conf");
    std::fs::write(&path, b"[DEFAULT]\n\nadmin_password = hunter2\xff\xfe\n").unwrap();
    let error = Config::from_files([&path]).unwrap_err();
    assert_eq!(error.location(), Some((path.as_path(), 3)));
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

// ===== $ substitution =====

#[test]
fn a_substitution_loop_is_an_error() {
    let error = load_text("[DEFAULT]\ncontrol_exchange = $a\na = $b\nb = $a\n").unwrap_err();
    assert!(error.to_string().contains("nested too deep"), "{error}");
}

#[test]
fn references_fanning_out_are_bounded_in_time() {
    // control_exchange -> 8 x $n0 -> 8 x $n1 ... : 8^10 references, all empty.
    let mut text = String::from("[DEFAULT]\ncontrol_exchange = x$n0$n0$n0$n0$n0$n0$n0$n0\n");
    for i in 0..10 {
        text.push_str(&format!("n{i} = {}\n", format!("$n{}", i + 1).repeat(8)));
    }
    text.push_str("n10 =\n");
    let scratch = Scratch::new("fanout");
    let path = scratch.file("f.conf", &text);
    let error = load_within("8^10 references", Config::builder().config_file(&path)).unwrap_err();
    assert!(error.contains("control_exchange"), "{error}");
    assert!(error.contains("too many `$` references"), "{error}");
}

#[test]
fn references_growing_exponentially_are_bounded_in_memory() {
    // a0 = $a1$a1, a1 = $a2$a2, ... a14 = 64 KiB: 2 GiB if expanded.
    let mut text = String::from("[DEFAULT]\ncontrol_exchange = $a0\n");
    for i in 0..14 {
        text.push_str(&format!("a{i} = $a{}$a{}\n", i + 1, i + 1));
    }
    text.push_str(&format!("a14 = {}\n", "x".repeat(64 << 10)));
    let scratch = Scratch::new("doubling");
    let path = scratch.file("d.conf", &text);
    let error = load_within("2^14 x 64 KiB", Config::builder().config_file(&path)).unwrap_err();
    assert!(error.contains("expands to more than 1 MiB"), "{error}");
    assert!(error.contains("control_exchange"), "{error}");
    // 40 levels hit the depth limit first.
    let mut text = String::from("[DEFAULT]\ncontrol_exchange = $a0\n");
    for i in 0..40 {
        text.push_str(&format!("a{i} = $a{}$a{}\n", i + 1, i + 1));
    }
    text.push_str("a40 = x\n");
    let error = load_text(&text).unwrap_err();
    assert!(error.to_string().contains("nested too deep"), "{error}");
}

#[test]
fn a_deep_chain_of_section_references_is_an_error() {
    let mut text = String::from("[DEFAULT]\ncontrol_exchange = ${s0.k}\n");
    for i in 0..1000 {
        text.push_str(&format!("[s{i}]\nk = ${{s{}.k}}\n", i + 1));
    }
    text.push_str("[s1000]\nk = end\n");
    let error = load_text(&text).unwrap_err();
    assert!(error.to_string().contains("nested too deep"), "{error}");
}

#[test]
fn a_long_value_is_cut_in_an_error() {
    let error = load_text(&format!(
        "[DEFAULT]\ncontrol_exchange = {}\n",
        "bad/name".repeat(1 << 17)
    ))
    .unwrap_err()
    .to_string();
    assert!(error.len() < 1000, "{} bytes", error.len());
    assert!(error.contains("(1048576 bytes)"), "{error}");
}

// ===== secrets reached through $ =====

const PASSWORD: &str = "Sup3rS3cretPart";

fn assert_clean(what: &str, text: &str) {
    for fragment in [PASSWORD, "S3cretPart", "ecretPart"] {
        assert!(
            !text.contains(fragment),
            "{what} shows `{fragment}`:\n{text}"
        );
    }
}

#[test]
fn an_error_about_a_value_holding_a_secret_by_reference_hides_it() {
    let url = format!("rabbit://nova:{PASSWORD}@h:5672/");
    for text in [
        format!("[DEFAULT]\ntransport_url = {url}\nrpc_response_timeout = $transport_url\n"),
        format!("[DEFAULT]\nadmin_password = {PASSWORD}\ncontrol_exchange = $admin_password *\n"),
        format!(
            "[DEFAULT]\ntransport_url = {url}\n[oslo_messaging_notifications]\ntopics = ${{DEFAULT.transport_url}}*\n"
        ),
        format!(
            "[DEFAULT]\nadmin_password = {PASSWORD}\nexecutor_thread_pool_size = $admin_password\n"
        ),
        format!("[DEFAULT]\nadmin_password = {PASSWORD}\nrpc_ping_enabled = $admin_password\n"),
        format!(
            "[DEFAULT]\nadmin_password = {PASSWORD}\n[oslo_messaging_notifications]\nretry = $admin_password\n"
        ),
        format!(
            "[DEFAULT]\nadmin_password = {PASSWORD}\n[oslo_messaging_notifications]\ndriver = $admin_password\n"
        ),
    ] {
        let error = load_text(&text).unwrap_err();
        assert_clean("the error", &error.to_string());
        assert_clean("the error's Debug", &format!("{error:?}"));
        assert!(error.to_string().contains("value hidden"), "{error}");
    }
}

#[test]
fn options_set_to_a_secret_by_reference_are_hidden_from_debug() {
    let config = load_text(&format!(
        "[DEFAULT]\nadmin_password = {PASSWORD}\nnumeric_password = 4711\n\
         transport_url = rabbit://nova:{PASSWORD}@h:5672/\n\
         control_exchange = $admin_password\nrpc_response_timeout = $numeric_password\n\
         [oslo_messaging_notifications]\ntopics = $transport_url\n\
         routing_config = /etc/${{admin_password}}.yaml\n"
    ))
    .unwrap();
    assert_eq!(config.control_exchange(), PASSWORD);
    assert_eq!(config.rpc_response_timeout(), Duration::from_secs(4711));
    let settings = config.notification_settings();
    assert!(settings.topics[0].contains(PASSWORD));
    for debug in [format!("{config:?}"), format!("{settings:?}")] {
        assert_clean("the Debug", &debug);
        assert!(!debug.contains("4711"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }
    // Options that took in nothing secret are shown.
    let plain = load_text("[DEFAULT]\ncontrol_exchange = nova\n").unwrap();
    assert!(format!("{plain:?}").contains("\"nova\""), "{plain:?}");
}

#[test]
fn a_transport_refusing_a_value_holding_a_secret_by_reference_hides_it() {
    let url = format!("rabbit://nova:{PASSWORD}@h:5672/");
    for option in ["heartbeat_rate", "ssl_ca_file", "kombu_compression"] {
        let config = load_text(&format!(
            "[DEFAULT]\ntransport_url = {url}\n[oslo_messaging_rabbit]\nssl = true\n{option} = $transport_url\n"
        ))
        .unwrap();
        let error = config.rpc_transport_url().unwrap_err();
        assert_clean(option, &error.to_string());
        assert_eq!(error.option(), Some(("oslo_messaging_rabbit", option)));
    }
}

#[test]
fn a_reference_left_unresolved_inside_a_secret_is_not_named() {
    // `$ecretPart` should have been `$$ecretPart`: naming the reference would show
    // part of the password in an error about control_exchange.
    let error = load_text(
        "[DEFAULT]\nadmin_password = Sup3rS$ecretPart\ncontrol_exchange = $admin_password\n",
    )
    .unwrap_err();
    assert_clean("the error", &error.to_string());
    let error = load_text(
        "[DEFAULT]\nadmin_password = Sup3rS$ecretPart\necretPart = $admin_password\ncontrol_exchange = $admin_password\n",
    )
    .unwrap_err();
    assert_clean("the error", &error.to_string());
}

#[test]
fn a_value_holding_a_secret_by_reference_is_hidden_from_debug_and_logs() {
    let (logs, _guard) = LogCapture::start();
    let config = load_text(&format!(
        "[DEFAULT]\ntransport_url = rabbit://nova:{PASSWORD}@h:5672/\n\
         [oslo_messaging_rabbit]\nhostname = host-$transport_url\n"
    ))
    .unwrap();
    let url = config.rpc_transport_url().unwrap();
    let value = config
        .value("oslo_messaging_rabbit", "hostname")
        .unwrap()
        .unwrap();
    assert!(value.as_str().contains(PASSWORD));
    assert_clean("the value's Debug", &format!("{value:?}"));
    assert_clean("the config's Debug", &format!("{config:?}"));
    let logged: String = logs
        .events()
        .iter()
        .map(|e| format!("{} {:?}\n", e.message, e.fields))
        .collect();
    assert!(logged.contains("transport URL resolved"), "{logged}");
    assert_clean("the log", &logged);
    // The URL is still complete for the transport.
    assert!(url.option("hostname").unwrap().contains(PASSWORD));
}

#[test]
fn passwords_with_dollar_percent_comma_at_and_hash_never_show() {
    let (logs, _guard) = LogCapture::start();
    // `$$` is a `$`; the rest percent-encoded as a URL needs it: `%`, `,`, `#`, `@`.
    let config = load_text(
        "[DEFAULT]\ntransport_url = rabbit://nova:Sup3r$$S3cret%25Part%2C%23%40x@h:5672/\n",
    )
    .unwrap();
    let url = config.rpc_transport_url().unwrap();
    assert_eq!(
        url.hosts()[0].password.as_ref().unwrap().expose(),
        "Sup3r$S3cret%Part,#@x"
    );
    assert_clean("the config's Debug", &format!("{config:?}"));
    assert_clean("the URL", &url.to_string());
    // Written without encoding: refused, and the error does not show it.
    for raw in [
        "rabbit://nova:Sup3r$$S3cret%Part,#@x@h:5672/",
        "rabbit://nova:Sup3r$$S3cret%Part@x@h:5672/",
        "rabbit://nova:Sup3r$S3cretPart,@h:5672/",
    ] {
        match load_text(&format!("[DEFAULT]\ntransport_url = {raw}\n")) {
            Err(error) => assert_clean(raw, &format!("{error} {error:?}")),
            Ok(config) => {
                assert_clean(raw, &format!("{config:?}"));
                if let Err(error) = config.rpc_transport_url() {
                    assert_clean(raw, &format!("{error} {error:?}"));
                }
            }
        }
    }
    let logged: String = logs
        .events()
        .iter()
        .map(|e| format!("{} {:?}\n", e.message, e.fields))
        .collect();
    assert_clean("the log", &logged);
}

// ===== odd names =====

#[test]
fn odd_section_and_key_names_are_logged_escaped_and_cut() {
    let (logs, _guard) = LogCapture::start();
    let long = "s".repeat(100_000);
    load_text(&format!(
        "[evil\x1b[2J\u{202e}]\nk = v\n[DEFAULT]\nforged\x1b[31m = v\n[{long}]\n[DUP]\n[dup]\n"
    ))
    .unwrap();
    let events = logs.events();
    assert!(!events.is_empty());
    for event in &events {
        let text = format!("{} {:?}", event.message, event.fields);
        assert!(!event.message.contains('\x1b'), "{text}");
        assert!(!event.message.contains('\u{202e}'), "{text}");
        assert!(event.message.len() < 1000, "{} bytes", event.message.len());
    }
}

// ===== notification options at their edges =====

#[test]
fn retry_edge_values_are_forever_a_limit_or_a_clear_error() {
    use messaging_core::notify::Retry;
    let retry_of = |value: &str| {
        load_text(&format!(
            "[DEFAULT]\ntransport_url = memory://\n[oslo_messaging_notifications]\n\
             driver = messagingv2\nretry = {value}\n"
        ))
        .map(|config| {
            let notifier = messaging_config::notifier(
                &config,
                messaging_config::notification_transport(&config).unwrap(),
                "p",
            )
            .unwrap();
            (config.notification_settings().retry, notifier.retry())
        })
        .map_err(|e| e.to_string())
    };
    assert_eq!(retry_of("-1"), Ok((None, Some(Retry::Forever))));
    assert_eq!(retry_of("-99999999999"), Ok((None, Some(Retry::Forever))));
    assert_eq!(retry_of(""), Ok((None, Some(Retry::Forever))));
    assert_eq!(retry_of("0"), Ok((Some(0), Some(Retry::Limit(0)))));
    assert_eq!(
        retry_of("4294967295"),
        Ok((Some(u32::MAX), Some(Retry::Limit(u32::MAX))))
    );
    for bad in [
        "4294967296",
        "1e3",
        "3.0",
        "forever",
        "0x10",
        "99999999999999999999",
    ] {
        let error = retry_of(bad).unwrap_err();
        assert!(
            error.contains("[oslo_messaging_notifications] retry"),
            "{error}"
        );
    }
}

// ===== files named by transport options =====

#[test]
fn an_endless_tls_or_credentials_file_is_refused_at_a_size_limit() {
    for (text, key) in [
        (
            "[DEFAULT]\ntransport_url = rabbit://u:p@h:5672/\n\
             [oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /dev/zero\n",
            "ssl_ca_file",
        ),
        (
            "[DEFAULT]\ntransport_url = nats://h:4222\n\
             [oslo_messaging_nats]\nssl = true\nssl_ca_file = /dev/zero\n",
            "ssl_ca_file",
        ),
        (
            "[DEFAULT]\ntransport_url = nats://h:4222\n\
             [oslo_messaging_nats]\ncreds_file = /dev/zero\n",
            "creds_file",
        ),
        (
            "[DEFAULT]\ntransport_url = nats://h:4222\n\
             [oslo_messaging_nats]\nnkey_seed_file = /dev/zero\n",
            "nkey_seed_file",
        ),
    ] {
        let config = load_text(text).unwrap();
        let started = Instant::now();
        let error = within(QUICK, key, move || {
            config
                .rpc_transport_url()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .unwrap_err();
        eprintln!("{key} = /dev/zero: {:?}", started.elapsed());
        assert!(error.contains(key), "{error}");
        assert!(error.contains("larger than"), "{error}");
    }
}
