//! The transport URL's meaning for RabbitMQ: brokers, credentials, TLS, and options.

use std::time::Duration;

use messaging_core::codec::CodecKind;
use messaging_core::{InvalidTransportUrl, Target, TransportError, TransportUrl};

/// One broker to try.
#[derive(Clone)]
pub(crate) struct Broker {
    /// The amqp:// URI, with the password: never log it.
    pub(crate) uri: String,
    /// For logs: the same with the password redacted.
    pub(crate) display: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Everything the URL says.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) brokers: Vec<Broker>,
    pub(crate) shuffle: bool,
    pub(crate) control_exchange: String,
    pub(crate) prefetch: u16,
    pub(crate) connect_timeout: Duration,
    /// oslo's `rabbit_transient_queues_ttl`: reply and fanout queues expire after this
    /// long without consumers (30 min by default).
    pub(crate) transient_ttl_ms: u32,
    /// Our extension: `x-expires` on topic, server and notification queues too (tests).
    pub(crate) queue_ttl_ms: Option<u32>,
    /// The largest message body sent or accepted, in bytes.
    pub(crate) max_message_size: usize,
    /// oslo's `amqp_durable_queues`: topic exchanges, RPC topic and server queues and
    /// notification queues are durable (they and their persistent messages survive a
    /// broker restart). Every service on the bus must agree.
    pub(crate) durable: bool,
}

/// RabbitMQ 3.x's own default `max_message_size`: 128 MiB.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// The largest `max_message_size` RabbitMQ accepts: 512 MiB.
const LARGEST_MAX_MESSAGE_SIZE: u64 = 512 * 1024 * 1024;

