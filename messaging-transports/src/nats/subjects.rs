//! How exchanges, topics, servers, fanout and notifications map onto NATS subjects,
//! queue groups, a JetStream stream and its consumers.
//!
//! Every name becomes exactly one subject token: bytes outside `[A-Za-z0-9_:-]` are
//! percent-encoded (`compute.host1` → `compute%2Ehost1`), so a server name with dots
//! can never be confused with a deeper subject.
//!
//! Consumer names join their parts with `-`, so inside a part `-` is encoded too, and
//! with `~`, not `%` (`a-b` → `a~2Db`, `a.b` → `a~2Eb`): `(topic a-b, priority info)`
//! and `(exchange …-a, topic b)` can no longer share a consumer, and nats-server 2.9
//! builds each delivery's acknowledgement subject with the consumer's name as a
//! format string, which turns a `%` into garbage with spaces (the client then drops
//! the connection and the notification never arrives). Names of `[A-Za-z0-9_:]` only
//! map to the same consumer as before, so existing consumers keep serving them.
//!
//! The stream name writes the prefix's `%` as `_`, so two prefixes can share one
//! (`a.b` and `a_2Eb`); renaming streams would orphan what existing ones store, so the
//! transport refuses a stream of its name that stores other subjects instead.
//!
//! NATS limits what these compose to: a stream or consumer name is at most
//! [`MAX_NAME_LEN`] bytes (the server refuses longer ones), a subject at most
//! [`MAX_SUBJECT_LEN`] (a longer one breaks the server's 4096-byte protocol line,
//! `max_control_line`, and the server drops the connection). [`fits`] refuses a
//! longer one before anything is sent.

use messaging_core::{InvalidTarget, Priority, Target, TransportError};

/// The longest stream or consumer name NATS accepts.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// The longest subject (or queue group) this transport composes: a subscription to
/// two of them (subject and queue group), or a JetStream request naming stream,
/// consumer and a filter subject of this length, stays within the server's default
/// 4096-byte protocol line.
pub(crate) const MAX_SUBJECT_LEN: usize = 2000;

/// `name` if it is at most `limit` bytes, else [`TransportError::InvalidTarget`] for
/// `target` saying which composed name (`what`) is too long.
pub(crate) fn fits(
    what: &str,
    name: String,
    limit: usize,
    target: &Target,
) -> Result<String, TransportError> {
    if name.len() <= limit {
        return Ok(name);
    }
    Err(InvalidTarget::new(
        format!(
            "the NATS {what} would be {} bytes long (at most {limit})",
            name.len()
        ),
        target,
    )
    .into())
}

/// Percent-encodes a name into one subject token (also valid in queue group and
/// stream names).
pub(crate) fn token(name: &str) -> String {
    encode(name, b'%', |b| matches!(b, b'_' | b'-' | b':'))
}

/// One part of a consumer name, whose parts are joined with `-`: bytes outside
/// `[A-Za-z0-9_:]` as `~` and two hex digits (`-` and `~` included).
fn part(name: &str) -> String {
    encode(name, b'~', |b| matches!(b, b'_' | b':'))
}

