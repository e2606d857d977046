//! The transport URL's meaning for RabbitMQ: brokers, credentials, TLS, and options.

use std::time::Duration;

use messaging_core::codec::CodecKind;
use messaging_core::{InvalidTransportUrl, Target, TransportError, TransportUrl};

use super::compression::{self, Compression};
use super::connection::RetrySchedule;
use super::declare::{Declares, QuorumLimits};
use super::queue_manager::{self, QueueManager};

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

/// TLS material, read from the files the options name when the transport is opened.
/// Its `Debug` names the files, never their contents.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// `ssl_ca_file`: PEM certificates trusted besides the system's roots.
    ca: Option<(String, String)>,
    /// `ssl_cert_file` + `ssl_key_file`: the client's certificate chain and key (PEM).
    identity: Option<(String, Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ssl_ca_file", &self.ca.as_ref().map(|(path, _)| path))
            .field(
                "ssl_cert_file",
                &self.identity.as_ref().map(|(path, _, _)| path),
            )
            .finish()
    }
}

impl Tls {
    /// lapin's TLS configuration.
    pub(crate) fn lapin_config(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: self.identity.as_ref().map(|(_, pem, key)| {
                lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.clone(),
                }
            }),
            cert_chain: self.ca.as_ref().map(|(_, pem)| pem.clone()),
        }
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
    /// The largest message body sent or accepted, in bytes.
    pub(crate) max_message_size: usize,
    /// What exchanges and queues are declared with (oslo's queue options).
    pub(crate) declares: Declares,
    /// oslo's `direct_mandatory_flag` (default true): replies are published mandatory,
    /// so one whose queue is gone is noticed (and retried, then dropped with a log
    /// line) rather than silently dropped by the broker.
    pub(crate) direct_mandatory: bool,
    /// When to retry a lost connection (`rabbit_retry_interval`, `rabbit_retry_backoff`,
    /// `rabbit_interval_max`).
    pub(crate) reconnect: RetrySchedule,
    /// The wait before consuming again after the broker cancelled a consumer (a queue
    /// deleted, a node down): `kombu_reconnect_delay` plus up to
    /// `kombu_reconnect_splay`, random.
    pub(crate) cancel_delay: (Duration, Duration),
    /// `kombu_missing_consumer_retry_timeout`: how long a reply to a missing queue is
    /// retried at most.
    pub(crate) missing_consumer_retry_timeout: Duration,
    /// TLS files (`ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`).
    pub(crate) tls: Tls,
    /// `use_queue_manager` (with `hostname` and `processname`): stable reply and
    /// fanout queue names.
    pub(crate) queue_manager: Option<QueueManager>,
    /// `kombu_compression`: how sent bodies are compressed (received ones are
    /// decompressed by their header whatever this says).
    pub(crate) compression: Option<Compression>,
}

/// RabbitMQ 3.x's own default `max_message_size`: 128 MiB.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// The largest `max_message_size` RabbitMQ accepts: 512 MiB.
const LARGEST_MAX_MESSAGE_SIZE: u64 = 512 * 1024 * 1024;

/// The longest queue TTL taken, in seconds (`x-expires` is a 32-bit count of
/// milliseconds on some brokers: about 24 days).
const MAX_TTL_S: u64 = 2_000_000;

/// The options this transport understands (oslo's names, plus a few of ours).
pub(crate) const KNOWN: &[&str] = &[
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
    "amqp_auto_delete",
    "rabbit_ha_queues",
    "rabbit_quorum_queue",
    "rabbit_transient_quorum_queue",
    "rabbit_quorum_delivery_limit",
    "rabbit_quorum_max_memory_length",
    "rabbit_quorum_max_memory_bytes",
    "rabbit_stream_fanout",
    "enable_cancel_on_failover",
    "direct_mandatory_flag",
    "rabbit_retry_interval",
    "rabbit_retry_backoff",
    "rabbit_interval_max",
    "kombu_reconnect_delay",
    "kombu_reconnect_splay",
    "kombu_missing_consumer_retry_timeout",
    "kombu_reconnect_timeout",
    "heartbeat_rate",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_version",
    "ssl_enforce_hostname_verification",
    "rabbit_login_method",
    "use_queue_manager",
    "hostname",
    "processname",
    "kombu_compression",
];

/// The largest TLS file read (`ssl_ca_file`, `ssl_cert_file`, `ssl_key_file`): a CA
/// bundle of every public root is under 1 MiB.
const TLS_FILE_LIMIT: u64 = 8 << 20;

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

