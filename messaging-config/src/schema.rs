//! The sections and options read here, their older names, and the defaults `$`
//! references may use.

/// `[DEFAULT]`.
pub(crate) const DEFAULT: &str = "DEFAULT";
/// oslo.messaging's RabbitMQ driver options.
pub(crate) const RABBIT: &str = "oslo_messaging_rabbit";
/// oslo.messaging's notifier options.
pub(crate) const NOTIFICATIONS: &str = "oslo_messaging_notifications";
/// Ours: the NATS transport's options, in the same style.
pub(crate) const NATS: &str = "oslo_messaging_nats";

/// The `[DEFAULT]` options read here (oslo.messaging's `transport.py`, `rpc/client.py`,
/// `server.py`, `rpc/dispatcher.py`).
pub(crate) const DEFAULT_OPTIONS: &[&str] = &[
    "transport_url",
    "control_exchange",
    "rpc_response_timeout",
    "executor_thread_pool_size",
    "rpc_thread_pool_size",
    "rpc_ping_enabled",
];

/// The `[oslo_messaging_notifications]` options (`notify/notifier.py`,
/// `notify/_impl_routing.py`).
pub(crate) const NOTIFICATION_OPTIONS: &[&str] = &[
    "driver",
    "transport_url",
    "topics",
    "retry",
    "routing_config",
];

/// `[oslo_messaging_rabbit]` options of oslo's that mean nothing to this transport
/// (it holds one connection per transport, not a pool): checked to be whole numbers,
/// then ignored.
pub(crate) const RABBIT_POOL_OPTIONS: &[&str] =
    &["rpc_conn_pool_size", "conn_pool_min_size", "conn_pool_ttl"];

/// `[oslo_messaging_rabbit] ssl_enforce_fips_mode`: `true` cannot be honoured (rustls
/// has no FIPS mode here), so it is refused rather than ignored.
pub(crate) const FIPS: &str = "ssl_enforce_fips_mode";

/// Names of one option, its own name first: oslo's deprecated names
/// (`rpc_thread_pool_size`, `kombu_reconnect_timeout`), and the transports' short
/// names for oslo's (`heartbeat`, `prefetch`). One value is taken per option, by
/// oslo's rule for deprecated names (see [`Store::single`](crate::sources::Store::single)).
const ALIASES: &[&[&str]] = &[
    &["executor_thread_pool_size", "rpc_thread_pool_size"],
    &[
        "kombu_missing_consumer_retry_timeout",
        "kombu_reconnect_timeout",
    ],
    &["heartbeat_timeout_threshold", "heartbeat"],
    &["rabbit_qos_prefetch_count", "prefetch"],
];

/// All the names of the option `key` is a name of (itself alone if it has no other).
pub(crate) fn names_of(key: &str) -> Vec<&str> {
    ALIASES
        .iter()
        .find(|names| names.contains(&key))
        .map_or_else(|| vec![key], |names| names.to_vec())
}

/// The section holding the options of a transport driver, if it has one.
pub(crate) fn section_of_driver(driver: &str) -> Option<&'static str> {
    match driver {
        "rabbit" | "kombu" | "amqp" | "amqps" => Some(RABBIT),
        "nats" | "tls" => Some(NATS),
        _ => None,
    }
}

/// What a section is to this crate.
pub(crate) enum Section {
    /// Read: these keys are known.
    Known(Vec<&'static str>),
    /// A transport's section, for a transport this build does not have.
    WithoutTransport(&'static str),
    /// Not read.
    Unknown,
}

/// What the (normalised) section `group` is.
pub(crate) fn section(group: &str) -> Section {
    let transport = |driver: &str, name: &'static str, extra: &[&'static str]| {
        match messaging_transports::known_options(driver) {
            Some(known) => Section::Known(known.iter().chain(extra).copied().collect()),
            None => Section::WithoutTransport(name),
        }
    };
    match group {
        DEFAULT => Section::Known(DEFAULT_OPTIONS.to_vec()),
        NOTIFICATIONS => Section::Known(NOTIFICATION_OPTIONS.to_vec()),
        RABBIT => transport(
            "rabbit",
            "RabbitMQ",
            &[RABBIT_POOL_OPTIONS, &[FIPS]].concat(),
        ),
        NATS => transport("nats", "NATS", &[]),
        _ => Section::Unknown,
    }
}

/// The default of an option read here, as oslo would substitute it for `$name`.
pub(crate) fn default_text(group: &str, key: &str) -> Option<&'static str> {
    match (group, key) {
        (DEFAULT, "control_exchange") => Some("openstack"),
        (DEFAULT, "rpc_response_timeout") => Some("60"),
        (DEFAULT, "executor_thread_pool_size") => Some("64"),
        (DEFAULT, "rpc_ping_enabled") => Some("False"),
        (NOTIFICATIONS, "retry") => Some("-1"),
        (NOTIFICATIONS, "routing_config") => Some(""),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_list_the_own_name_first() {
        assert_eq!(
            names_of("rpc_thread_pool_size"),
            ["executor_thread_pool_size", "rpc_thread_pool_size"]
        );
        assert_eq!(names_of("heartbeat_rate"), ["heartbeat_rate"]);
    }

    #[test]
    fn transports_sections_follow_their_drivers() {
        for driver in ["rabbit", "kombu", "amqp", "amqps"] {
            assert_eq!(section_of_driver(driver), Some(RABBIT));
        }
        assert_eq!(section_of_driver("nats"), Some(NATS));
        assert_eq!(section_of_driver("memory"), None);
        assert!(matches!(section("database"), Section::Unknown));
        assert!(matches!(section("DEFAULT"), Section::Known(k) if k.contains(&"transport_url")));
    }
}