/// Keeps ASCII letters, digits and the bytes `keep` allows (never `escape`); writes
/// the rest as `escape` and two hex digits, so the encoding is reversible; `escape`
/// `00` for the empty name (which names never are: core refuses empty names and
/// control characters).
fn encode(name: &str, escape: u8, keep: impl Fn(u8) -> bool) -> String {
    let escape = char::from(escape);
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("{escape}{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str(&format!("{escape}00"));
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
    /// pool-less listeners, whose consumer the notifier creates):
    /// `n-<exchange>-<topic>-<priority>-<pool>`, `-` for no pool, each part encoded so
    /// that it holds no `-` and no `%` (distinct inputs never share a name).
    pub(crate) fn consumer(
        &self,
        exchange: &str,
        topic: &str,
        priority: Priority,
        pool: Option<&str>,
    ) -> String {
        let pool = pool.map_or_else(|| "-".to_owned(), part);
        format!(
            "n-{}-{}-{}-{pool}",
            part(exchange),
            part(topic),
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

    /// A small deterministic generator: the property loops need no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % below
        }

        fn name(&mut self, alphabet: &[&str]) -> String {
            let len = 1 + self.next(6);
            (0..len)
                .map(|_| alphabet[self.next(alphabet.len())])
                .collect()
        }
    }

    /// Records `name` for `input`; panics if another input already had it.
    fn unique<T: std::fmt::Debug + PartialEq + Clone>(
        seen: &mut std::collections::HashMap<String, T>,
        name: String,
        input: T,
    ) {
        if let Some(other) = seen.insert(name.clone(), input.clone())
            && other != input
        {
            panic!("{other:?} and {input:?} both map to {name}");
        }
    }

    #[test]
    fn distinct_exchange_topic_priority_and_pool_never_share_a_consumer() {
        let s = Subjects::new("msg");
        assert_eq!(
            s.consumer("x", "a-b.c", Priority::Info, Some("~")),
            "n-x-a~2Db~2Ec-info-~7E"
        );
        // The red team's pair, and a pool named `-` against no pool.
        assert_ne!(
            s.consumer("rtx", "a-b", Priority::Info, None),
            s.consumer("rtx-a", "b", Priority::Info, None)
        );
        assert_ne!(
            s.consumer("x", "t", Priority::Info, Some("-")),
            s.consumer("x", "t", Priority::Info, None)
        );
        let tricky = [
            "a", "b", "a-b", "b-c", "-", "--", "a-", "-a", "%", "%2D", "a%2Db", "info", "a-info",
            "info-", "-info-", "x.y", "_", "a_b", "n", "n-a", "%25", "a--b", "~", "~2D", "a~2Db",
            "~7E",
        ];
        let mut seen = std::collections::HashMap::new();
        for exchange in ["openstack", "a", "a-b", "-", "%2D"] {
            for topic in tricky {
                for priority in Priority::ALL {
                    for pool in std::iter::once(None).chain(tricky.iter().map(|p| Some(*p))) {
                        let name = s.consumer(exchange, topic, priority, pool);
                        unique(&mut seen, name, (exchange, topic, priority, pool));
                    }
                }
            }
        }
        let alphabet = ["a", "-", "%", "~", "2", "D", "_", ".", "i", "n", "f", "o"];
        let mut random = Lcg(7);
        let mut seen = std::collections::HashMap::new();
        for _ in 0..200_000 {
            let pool = (random.next(3) > 0).then(|| random.name(&alphabet));
            let input = (
                random.name(&alphabet),
                random.name(&alphabet),
                Priority::ALL[random.next(Priority::ALL.len())],
                pool,
            );
            let name = s.consumer(&input.0, &input.1, input.2, input.3.as_deref());
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'~')),
                "{name}"
            );
            unique(&mut seen, name, input);
        }
    }

    #[test]
    fn names_without_special_characters_keep_their_consumer_and_stream() {
        let s = Subjects::new("msg");
        for (name, old) in [
            (
                s.consumer("openstack", "notifications", Priority::Info, None),
                "n-openstack-notifications-info--",
            ),
            (
                s.consumer("openstack", "compute", Priority::Warn, Some("p1")),
                "n-openstack-compute-warn-p1",
            ),
            (
                s.consumer("openstack", "Notifications_2", Priority::Error, Some("p:1")),
                "n-openstack-Notifications_2-error-p:1",
            ),
            (
                s.consumer("my_exchange", "t:1", Priority::Audit, Some("pool_1")),
                "n-my_exchange-t:1-audit-pool_1",
            ),
            (s.stream(), "msg_NOTIFICATIONS"),
            (Subjects::new("a.b").stream(), "a_2Eb_NOTIFICATIONS"),
            (Subjects::new("app_2024").stream(), "app_2024_NOTIFICATIONS"),
            (
                Subjects::new("my_prefix").stream(),
                "my_prefix_NOTIFICATIONS",
            ),
            (Subjects::new("x-1:y").stream(), "x-1:y_NOTIFICATIONS"),
        ] {
            assert_eq!(name, old);
        }
    }

    #[test]
    fn composed_names_over_the_limits_are_invalid_targets() {
        let target = Target::new("t");
        assert_eq!(
            fits("subject", "a".repeat(2000), MAX_SUBJECT_LEN, &target)
                .unwrap()
                .len(),
            2000
        );
        match fits("consumer name", "c".repeat(256), MAX_NAME_LEN, &target) {
            Err(TransportError::InvalidTarget(e)) => {
                assert!(e.reason().contains("256 bytes long (at most 255)"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