/// The options this transport understands (oslo's names, plus a few of ours).
const KNOWN: &[&str] = &[
    "codec",
    "control_exchange",
    "prefetch",
    "rabbit_qos_prefetch_count",
    "heartbeat",
    "heartbeat_timeout_threshold",
    "kombu_failover_strategy",
    "rabbit_transient_queues_ttl",
    "queue_ttl",
    "ssl",
    "connect_timeout",
    "max_message_size",
    "amqp_durable_queues",
];

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Options {
    pub(crate) fn from_url(url: &TransportUrl) -> Result<Options, TransportError> {
        let bad =
            |reason: String| TransportError::InvalidUrl(InvalidTransportUrl::new(url, reason));
        if let Some(unknown) = url.options().keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown option `{unknown}` (known: {})",
                KNOWN.join(", ")
            )));
        }
        if let Some(codec) = url.option("codec") {
            match codec.parse::<CodecKind>() {
                Ok(CodecKind::Json) => {}
                _ => {
                    return Err(bad(format!(
                        "codec `{codec}`: oslo's wire protocol on RabbitMQ is JSON only"
                    )));
                }
            }
        }
        let number = |keys: &[&str], default: u64, max: u64| -> Result<u64, TransportError> {
            for key in keys {
                if let Some(value) = url.option(key) {
                    return value
                        .parse::<u64>()
                        .ok()
                        .filter(|v| *v <= max)
                        .ok_or_else(|| {
                            bad(format!(
                                "`{key}` must be a whole number up to {max}, got `{value}`"
                            ))
                        });
                }
            }
            Ok(default)
        };
        let flag = |key: &str| -> Result<bool, TransportError> {
            match url.option(key) {
                None => Ok(false),
                Some("true" | "1" | "yes" | "True") => Ok(true),
                Some("false" | "0" | "no" | "False") => Ok(false),
                Some(other) => Err(bad(format!("`{key}` must be true or false, got `{other}`"))),
            }
        };
        let tls = url.scheme() == "amqps" || flag("ssl")?;
        let shuffle = match url.option("kombu_failover_strategy") {
            None | Some("round-robin") => false,
            Some("shuffle") => true,
            Some(other) => {
                return Err(bad(format!(
                    "kombu_failover_strategy must be round-robin or shuffle, got `{other}`"
                )));
            }
        };
        let heartbeat = number(
            &["heartbeat", "heartbeat_timeout_threshold"],
            60,
            u16::MAX as u64,
        )? as u16;
        let connect_timeout = Duration::from_secs(number(&["connect_timeout"], 10, 3600)?.max(1));
        let vhost = match url.virtual_host() {
            None | Some("") => "%2F".to_owned(),
            Some(vhost) => quote(vhost),
        };
        let scheme = if tls { "amqps" } else { "amqp" };
        let default_port = if tls { 5671 } else { 5672 };
        let query = format!(
            "heartbeat={heartbeat}&connection_timeout={}",
            connect_timeout.as_millis()
        );
        let mut brokers = Vec::new();
        let hosts: Vec<_> = if url.hosts().is_empty() {
            vec![Default::default()]
        } else {
            url.hosts().to_vec()
        };
        for host in hosts {
            let user = host.username.clone().unwrap_or_else(|| "guest".to_owned());
            let password = host
                .password
                .as_ref()
                .map_or_else(|| "guest".to_owned(), |p| p.expose().to_owned());
            let hostname = host
                .hostname
                .clone()
                .unwrap_or_else(|| "localhost".to_owned());
            let hostname = if hostname.contains(':') {
                format!("[{hostname}]")
            } else {
                hostname
            };
            let port = host.port.unwrap_or(default_port);
            let user = quote(&user);
            brokers.push(Broker {
                uri: format!(
                    "{scheme}://{user}:{}@{hostname}:{port}/{vhost}?{query}",
                    quote(&password)
                ),
                display: format!("{scheme}://{user}:***@{hostname}:{port}/{vhost}"),
            });
        }
        let control_exchange = url.option("control_exchange").unwrap_or("openstack");
        // The control exchange follows the rules of an exchange name in a target.
        Target::new("t")
            .with_exchange(control_exchange)
            .validate_names()
            .map_err(|e| bad(format!("`control_exchange`: {}", e.reason())))?;
        let max_message_size = number(
            &["max_message_size"],
            DEFAULT_MAX_MESSAGE_SIZE as u64,
            LARGEST_MAX_MESSAGE_SIZE,
        )?;
        if max_message_size == 0 {
            return Err(bad("`max_message_size` must be at least 1".to_owned()));
        }
        Ok(Options {
            brokers,
            shuffle,
            control_exchange: control_exchange.to_owned(),
            durable: flag("amqp_durable_queues")?,
            max_message_size: max_message_size as usize,
            prefetch: number(
                &["prefetch", "rabbit_qos_prefetch_count"],
                64,
                u16::MAX as u64,
            )?
            .max(1) as u16,
            connect_timeout,
            transient_ttl_ms: number(&["rabbit_transient_queues_ttl"], 1800, 2_000_000)? as u32
                * 1000,
            queue_ttl_ms: match url.option("queue_ttl") {
                None => None,
                Some(_) => Some(number(&["queue_ttl"], 0, 2_000_000)?.max(1) as u32 * 1000),
            },
        })
    }

    /// The brokers in the order to try them (shuffled with `kombu_failover_strategy=shuffle`).
    pub(crate) fn brokers_in_order(&self) -> Vec<Broker> {
        let mut brokers = self.brokers.clone();
        if self.shuffle && brokers.len() > 1 {
            let start = (messaging_core::ids::hex_id().as_bytes()[0] as usize) % brokers.len();
            brokers.rotate_left(start);
        }
        brokers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> Result<Options, TransportError> {
        Options::from_url(&TransportUrl::parse(url).unwrap())
    }

    #[test]
    fn oslo_urls_become_amqp_uris_with_defaults() {
        let o = options("rabbit://").unwrap();
        assert_eq!(
            o.brokers[0].uri,
            "amqp://guest:guest@localhost:5672/%2F?heartbeat=60&connection_timeout=10000"
        );
        let o = options("rabbit://me:p%40ss@h1:5673,h2/prod?heartbeat=10").unwrap();
        assert_eq!(o.brokers.len(), 2);
        assert!(
            o.brokers[0]
                .uri
                .starts_with("amqp://me:p%40ss@h1:5673/prod?heartbeat=10")
        );
        assert!(
            o.brokers[1]
                .uri
                .starts_with("amqp://guest:guest@h2:5672/prod")
        );
        assert_eq!(o.brokers[0].display, "amqp://me:***@h1:5673/prod");
        assert_eq!(o.control_exchange, "openstack");
    }

    #[test]
    fn tls_by_scheme_or_option() {
        assert!(
            options("amqps://h").unwrap().brokers[0]
                .uri
                .starts_with("amqps://guest:guest@h:5671/")
        );
        assert!(
            options("rabbit://h?ssl=true").unwrap().brokers[0]
                .uri
                .starts_with("amqps://")
        );
    }

    #[test]
    fn bad_options_are_typed_errors_without_passwords() {
        for (url, expected) in [
            ("rabbit://u:secret@h/?nope=1", "unknown option `nope`"),
            ("rabbit://u:secret@h/?codec=bincode", "JSON only"),
            (
                "rabbit://u:secret@h/?prefetch=lots",
                "`prefetch` must be a whole number",
            ),
            (
                "rabbit://u:secret@h/?ssl=maybe",
                "`ssl` must be true or false",
            ),
            (
                "rabbit://u:secret@h/?kombu_failover_strategy=random",
                "round-robin or shuffle",
            ),
            (
                "rabbit://u:secret@h/?amqp_durable_queues=maybe",
                "`amqp_durable_queues` must be true or false",
            ),
        ] {
            let err = options(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn max_message_size_defaults_to_rabbitmqs_and_is_bounded() {
        assert_eq!(
            options("rabbit://h/").unwrap().max_message_size,
            134_217_728
        );
        assert_eq!(
            options("rabbit://h/?max_message_size=1000")
                .unwrap()
                .max_message_size,
            1000
        );
        for bad in ["0", "-1", "1k", "536870913"] {
            let err = options(&format!("rabbit://h/?max_message_size={bad}"))
                .map(drop)
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_message_size"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_control_exchange_follows_the_exchange_name_rules() {
        let long = "x".repeat(256);
        for bad in [long.as_str(), "a*"] {
            let err = options(&format!("rabbit://h/?control_exchange={bad}"))
                .map(drop)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`control_exchange`"), "{bad}: {err}");
        }
        assert_eq!(
            options(&format!("rabbit://h/?control_exchange={}", "x".repeat(255)))
                .unwrap()
                .control_exchange
                .len(),
            255
        );
    }

    #[test]
    fn durable_queues_are_off_unless_asked_for() {
        assert!(!options("rabbit://h/").unwrap().durable);
        assert!(
            options("rabbit://h/?amqp_durable_queues=true")
                .unwrap()
                .durable
        );
    }

    #[test]
    fn a_zero_transient_ttl_means_no_expiry() {
        assert_eq!(
            options("rabbit://h/?rabbit_transient_queues_ttl=0")
                .unwrap()
                .transient_ttl_ms,
            0
        );
        assert_eq!(options("rabbit://h/").unwrap().transient_ttl_ms, 1_800_000);
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let o = options("rabbit://[::1]:5672/").unwrap();
        assert!(
            o.brokers[0]
                .uri
                .starts_with("amqp://guest:guest@[::1]:5672/"),
            "{}",
            o.brokers[0].uri
        );
    }
}
