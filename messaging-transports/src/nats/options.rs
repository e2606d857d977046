//! The transport URL's meaning for NATS.

use std::time::Duration;

use std::ops::RangeInclusive;

use messaging_core::codec::CodecKind;
use messaging_core::{InvalidTransportUrl, Target, TransportError, TransportUrl};

use super::security::{self, Auth, Tls};
use super::subjects::{MAX_NAME_LEN, Subjects};

/// What `prefetch` may be: at least one notification handed out at a time.
pub(crate) const PREFETCH: RangeInclusive<u64> = 1..=100_000;
/// What the options in seconds may be (`consumer_ttl`, `notification_max_age`,
/// `notification_ack_wait`): ten years at most.
const SECONDS: RangeInclusive<u64> = 1..=10 * 365 * 24 * 3600;
/// What `connect_timeout` may be (seconds).
const CONNECT_TIMEOUT: RangeInclusive<u64> = 1..=3600;
/// What `max_message_size` may be (bytes): NATS's `max_payload` is at most 64 MiB.
const MESSAGE_SIZE: RangeInclusive<u64> = 1..=64 * 1024 * 1024;
/// What `max_pending` may be (requests per subscription).
const MAX_PENDING: RangeInclusive<u64> = 1..=1_000_000;
/// `max_pending`'s default beyond `prefetch` (what the client's queue per subscription
/// held before `max_pending` existed).
const QUEUE_SLACK: usize = 64;
/// What `stream_replicas` may be: JetStream keeps at most five copies of a stream.
const REPLICAS: RangeInclusive<u64> = 1..=5;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// `nats://host:port` (or `tls://`), in the order written.
    pub(crate) servers: Vec<String>,
    /// How the client authenticates (see [`security::auth`]).
    pub(crate) auth: Auth,
    /// TLS, if on (see [`security::tls`]).
    pub(crate) tls: Option<Tls>,
    pub(crate) codec: CodecKind,
    pub(crate) prefix: String,
    pub(crate) control_exchange: String,
    pub(crate) prefetch: usize,
    pub(crate) connect_timeout: Duration,
    /// Durable notification consumers are removed after this long without a listener.
    pub(crate) consumer_ttl: Duration,
    /// Notifications older than this are dropped from the stream.
    pub(crate) max_age: Duration,
    /// A delivered notification not acknowledged (nor told in progress) for this long
    /// is redelivered: the consumers' `ack_wait`.
    pub(crate) ack_wait: Duration,
    /// The largest message body sent or accepted, if the URL sets one (otherwise the
    /// server's advertised `max_payload`).
    pub(crate) max_message_size: Option<usize>,
    /// `max_pending`: the most requests one RPC subscription holds waiting for room in
    /// its listener's buffer; what arrives beyond them is dropped and counted.
    pub(crate) max_pending: usize,
    /// How many servers of a JetStream cluster keep the notification stream, when this
    /// transport creates it.
    pub(crate) stream_replicas: usize,
}

/// The options this transport understands.
pub(crate) const KNOWN: &[&str] = &[
    "codec",
    "subject_prefix",
    "control_exchange",
    "prefetch",
    "connect_timeout",
    "consumer_ttl",
    "notification_max_age",
    "max_message_size",
    "tls",
    "max_pending",
    // Authentication and TLS (read by `security`).
    "nkey_seed_file",
    "creds_file",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_enforce_hostname_verification",
    "stream_replicas",
    "notification_ack_wait",
];

