//! [`Target`]: where a message goes, or what a server listens to.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidTarget;
use crate::untrusted::Untrusted;

/// The rule of [`Target::validate_names`] for one name (a pool's too): non-empty, at
/// most [`Target::MAX_NAME_LEN`] bytes, no control characters, `*` or `#`.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("the {field} name is empty"))
    } else if value.len() > Target::MAX_NAME_LEN {
        Err(format!(
            "the {field} name is {} bytes long (at most {})",
            value.len(),
            Target::MAX_NAME_LEN
        ))
    } else if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || matches!(c, '*' | '#'))
    {
        Err(format!(
            "the {field} name contains {c:?} (`*`, `#` and control characters are not allowed)"
        ))
    } else {
        Ok(())
    }
}

/// Identifies the destination of messages, or what a server or listener consumes.
///
/// The same type serves every role, with different fields mattering in each (as in
/// oslo.messaging):
///
/// | role | required | optional |
/// |---|---|---|
/// | RPC server | `topic`, `server` | `exchange` |
/// | endpoint | — | `namespace`, `version` |
/// | RPC client | `topic` | everything else |
/// | notifier / notification listener | `topic` | `exchange` |
///
/// An `exchange` of `None` means the transport's control exchange (`openstack` by default).
///
/// # Examples
///
/// ```
/// use messaging_core::Target;
///
/// let server = Target::new("compute").with_server("host1");
/// assert!(server.validate_for_listen().is_ok());
/// let client = Target::new("compute").with_fanout(true);
/// assert!(client.validate_for_call().is_err()); // a call cannot be fanout
/// assert_eq!(server.to_string(), "<Target topic=compute, server=host1>");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// Exchange (scope) of the topic; `None` means the transport's default exchange.
    pub exchange: Option<String>,
    /// Topic: the name of a service or notification stream.
    pub topic: Option<String>,
    /// Endpoint namespace (RPC).
    pub namespace: Option<String>,
    /// Interface version, `"major.minor[.revision]"` (RPC).
    pub version: Option<String>,
    /// A specific server of the topic.
    pub server: Option<String>,
    /// Deliver to every server of the topic (casts only).
    pub fanout: bool,
    /// Further namespaces an endpoint also accepts.
    pub legacy_namespaces: Vec<String>,
}

impl Target {
    /// The longest exchange, topic or server name a target may carry, in bytes: AMQP's
    /// short-string limit, which every RabbitMQ exchange, queue and routing key obeys.
    pub const MAX_NAME_LEN: usize = 255;

    /// A target with the given topic and every other field unset.
    pub fn new(topic: impl Into<String>) -> Self {
        Target {
            topic: Some(topic.into()),
            ..Target::default()
        }
    }

    /// Returns a copy with `exchange` set. (Fields are public: set one to `None` to clear it.)
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// Returns a copy with `topic` set.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Returns a copy with `server` set.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// Returns a copy with `namespace` set.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Returns a copy with `version` set.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Returns a copy with `fanout` replaced.
    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }

    /// Returns a copy with `legacy_namespaces` replaced.
    pub fn with_legacy_namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.legacy_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// The namespaces an endpoint with this target accepts: `namespace` (possibly the
    /// null namespace, `None`) followed by `legacy_namespaces`.
    pub fn accepted_namespaces(&self) -> impl Iterator<Item = Option<&str>> {
        std::iter::once(self.namespace.as_deref())
            .chain(self.legacy_namespaces.iter().map(|ns| Some(ns.as_str())))
    }

    /// Checks the names that become routing and binding keys, queue, exchange and
    /// subject names on a broker (`exchange`, `topic`, `server`), whatever the role:
    /// each one given must be non-empty, at most [`MAX_NAME_LEN`](Target::MAX_NAME_LEN) bytes long, and free
    /// of control characters and of `*` and `#` (the wildcards of AMQP binding keys: a
    /// server listening on topic `#` would receive every other topic's messages).
    /// Every `validate_for_*` method checks this first.
    ///
    /// # Examples
    ///
    /// ```
    /// use messaging_core::Target;
    ///
    /// assert!(Target::new("compute").with_server("host-1.example").validate_names().is_ok());
    /// assert!(Target::new("#").validate_names().is_err());
    /// assert!(Target::new("").validate_names().is_err());
    /// assert!(Target::new("t".repeat(256)).validate_names().is_err());
    /// ```
    pub fn validate_names(&self) -> Result<(), InvalidTarget> {
        let names = [
            ("exchange", &self.exchange),
            ("topic", &self.topic),
            ("server", &self.server),
        ];
        for (field, value) in names {
            if let Some(value) = value
                && let Err(problem) = check_name(field, value)
            {
                return Err(InvalidTarget::new(problem, self));
            }
        }
        Ok(())
    }

    /// Checks the rule for an RPC server: topic and server must both be set (and
    /// [`validate_names`](Target::validate_names)).
    pub fn validate_for_listen(&self) -> Result<(), InvalidTarget> {
        self.validate_names()?;
        if self.topic.is_none() || self.server.is_none() {
            return Err(InvalidTarget::new(
                "a server's target must have topic and server names specified",
                self,
            ));
        }
        Ok(())
    }

    /// Checks the rule for a notification listener: the topic must be set (and
    /// [`validate_names`](Target::validate_names)).
    pub fn validate_for_notification_listen(&self) -> Result<(), InvalidTarget> {
        self.validate_names()?;
        if self.topic.is_none() {
            return Err(InvalidTarget::new(
                "a target must have topic specified",
                self,
            ));
        }
        Ok(())
    }

    /// Checks the rule for any send (cast, fanout cast, notification): the topic must be
    /// set (and [`validate_names`](Target::validate_names)).
    pub fn validate_for_send(&self) -> Result<(), InvalidTarget> {
        self.validate_names()?;
        if self.topic.is_none() {
            return Err(InvalidTarget::new("a topic is required to send", self));
        }
        Ok(())
    }

    /// Checks the rules for a call: a topic is required and fanout is not allowed.
    pub fn validate_for_call(&self) -> Result<(), InvalidTarget> {
        self.validate_for_send()?;
        if self.fanout {
            return Err(InvalidTarget::new(
                "a call cannot be used with fanout",
                self,
            ));
        }
        Ok(())
    }
}