/// Reads the TLS files the URL names, and checks the TLS options oslo has that rustls
/// cannot honour. Errors name the option and the file, never what it holds.
fn tls_files(
    url: &TransportUrl,
    tls: bool,
    verify_hostname: bool,
    bad: &dyn Fn(String) -> TransportError,
) -> Result<Tls, TransportError> {
    let path = |key: &str| url.option(key).filter(|p| !p.is_empty());
    let named = ["ssl_ca_file", "ssl_cert_file", "ssl_key_file"]
        .into_iter()
        .find(|key| path(key).is_some());
    if !tls {
        if let Some(key) = named {
            return Err(bad(format!(
                "`{key}` is set but TLS is off: use `amqps://` or `ssl=true`"
            )));
        }
        return Ok(Tls::default());
    }
    if !verify_hostname {
        return Err(bad(
            "`ssl_enforce_hostname_verification=false` is not supported: rustls always checks that the broker's certificate names the host it connects to (give it a subjectAltName for that host or IP address)"
                .to_owned(),
        ));
    }
    match url
        .option("ssl_version")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("" | "tlsv1_2" | "tlsv1.2" | "tlsv1_3" | "tlsv1.3") => {}
        Some(_) => {
            return Err(bad(format!(
                "`ssl_version` `{}` is not available: rustls speaks TLS 1.2 and 1.3 only (TLSv1_2, TLSv1_3), and negotiates the highest both sides have",
                url.option("ssl_version").unwrap_or_default()
            )));
        }
    }
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    // At most TLS_FILE_LIMIT bytes: `/dev/zero` or an endless pipe named as a file
    // is an error, not memory exhausted.
    let read = |key: &str| -> Result<Option<(String, Vec<u8>)>, TransportError> {
        use std::io::Read;
        let Some(file) = path(key) else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|f| f.take(TLS_FILE_LIMIT + 1).read_to_end(&mut bytes))
            .map_err(|e| bad(format!("`{key}`: cannot read `{file}`: {e}")))?;
        if bytes.len() as u64 > TLS_FILE_LIMIT {
            return Err(bad(format!(
                "`{key}`: `{file}` is larger than {} MiB: not a certificate or key file",
                TLS_FILE_LIMIT >> 20
            )));
        }
        Ok(Some((file.to_owned(), bytes)))
    };
    // Parsed now, so that a bad file is a clear error when the transport opens, not a
    // failed handshake later. The parsers' errors are not quoted: they could carry
    // bytes of a key.
    let certificates = |key: &str, file: &str, bytes: &[u8]| -> Result<(), TransportError> {
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
        match parsed {
            Ok(certs) if !certs.is_empty() => Ok(()),
            _ => Err(bad(format!(
                "`{key}`: `{file}` holds no readable PEM certificate"
            ))),
        }
    };
    let ca = match read("ssl_ca_file")? {
        Some((file, bytes)) => {
            certificates("ssl_ca_file", &file, &bytes)?;
            Some((file, String::from_utf8_lossy(&bytes).into_owned()))
        }
        None => None,
    };
    let cert = read("ssl_cert_file")?;
    if let Some((file, bytes)) = &cert {
        certificates("ssl_cert_file", file, bytes)?;
    }
    let key = read("ssl_key_file")?;
    if let Some((file, bytes)) = &key
        && PrivateKeyDer::from_pem_slice(bytes).is_err()
    {
        return Err(bad(format!(
            "`ssl_key_file`: `{file}` holds no readable, unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)"
        )));
    }
    let identity = match (cert, key) {
        (Some((file, pem)), Some((_, key))) => Some((file, pem, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad("`ssl_cert_file` needs `ssl_key_file`".to_owned()));
        }
        (None, Some(_)) => {
            return Err(bad("`ssl_key_file` needs `ssl_cert_file`".to_owned()));
        }
    };
    Ok(Tls { ca, identity })
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
        // oslo.config's booleans: true/1/on/yes and false/0/off/no, any case.
        let flag_or = |key: &str, default: bool| -> Result<bool, TransportError> {
            match url.option(key).map(str::to_ascii_lowercase).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes" | "on") => Ok(true),
                Some("false" | "0" | "no" | "off") => Ok(false),
                Some(_) => Err(bad(format!(
                    "`{key}` must be true or false, got `{}`",
                    url.option(key).unwrap_or_default()
                ))),
            }
        };
        let flag = |key: &str| flag_or(key, false);
        // oslo.config's FloatOpt: seconds, within bounds.
        let seconds = |key: &str, default: f64, max: f64| -> Result<Duration, TransportError> {
            match url.option(key) {
                None => Ok(Duration::from_secs_f64(default)),
                Some(value) => value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (0.0..=max).contains(v))
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        bad(format!(
                            "`{key}` must be a number of seconds from 0 to {max}, got `{value}`"
                        ))
                    }),
            }
        };
        let tls = url.scheme() == "amqps" || flag("ssl")?;
        let files = tls_files(
            url,
            tls,
            flag_or("ssl_enforce_hostname_verification", true)?,
            &bad,
        )?;
        let mechanism = match url
            .option("rabbit_login_method")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("AMQPLAIN") => "amqplain",
            Some("PLAIN") => "plain",
            Some("RABBIT-CR-DEMO") => "rabbit-cr-demo",
            Some("EXTERNAL") if files.identity.is_some() => "external",
            Some("EXTERNAL") => {
                return Err(bad(
                    "`rabbit_login_method=EXTERNAL` logs in with a client certificate: give `ssl_cert_file` and `ssl_key_file`"
                        .to_owned(),
                ));
            }
            Some(_) => {
                return Err(bad(format!(
                    "`rabbit_login_method` must be AMQPLAIN, PLAIN, EXTERNAL or RABBIT-CR-DEMO, got `{}`",
                    url.option("rabbit_login_method").unwrap_or_default()
                )));
            }
        };
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
        // oslo checks the heartbeat this many times per threshold; lapin sends and
        // expects heartbeats on its own schedule (every half threshold), so the value is
        // checked and otherwise unused.
        number(&["heartbeat_rate"], 3, 1000)?;
        let connect_timeout = Duration::from_secs(number(&["connect_timeout"], 10, 3600)?.max(1));
        let vhost = match url.virtual_host() {
            None | Some("") => "%2F".to_owned(),
            Some(vhost) => quote(vhost),
        };
        let scheme = if tls { "amqps" } else { "amqp" };
        let default_port = if tls { 5671 } else { 5672 };
        let query = format!(
            "heartbeat={heartbeat}&connection_timeout={}&auth_mechanism={mechanism}",
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
        let declares = Declares {
            durable_queues: flag("amqp_durable_queues")?,
            auto_delete: flag("amqp_auto_delete")?,
            ha_queues: flag("rabbit_ha_queues")?,
            quorum: flag("rabbit_quorum_queue")?,
            transient_quorum: flag("rabbit_transient_quorum_queue")?,
            quorum_limits: QuorumLimits {
                delivery_limit: number(&["rabbit_quorum_delivery_limit"], 0, i64::MAX as u64)?,
                max_memory_length: number(
                    &["rabbit_quorum_max_memory_length"],
                    0,
                    i64::MAX as u64,
                )?,
                max_memory_bytes: number(&["rabbit_quorum_max_memory_bytes"], 0, i64::MAX as u64)?,
            },
            transient_ttl_s: number(&["rabbit_transient_queues_ttl"], 1800, MAX_TTL_S)?,
            stream_fanout: flag("rabbit_stream_fanout")?,
            cancel_on_failover: flag("enable_cancel_on_failover")?,
            queue_ttl_s: match url.option("queue_ttl") {
                None => None,
                Some(_) => Some(number(&["queue_ttl"], 0, MAX_TTL_S)?.max(1)),
            },
        };
        // oslo refuses these combinations when the driver starts; so do we, naming them.
        if declares.quorum && declares.ha_queues {
            return Err(bad(
                "`rabbit_quorum_queue` and `rabbit_ha_queues` are both set: a queue is quorum or HA (mirrored), not both"
                    .to_owned(),
            ));
        }
        if declares.stream_fanout && !declares.transient_quorum {
            return Err(bad(
                "`rabbit_stream_fanout` needs `rabbit_transient_quorum_queue=true` (as in oslo)"
                    .to_owned(),
            ));
        }
        Ok(Options {
            brokers,
            shuffle,
            control_exchange: control_exchange.to_owned(),
            max_message_size: max_message_size as usize,
            prefetch: number(
                &["prefetch", "rabbit_qos_prefetch_count"],
                64,
                u16::MAX as u64,
            )?
            .max(1) as u16,
            connect_timeout,
            declares,
            direct_mandatory: flag_or("direct_mandatory_flag", true)?,
            reconnect: RetrySchedule {
                interval: Duration::from_secs(
                    number(&["rabbit_retry_interval"], 1, MAX_TTL_S)?.max(1),
                ),
                step: Duration::from_secs(number(&["rabbit_retry_backoff"], 2, MAX_TTL_S)?),
                max: Duration::from_secs(number(&["rabbit_interval_max"], 30, MAX_TTL_S)?.max(1)),
            },
            // oslo bounds the delay by 90 % of its requeue interval (5 s).
            cancel_delay: (
                seconds("kombu_reconnect_delay", 1.0, 4.5)?,
                seconds("kombu_reconnect_splay", 0.0, 3600.0)?,
            ),
            missing_consumer_retry_timeout: Duration::from_secs(number(
                &[
                    "kombu_missing_consumer_retry_timeout",
                    "kombu_reconnect_timeout",
                ],
                60,
                3600,
            )?),
            tls: files,
            compression: compression::parse(url.option("kombu_compression")).map_err(bad)?,
            queue_manager: flag("use_queue_manager")?.then(|| {
                QueueManager::new(
                    url.option("hostname")
                        .map_or_else(queue_manager::hostname, str::to_owned),
                    url.option("processname")
                        .map_or_else(queue_manager::processname, str::to_owned),
                )
            }),
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
            "amqp://guest:guest@localhost:5672/%2F?heartbeat=60&connection_timeout=10000&auth_mechanism=amqplain"
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
        assert!(!options("rabbit://h/").unwrap().declares.durable());
        for yes in ["true", "True", "ON", "yes", "1"] {
            let url = format!("rabbit://h/?amqp_durable_queues={yes}");
            assert!(options(&url).unwrap().declares.durable(), "{yes}");
        }
        assert!(
            options("rabbit://h/?rabbit_quorum_queue=true")
                .unwrap()
                .declares
                .durable(),
            "quorum queues are durable"
        );
    }

    #[test]
    fn a_zero_transient_ttl_means_no_expiry() {
        assert_eq!(
            options("rabbit://h/?rabbit_transient_queues_ttl=0")
                .unwrap()
                .declares
                .transient_ttl_s,
            0
        );
        assert_eq!(
            options("rabbit://h/").unwrap().declares.transient_ttl_s,
            1800
        );
    }

    #[test]
    fn every_oslo_queue_option_is_read() {
        let d = options(
            "rabbit://h/?amqp_auto_delete=true&rabbit_transient_quorum_queue=true\
             &rabbit_quorum_queue=true&rabbit_quorum_delivery_limit=7\
             &rabbit_quorum_max_memory_length=100&rabbit_quorum_max_memory_bytes=1000\
             &rabbit_stream_fanout=true&enable_cancel_on_failover=true\
             &rabbit_transient_queues_ttl=60",
        )
        .unwrap()
        .declares;
        assert_eq!(
            d,
            Declares {
                durable_queues: false,
                auto_delete: true,
                ha_queues: false,
                quorum: true,
                transient_quorum: true,
                quorum_limits: QuorumLimits {
                    delivery_limit: 7,
                    max_memory_length: 100,
                    max_memory_bytes: 1000,
                },
                transient_ttl_s: 60,
                stream_fanout: true,
                cancel_on_failover: true,
                queue_ttl_s: None,
            }
        );
        assert!(
            options("rabbit://h/?rabbit_ha_queues=yes")
                .unwrap()
                .declares
                .ha_queues
        );
    }

    #[test]
    fn oslos_retry_options_set_the_schedules() {
        let o = options("rabbit://h/").unwrap();
        assert_eq!(o.reconnect, RetrySchedule::default());
        assert_eq!(o.cancel_delay, (Duration::from_secs(1), Duration::ZERO));
        assert_eq!(o.missing_consumer_retry_timeout, Duration::from_secs(60));
        let o = options(
            "rabbit://h/?rabbit_retry_interval=2&rabbit_retry_backoff=0&rabbit_interval_max=4\
             &kombu_reconnect_delay=0.5&kombu_reconnect_splay=2.5\
             &kombu_reconnect_timeout=9&heartbeat_rate=2",
        )
        .unwrap();
        assert_eq!(
            o.reconnect,
            RetrySchedule {
                interval: Duration::from_secs(2),
                step: Duration::ZERO,
                max: Duration::from_secs(4),
            }
        );
        assert_eq!(
            o.cancel_delay,
            (Duration::from_millis(500), Duration::from_millis(2500))
        );
        assert_eq!(o.missing_consumer_retry_timeout, Duration::from_secs(9));
        for (url, says) in [
            (
                "rabbit://h/?kombu_reconnect_delay=5",
                "`kombu_reconnect_delay` must be a number of seconds from 0 to 4.5",
            ),
            (
                "rabbit://h/?kombu_reconnect_splay=-1",
                "`kombu_reconnect_splay`",
            ),
            (
                "rabbit://h/?rabbit_retry_interval=x",
                "`rabbit_retry_interval`",
            ),
            ("rabbit://h/?heartbeat_rate=often", "`heartbeat_rate`"),
        ] {
            let error = options(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn tls_options_are_checked_and_errors_never_show_key_material() {
        let dir = std::env::temp_dir().join(format!("rabbit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nS3CRETKEYBYTES\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let cert = dir.join("client.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let encrypted = dir.join("encrypted.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nS3CRETKEYBYTES\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let encrypted = encrypted.display().to_string();
        let (key, cert) = (key.display().to_string(), cert.display().to_string());
        let o = options(&format!(
            "amqps://h/?ssl_cert_file={cert}&ssl_key_file={key}&ssl_ca_file={cert}\
             &rabbit_login_method=EXTERNAL&ssl_version=TLSv1_2"
        ))
        .unwrap();
        assert!(o.brokers[0].uri.contains("auth_mechanism=external"));
        let debug = format!("{o:?}");
        assert!(
            !debug.contains("S3CRET") && debug.contains(&cert),
            "{debug}"
        );
        assert!(
            options("rabbit://h/").unwrap().brokers[0]
                .uri
                .contains("auth_mechanism=amqplain"),
            "oslo's default login method"
        );
        for (url, says) in [
            (
                format!("rabbit://h/?ssl_ca_file={cert}"),
                "TLS is off".to_owned(),
            ),
            (
                "amqps://h/?ssl_ca_file=/no/such/file".to_owned(),
                "`ssl_ca_file`: cannot read `/no/such/file`".to_owned(),
            ),
            (
                format!("amqps://h/?ssl_ca_file={key}"),
                format!("`{key}` holds no readable PEM certificate"),
            ),
            (
                format!("amqps://h/?ssl_cert_file={cert}"),
                "needs `ssl_key_file`".to_owned(),
            ),
            (
                format!("amqps://h/?ssl_cert_file={cert}&ssl_key_file={encrypted}"),
                format!("`{encrypted}` holds no readable, unencrypted PEM private key"),
            ),
            (
                "amqps://h/?rabbit_login_method=EXTERNAL".to_owned(),
                "give `ssl_cert_file` and `ssl_key_file`".to_owned(),
            ),
            (
                "amqps://h/?ssl_enforce_hostname_verification=false".to_owned(),
                "not supported".to_owned(),
            ),
            (
                "amqps://h/?ssl_version=SSLv3".to_owned(),
                "TLS 1.2 and 1.3 only".to_owned(),
            ),
            (
                "rabbit://h/?rabbit_login_method=KERBEROS".to_owned(),
                "AMQPLAIN, PLAIN".to_owned(),
            ),
        ] {
            let error = options(&url).unwrap_err().to_string();
            assert!(error.contains(&says), "{url}: {error}");
            assert!(!error.contains("S3CRET"), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replies_are_mandatory_unless_direct_mandatory_flag_is_off() {
        assert!(options("rabbit://h/").unwrap().direct_mandatory);
        assert!(
            !options("rabbit://h/?direct_mandatory_flag=False")
                .unwrap()
                .direct_mandatory
        );
    }

    #[test]
    fn combinations_oslo_refuses_are_errors_naming_the_options() {
        for (url, says) in [
            (
                "rabbit://u:secret@h/?rabbit_quorum_queue=true&rabbit_ha_queues=true",
                "`rabbit_quorum_queue` and `rabbit_ha_queues`",
            ),
            (
                "rabbit://u:secret@h/?rabbit_stream_fanout=true",
                "needs `rabbit_transient_quorum_queue=true`",
            ),
            (
                "rabbit://u:secret@h/?rabbit_quorum_delivery_limit=-1",
                "`rabbit_quorum_delivery_limit` must be a whole number",
            ),
            (
                "rabbit://u:secret@h/?rabbit_ha_queues=2",
                "`rabbit_ha_queues` must be true or false",
            ),
        ] {
            let error = options(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
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