impl Options {
    pub(crate) fn from_url(url: &TransportUrl) -> Result<Options, TransportError> {
        let bad =
            |reason: String| TransportError::InvalidUrl(InvalidTransportUrl::new(url, reason));
        // First: an error about the credentials may have to hide more of the URL than
        // the others do (a user name that may be a token).
        let auth = security::auth(url, &bad)?;
        if let Some(unknown) = url.options().keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown option `{unknown}` (known: {})",
                KNOWN.join(", ")
            )));
        }
        // A number out of its range is an error naming the option and the range, never
        // silently moved into it.
        let number = |key: &str, default: u64, range: RangeInclusive<u64>| match url.option(key) {
            None => Ok(default),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|v| range.contains(v))
                .ok_or_else(|| {
                    bad(format!(
                        "`{key}` must be a whole number from {} to {}, got `{value}`",
                        range.start(),
                        range.end()
                    ))
                }),
        };
        let tls = security::tls(url, &bad)?;
        let codec = match url.option("codec") {
            None => CodecKind::Bincode,
            Some(name) => name
                .parse()
                .map_err(|e: messaging_core::codec::UnknownCodec| bad(e.to_string()))?,
        };
        let prefix = url.option("subject_prefix").unwrap_or("msg").to_owned();
        if prefix.split('.').any(|t| {
            t.is_empty()
                || t.contains(|c: char| {
                    matches!(c, '*' | '>') || c.is_whitespace() || c.is_control()
                })
        }) {
            return Err(bad(format!(
                "`subject_prefix` `{}` is not a valid subject prefix (dot-separated \
                 non-empty tokens without `*`, `>`, spaces or control characters)",
                prefix.escape_debug()
            )));
        }
        let stream = Subjects::new(&prefix).stream();
        if stream.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "`subject_prefix` is too long: its stream name would be {} bytes long \
                 (NATS allows at most {MAX_NAME_LEN})",
                stream.len()
            )));
        }
        let control_exchange = url.option("control_exchange").unwrap_or("openstack");
        // The control exchange follows the rules of an exchange name in a target.
        Target::new("t")
            .with_exchange(control_exchange)
            .validate_names()
            .map_err(|e| bad(format!("`control_exchange`: {}", e.reason())))?;
        let servers = if url.hosts().is_empty() {
            vec!["nats://127.0.0.1:4222".to_owned()]
        } else {
            url.hosts()
                .iter()
                .map(|h| {
                    let host = h.hostname.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    format!(
                        "{}://{host}:{}",
                        if tls.is_some() { "tls" } else { "nats" },
                        h.port.unwrap_or(4222)
                    )
                })
                .collect()
        };
        let prefetch = number("prefetch", 1000, PREFETCH)? as usize;
        Ok(Options {
            servers,
            auth,
            tls,
            codec,
            prefix,
            control_exchange: control_exchange.to_owned(),
            prefetch,
            connect_timeout: Duration::from_secs(number("connect_timeout", 10, CONNECT_TIMEOUT)?),
            consumer_ttl: Duration::from_secs(number("consumer_ttl", 7 * 24 * 3600, SECONDS)?),
            max_age: Duration::from_secs(number("notification_max_age", 24 * 3600, SECONDS)?),
            ack_wait: Duration::from_secs(number("notification_ack_wait", 30, SECONDS)?),
            max_message_size: match url.option("max_message_size") {
                None => None,
                Some(_) => Some(number("max_message_size", 0, MESSAGE_SIZE)? as usize),
            },
            max_pending: number("max_pending", (prefetch + QUEUE_SLACK) as u64, MAX_PENDING)?
                as usize,
            stream_replicas: number("stream_replicas", 1, REPLICAS)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> Result<Options, TransportError> {
        Options::from_url(&TransportUrl::parse(url).unwrap())
    }

    #[test]
    fn servers_credentials_and_defaults() {
        let o = options("nats://").unwrap();
        assert_eq!(o.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            (o.codec, o.prefix.as_str(), o.prefetch),
            (CodecKind::Bincode, "msg", 1000)
        );
        let o = options("nats://me:secret@h1,h2:4223?codec=json&prefetch=8").unwrap();
        assert_eq!(o.servers, ["nats://h1:4222", "nats://h2:4223"]);
        assert!(
            matches!(&o.auth, Auth::UserPassword { user, password }
                if user == "me" && password.expose() == "secret"),
            "{:?}",
            o.auth
        );
        assert_eq!((o.codec, o.prefetch), (CodecKind::Json, 8));
        assert_eq!(o.max_message_size, None);
        assert!(options("tls://h").unwrap().tls.is_some());
        for (yes, no) in [
            ("true", "false"),
            ("True", "FALSE"),
            ("on", "off"),
            ("YES", "no"),
        ] {
            assert!(
                options(&format!("nats://h?tls={yes}"))
                    .unwrap()
                    .tls
                    .is_some(),
                "{yes}"
            );
            assert!(
                options(&format!("tls://h?tls={no}")).unwrap().tls.is_none(),
                "{no}"
            );
        }
        let o = options("nats://h?max_message_size=4096").unwrap();
        assert_eq!(o.max_message_size, Some(4096));
        assert_eq!(o.stream_replicas, 1);
        assert_eq!(o.ack_wait, Duration::from_secs(30));
        let o = options("nats://h?notification_ack_wait=5").unwrap();
        assert_eq!(o.ack_wait, Duration::from_secs(5));
        let o = options("nats://h1:4222,h2:4223,h3:4224?stream_replicas=3").unwrap();
        assert_eq!(
            o.servers,
            ["nats://h1:4222", "nats://h2:4223", "nats://h3:4224"]
        );
        assert_eq!(o.stream_replicas, 3);
    }

    #[test]
    fn bad_options_are_typed_errors_without_passwords() {
        for (url, expected) in [
            ("nats://u:secret@h?nope=1", "unknown option `nope`"),
            (
                "nats://u:secret@h?tls=maybe",
                "`tls` must be true or false, got `maybe`",
            ),
            ("nats://u:secret@h?codec=xml", "unknown codec"),
            (
                "nats://u:secret@h?prefetch=many",
                "`prefetch` must be a whole number",
            ),
            (
                "nats://u:secret@h?subject_prefix=a*",
                "not a valid subject prefix",
            ),
            (
                "nats://u:secret@h?max_message_size=0",
                "`max_message_size` must be a whole number from 1 to 67108864, got `0`",
            ),
            (
                "nats://u:secret@h?max_message_size=-1",
                "`max_message_size` must be a whole number",
            ),
            (
                "nats://u:secret@h?subject_prefix=a..b",
                "not a valid subject prefix",
            ),
            (
                "nats://u:secret@h?subject_prefix=a%0D%0AUNSUB",
                "not a valid subject prefix",
            ),
            (
                "nats://u:secret@h?control_exchange=%23",
                "`control_exchange`",
            ),
        ] {
            let err = options(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    /// `prefetch=0`, `consumer_ttl=0` and the like used to be moved into range
    /// silently (`prefetch=0` became 1, `notification_max_age=0`, which means "no
    /// limit" to JetStream, became one second).
    #[test]
    fn numbers_out_of_range_are_errors_naming_the_option_and_its_range() {
        for (option, value, range) in [
            ("prefetch", "0", "from 1 to 100000"),
            ("prefetch", "100001", "from 1 to 100000"),
            ("consumer_ttl", "0", "from 1 to 315360000"),
            ("consumer_ttl", "315360001", "from 1 to 315360000"),
            ("notification_max_age", "0", "from 1 to 315360000"),
            ("connect_timeout", "0", "from 1 to 3600"),
            ("connect_timeout", "99999999999999999999", "from 1 to 3600"),
            ("max_message_size", "67108865", "from 1 to 67108864"),
            ("stream_replicas", "0", "from 1 to 5"),
            ("notification_ack_wait", "0", "from 1 to 315360000"),
            ("stream_replicas", "6", "from 1 to 5"),
            ("stream_replicas", "three", "from 1 to 5"),
        ] {
            let url = format!("nats://h?{option}={value}");
            match options(&url) {
                Err(TransportError::InvalidUrl(e)) => assert_eq!(
                    e.reason(),
                    format!("`{option}` must be a whole number {range}, got `{value}`")
                ),
                other => panic!("{url}: {other:?}"),
            }
        }
        for (option, value) in [
            ("prefetch", "1"),
            ("prefetch", "100000"),
            ("consumer_ttl", "1"),
            ("notification_max_age", "315360000"),
            ("connect_timeout", "3600"),
            ("max_message_size", "1"),
            ("stream_replicas", "1"),
            ("stream_replicas", "5"),
        ] {
            assert!(
                options(&format!("nats://h?{option}={value}")).is_ok(),
                "{option}={value}"
            );
        }
    }

    /// A subject prefix whose stream name NATS would refuse is refused with the URL.
    #[test]
    fn a_subject_prefix_too_long_for_a_stream_name_is_a_url_error() {
        assert!(options(&format!("nats://h?subject_prefix={}", "p".repeat(241))).is_ok());
        let err = options(&format!("nats://h?subject_prefix={}", "p".repeat(242))).unwrap_err();
        assert!(
            err.to_string()
                .contains("stream name would be 256 bytes long"),
            "{err}"
        );
    }
}