/// oslo's representation: `<Target topic=t, server=s>`, listing only the fields that are set.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let fields = [
            ("exchange", &self.exchange),
            ("topic", &self.topic),
            ("namespace", &self.namespace),
            ("version", &self.version),
            ("server", &self.server),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                parts.push(format!("{name}={}", Untrusted::new(value)));
            }
        }
        if self.fanout {
            parts.push("fanout=true".to_owned());
        }
        if parts.is_empty() {
            f.write_str("<Target>")
        } else {
            write!(f, "<Target {}>", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_requires_topic_and_server() {
        let err = Target::new("t").validate_for_listen().unwrap_err();
        assert_eq!(err.target().topic.as_deref(), Some("t"));
        let err = Target::default()
            .with_server("s")
            .validate_for_listen()
            .unwrap_err();
        assert_eq!(err.target().server.as_deref(), Some("s"));
        assert!(
            Target::new("t")
                .with_server("s")
                .validate_for_listen()
                .is_ok()
        );
    }

    #[test]
    fn send_requires_topic_and_call_rejects_fanout() {
        assert!(Target::default().validate_for_send().is_err());
        assert!(Target::default().validate_for_call().is_err());
        let fanout = Target::new("t").with_fanout(true);
        assert!(fanout.validate_for_send().is_ok());
        let err = fanout.validate_for_call().unwrap_err();
        assert_eq!(
            err.to_string(),
            "a call cannot be used with fanout: <Target topic=t, fanout=true>"
        );
    }

    #[test]
    fn accepted_namespaces_lists_primary_then_legacy() {
        let t = Target::default()
            .with_namespace("a")
            .with_legacy_namespaces(["b"]);
        assert_eq!(
            t.accepted_namespaces().collect::<Vec<_>>(),
            [Some("a"), Some("b")]
        );
        assert_eq!(
            Target::default().accepted_namespaces().collect::<Vec<_>>(),
            [None]
        );
    }

    #[test]
    fn names_that_would_become_wildcards_or_break_brokers_are_refused() {
        let long = "t".repeat(Target::MAX_NAME_LEN + 1);
        for (target, expected) in [
            (Target::new("#"), "contains '#'"),
            (Target::new("a.*"), "contains '*'"),
            (
                Target::new("t").with_server("s*"),
                "server name contains '*'",
            ),
            (Target::new(""), "topic name is empty"),
            (Target::new("t").with_exchange(""), "exchange name is empty"),
            (Target::new("t\nforged log line"), "contains '\\n'"),
            (Target::new(long.as_str()), "256 bytes long (at most 255)"),
        ] {
            let server = target.server.clone().unwrap_or_else(|| "s".to_owned());
            for result in [
                target.validate_for_send(),
                target.clone().with_server(server).validate_for_listen(),
                target.validate_for_notification_listen(),
            ] {
                let err = result.unwrap_err().to_string();
                assert!(err.contains(expected), "{err}");
            }
        }
        let ok = Target::new("t".repeat(Target::MAX_NAME_LEN)).with_server("host-1.example_2");
        assert!(ok.validate_for_listen().is_ok());
    }

    #[test]
    fn pool_names_follow_the_same_rules() {
        use crate::{Priority, Subscription};
        let subscription = |pool: &str| Subscription::Notifications {
            targets: vec![Target::new("notifications")],
            priorities: vec![Priority::Info],
            pool: Some(pool.to_owned()),
        };
        assert!(subscription("billing").validate().is_ok());
        for (pool, expected) in [
            ("", "the pool name is empty"),
            ("a#", "the pool name contains '#'"),
            (&"p".repeat(256), "the pool name is 256 bytes long"),
        ] {
            let err = subscription(pool).validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn display_cuts_long_names_and_escapes_control_characters() {
        let t = Target::new("x".repeat(300)).with_server("a\nb");
        let shown = t.to_string();
        assert!(shown.contains("…(300 bytes)"), "{shown}");
        assert!(shown.contains("server=a\\nb"), "{shown}");
        assert!(shown.len() < 120, "{shown}");
    }

    #[test]
    fn display_lists_set_fields_only() {
        assert_eq!(Target::default().to_string(), "<Target>");
        let t = Target::new("t").with_exchange("x").with_version("1.2");
        assert_eq!(t.to_string(), "<Target exchange=x, topic=t, version=1.2>");
    }
}
