//! The transport URL's meaning for NATS.

use std::time::Duration;

use messaging_core::codec::CodecKind;
use messaging_core::{InvalidTransportUrl, Secret, TransportError, TransportUrl};

#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// `nats://host:port` (or `tls://`), in the order written.
    pub(crate) servers: Vec<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) tls: bool,
    pub(crate) codec: CodecKind,
    pub(crate) prefix: String,
    pub(crate) control_exchange: String,
    pub(crate) prefetch: usize,
    pub(crate) connect_timeout: Duration,
    /// Durable notification consumers are removed after this long without a listener.
    pub(crate) consumer_ttl: Duration,
    /// Notifications older than this are dropped from the stream.
    pub(crate) max_age: Duration,
    /// The largest message body sent or accepted, if the URL sets one (otherwise the
    /// server's advertised `max_payload`).
    pub(crate) max_message_size: Option<usize>,
}

const KNOWN: &[&str] = &[
    "codec",
    "subject_prefix",
    "control_exchange",
    "prefetch",
    "connect_timeout",
    "consumer_ttl",
    "notification_max_age",
    "max_message_size",
    "tls",
];

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
        let number = |key: &str, default: u64| -> Result<u64, TransportError> {
            match url.option(key) {
                None => Ok(default),
                Some(value) => value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("`{key}` must be a whole number, got `{value}`"))),
            }
        };
        let tls = match url.option("tls") {
            None => url.scheme() == "tls",
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => return Err(bad(format!("`tls` must be true or false, got `{other}`"))),
        };
        let codec = match url.option("codec") {
            None => CodecKind::Bincode,
            Some(name) => name
                .parse()
                .map_err(|e: messaging_core::codec::UnknownCodec| bad(e.to_string()))?,
        };
        let prefix = url.option("subject_prefix").unwrap_or("msg").to_owned();
        if prefix.is_empty() || prefix.contains(['*', '>', ' ', '\t']) {
            return Err(bad(format!(
                "`subject_prefix` `{prefix}` is not a valid subject prefix"
            )));
        }
        let first = url.hosts().first();
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
                        if tls { "tls" } else { "nats" },
                        h.port.unwrap_or(4222)
                    )
                })
                .collect()
        };
        Ok(Options {
            servers,
            user: first.and_then(|h| h.username.clone()),
            password: first.and_then(|h| h.password.clone()),
            tls,
            codec,
            prefix,
            control_exchange: url
                .option("control_exchange")
                .unwrap_or("openstack")
                .to_owned(),
            prefetch: number("prefetch", 1000)?.clamp(1, 100_000) as usize,
            connect_timeout: Duration::from_secs(number("connect_timeout", 10)?.max(1)),
            consumer_ttl: Duration::from_secs(number("consumer_ttl", 7 * 24 * 3600)?.max(1)),
            max_age: Duration::from_secs(number("notification_max_age", 24 * 3600)?.max(1)),
            max_message_size: match url.option("max_message_size") {
                None => None,
                Some(_) => match usize::try_from(number("max_message_size", 0)?) {
                    Ok(size) if size > 0 => Some(size),
                    _ => {
                        return Err(bad(
                            "`max_message_size` must be a positive number of bytes".to_owned()
                        ));
                    }
                },
            },
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
        assert_eq!(
            (o.user.as_deref(), o.password.as_ref().map(Secret::expose)),
            (Some("me"), Some("secret"))
        );
        assert_eq!((o.codec, o.prefetch), (CodecKind::Json, 8));
        assert_eq!(o.max_message_size, None);
        assert!(options("tls://h").unwrap().tls);
        let o = options("nats://h?max_message_size=4096").unwrap();
        assert_eq!(o.max_message_size, Some(4096));
    }

    #[test]
    fn bad_options_are_typed_errors_without_passwords() {
        for (url, expected) in [
            ("nats://u:secret@h?nope=1", "unknown option `nope`"),
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
                "`max_message_size` must be a positive number",
            ),
            (
                "nats://u:secret@h?max_message_size=-1",
                "`max_message_size` must be a whole number",
            ),
        ] {
            let err = options(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
