//! How exchanges, topics, servers, fanout and notifications map onto NATS subjects,
//! queue groups, a JetStream stream and its consumers.
//!
//! Every name becomes exactly one subject token: bytes outside `[A-Za-z0-9_:-]` are
//! percent-encoded (`compute.host1` → `compute%2Ehost1`), so a server name with dots
//! can never be confused with a deeper subject.

use messaging_core::Priority;

/// Percent-encodes a name into one subject token (also valid in queue group, stream
/// and consumer names).
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    /// Calls and casts to any server of a topic (consumed in a queue group).
    pub(crate) fn topic(&self, exchange: &str, topic: &str) -> String {
        format!("{}.{}.rpc.{}", self.prefix, token(exchange), token(topic))
    }

    /// The queue group the servers of a topic share.
    pub(crate) fn group(&self, exchange: &str, topic: &str) -> String {
        format!("{}.{}.rpc.{}", self.prefix, token(exchange), token(topic))
    }

    /// Calls and casts to one server.
    pub(crate) fn server(&self, exchange: &str, topic: &str, server: &str) -> String {
        format!(
            "{}.{}.server.{}.{}",
            self.prefix,
            token(exchange),
            token(topic),
            token(server)
        )
    }

    /// Fanout casts (every server subscribes, no group).
    pub(crate) fn fanout(&self, exchange: &str, topic: &str) -> String {
        format!(
            "{}.{}.fanout.{}",
            self.prefix,
            token(exchange),
            token(topic)
        )
    }

    /// Notifications, stored by the JetStream stream.
    pub(crate) fn notification(&self, exchange: &str, topic: &str, priority: Priority) -> String {
        format!(
            "{}.notify.{}.{}.{}",
            self.prefix,
            token(exchange),
            token(topic),
            priority.as_str()
        )
    }

    /// The stream holding every notification under this prefix.
    pub(crate) fn stream(&self) -> String {
        format!("{}_NOTIFICATIONS", token(&self.prefix).replace('%', "_"))
    }

    /// What the stream stores.
    pub(crate) fn stream_subjects(&self) -> String {
        format!("{}.notify.>", self.prefix)
    }

    /// The durable consumer of one `<topic>.<priority>` for a pool (`None`: the
    /// pool-less listeners, whose consumer the notifier creates).
    pub(crate) fn consumer(
        &self,
        exchange: &str,
        topic: &str,
        priority: Priority,
        pool: Option<&str>,
    ) -> String {
        let pool = pool.map_or_else(|| "-".to_owned(), token);
        format!(
            "n-{}-{}-{}-{pool}",
            token(exchange),
            token(topic),
            priority.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_tokens() {
        assert_eq!(token("compute"), "compute");
        assert_eq!(token("compute.host1"), "compute%2Ehost1");
        assert_eq!(token("a b*>%"), "a%20b%2A%3E%25");
        assert_eq!(token(""), "%00");
        let s = Subjects::new("msg");
        assert_ne!(
            s.server("x", "t", "s.x"),
            s.server("x", "t.s", "x"),
            "no collisions through dots"
        );
        assert_eq!(s.topic("openstack", "compute"), "msg.openstack.rpc.compute");
        assert_eq!(
            s.notification("openstack", "notifications", Priority::Info),
            "msg.notify.openstack.notifications.info"
        );
        assert_eq!(s.stream(), "msg_NOTIFICATIONS");
        assert!(
            !s.consumer("openstack", "n.x", Priority::Warn, Some("p.1"))
                .contains('.')
        );
    }
}
