//! What the transport declares on the broker — exchanges, queues and their arguments —
//! computed from the options exactly as oslo.messaging 18.x's `impl_rabbit` does, so
//! that a Rust and a Python service configured alike declare the same objects and
//! RabbitMQ accepts both (it refuses, with 406 PRECONDITION_FAILED, to declare an
//! existing exchange or queue with other properties).
//!
//! Pure: [`Declares`] maps the options to [`Exchange`] and [`Queue`] values; the
//! connection module turns them into AMQP methods. The unit tests below pin, option by
//! option, what oslo's `Connection.declare_*_consumer`, `*_send` and
//! `_get_queue_arguments` produce.
//!
//! | what | exchange (type, durable, auto-delete) | queue (durable, auto-delete) | queue arguments |
//! |---|---|---|---|
//! | RPC topic and server queues, notification queues (listener and notifier) | topic, `durable`, `amqp_auto_delete` | `durable`, `amqp_auto_delete` | HA, quorum |
//! | reply queue | default exchange | transient quorum, no | HA, transient TTL, transient quorum |
//! | fanout queue | fanout, transient quorum or stream, yes | transient quorum or stream, no | HA, transient TTL, transient quorum; or stream |
//!
//! where `durable` is `amqp_durable_queues or rabbit_quorum_queue`; "HA" is
//! `x-ha-policy: all` (`rabbit_ha_queues`); "quorum" is `x-queue-type: quorum` with
//! `x-delivery-limit`, `x-max-in-memory-length`, `x-max-in-memory-bytes` when set
//! (non-zero); "transient TTL" is `x-expires` of `rabbit_transient_queues_ttl` seconds
//! (none when 0); "stream" (`rabbit_stream_fanout`) replaces every other argument with
//! `x-queue-type: stream` and `x-max-age: "<ttl>s"`, and the fanout queue is then one
//! per topic (`<topic>_fanout`, shared by its servers, each reading from the end).

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::connection::fixed;

/// One argument's value, typed as AMQP carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// Queue or consumer arguments, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Arguments(pub(crate) Vec<(&'static str, Value)>);

impl Arguments {
    fn set(&mut self, key: &'static str, value: Value) {
        self.0.push((key, value));
    }

    /// The value of `key`, if set.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The AMQP field table. Integers go as the narrowest signed type that holds them,
    /// as py-amqp encodes Python ints (RabbitMQ compares integer arguments by value
    /// whatever their width).
    pub(crate) fn table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in &self.0 {
            let value = match value {
                Value::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
                Value::Int(i) => match i32::try_from(*i) {
                    Ok(i) => AMQPValue::LongInt(i),
                    Err(_) => AMQPValue::LongLongInt(*i),
                },
                Value::Bool(b) => AMQPValue::Boolean(*b),
            };
            table.insert(fixed(key), value);
        }
        table
    }
}

/// The exchange types oslo uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ExchangeType {
    Topic,
    Fanout,
}

/// An exchange to declare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Exchange {
    pub(crate) name: ShortString,
    pub(crate) kind: ExchangeType,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
}

/// A queue to declare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Queue {
    pub(crate) name: ShortString,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: Arguments,
}

/// oslo's quorum queue limits (0: not set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QuorumLimits {
    /// `rabbit_quorum_delivery_limit` → `x-delivery-limit`.
    pub(crate) delivery_limit: u64,
    /// `rabbit_quorum_max_memory_length` → `x-max-in-memory-length`.
    pub(crate) max_memory_length: u64,
    /// `rabbit_quorum_max_memory_bytes` → `x-max-in-memory-bytes`.
    pub(crate) max_memory_bytes: u64,
}

/// The options that decide what is declared (oslo's names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Declares {
    /// `amqp_durable_queues`.
    pub(crate) durable_queues: bool,
    /// `amqp_auto_delete`.
    pub(crate) auto_delete: bool,
    /// `rabbit_ha_queues`.
    pub(crate) ha_queues: bool,
    /// `rabbit_quorum_queue`.
    pub(crate) quorum: bool,
    /// `rabbit_transient_quorum_queue`.
    pub(crate) transient_quorum: bool,
    /// `rabbit_quorum_*` limits.
    pub(crate) quorum_limits: QuorumLimits,
    /// `rabbit_transient_queues_ttl`, seconds (0: no expiry).
    pub(crate) transient_ttl_s: u64,
    /// `rabbit_stream_fanout`.
    pub(crate) stream_fanout: bool,
    /// `enable_cancel_on_failover`.
    pub(crate) cancel_on_failover: bool,
    /// Ours, for tests on a shared broker: `x-expires` on topic, server and
    /// notification queues too (seconds).
    pub(crate) queue_ttl_s: Option<u64>,
}

impl Declares {
    /// oslo's `Connection.durable`: quorum queues are durable whatever
    /// `amqp_durable_queues` says.
    pub(crate) fn durable(&self) -> bool {
        self.durable_queues || self.quorum
    }

    /// oslo's `_get_queue_arguments`.
    fn queue_arguments(&self, ttl_s: u64, quorum: bool, stream: bool) -> Arguments {
        let mut args = Arguments::default();
        if stream {
            args.set("x-queue-type", Value::Str("stream".into()));
            if ttl_s > 0 {
                args.set("x-max-age", Value::Str(format!("{ttl_s}s")));
            }
            return args;
        }
        if self.ha_queues {
            args.set("x-ha-policy", Value::Str("all".into()));
        }
        if quorum {
            args.set("x-queue-type", Value::Str("quorum".into()));
            let limits = &self.quorum_limits;
            for (key, value) in [
                ("x-delivery-limit", limits.delivery_limit),
                ("x-max-in-memory-length", limits.max_memory_length),
                ("x-max-in-memory-bytes", limits.max_memory_bytes),
            ] {
                if value > 0 {
                    args.set(key, Value::Int(value.min(i64::MAX as u64) as i64));
                }
            }
        }
        if ttl_s > 0 {
            args.set(
                "x-expires",
                Value::Int((ttl_s.saturating_mul(1000)).min(i64::MAX as u64) as i64),
            );
        }
        args
    }

    /// A topic exchange: the control exchange or a target's (`topic_send`,
    /// `notify_send`, `declare_topic_consumer`).
    pub(crate) fn topic_exchange(&self, name: ShortString) -> Exchange {
        Exchange {
            name,
            kind: ExchangeType::Topic,
            durable: self.durable(),
            auto_delete: self.auto_delete,
        }
    }

    /// `<topic>_fanout` (`fanout_send`, `declare_fanout_consumer`).
    pub(crate) fn fanout_exchange(&self, name: ShortString) -> Exchange {
        Exchange {
            name,
            kind: ExchangeType::Fanout,
            durable: self.transient_quorum || self.stream_fanout,
            auto_delete: true,
        }
    }

    /// An RPC topic or server queue, a notification listener's queue (`<topic>.<priority>`
    /// or a pool's), and the notifier's default queue (`declare_topic_consumer`,
    /// `_publish_and_creates_default_queue`).
    pub(crate) fn topic_queue(&self, name: ShortString) -> Queue {
        Queue {
            name,
            durable: self.durable(),
            auto_delete: self.auto_delete,
            arguments: self.queue_arguments(self.queue_ttl_s.unwrap_or(0), self.quorum, false),
        }
    }

    /// A transport's reply queue (`declare_direct_consumer`).
    pub(crate) fn reply_queue(&self, name: ShortString) -> Queue {
        Queue {
            name,
            durable: self.transient_quorum,
            auto_delete: false,
            arguments: self.queue_arguments(self.transient_ttl_s, self.transient_quorum, false),
        }
    }

    /// An RPC server's fanout queue (`declare_fanout_consumer`); see
    /// [`fanout_queue_name`](Declares::fanout_queue_name).
    pub(crate) fn fanout_queue(&self, name: ShortString) -> Queue {
        Queue {
            name,
            durable: self.transient_quorum || self.stream_fanout,
            auto_delete: false,
            arguments: self.queue_arguments(
                self.transient_ttl_s,
                self.transient_quorum,
                self.stream_fanout,
            ),
        }
    }

    /// The fanout queue's name: `<topic>_fanout_<unique>`, one per server, or with
    /// stream fanout `<topic>_fanout`, one per topic.
    pub(crate) fn fanout_queue_name(&self, topic: &str, unique: &str) -> String {
        if self.stream_fanout {
            format!("{topic}_fanout")
        } else {
            format!("{topic}_fanout_{unique}")
        }
    }

    /// Whether the fanout queue belongs to one server (deleted when it stops), rather
    /// than being the topic's shared stream.
    pub(crate) fn fanout_queue_is_own(&self) -> bool {
        !self.stream_fanout
    }

    /// A consumer's arguments (`Consumer.declare`): where a stream consumer starts
    /// (`x-stream-offset`, `last` for the first consume), else
    /// `x-cancel-on-ha-failover` with `enable_cancel_on_failover`.
    pub(crate) fn consumer_arguments(&self, stream: bool, offset: Option<i64>) -> Arguments {
        let mut args = Arguments::default();
        if stream {
            args.set(
                "x-stream-offset",
                match offset {
                    Some(offset) => Value::Int(offset),
                    None => Value::Str("last".into()),
                },
            );
        } else if self.cancel_on_failover {
            args.set("x-cancel-on-ha-failover", Value::Bool(true));
        }
        args
    }

    /// Whether a queue of this kind is a stream (its consumer needs an offset).
    pub(crate) fn is_stream(queue: &Queue) -> bool {
        queue
            .arguments
            .0
            .iter()
            .any(|(k, v)| *k == "x-queue-type" && *v == Value::Str("stream".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ShortString {
        fixed(s)
    }

    fn str(s: &str) -> Value {
        Value::Str(s.into())
    }

    fn keys(args: &Arguments) -> Vec<&'static str> {
        args.0.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn defaults_declare_what_oslo_declares_by_default() {
        let d = Declares {
            transient_ttl_s: 1800,
            ..Declares::default()
        };
        let topic = d.topic_exchange(n("openstack"));
        assert_eq!(
            (topic.kind, topic.durable, topic.auto_delete),
            (ExchangeType::Topic, false, false)
        );
        let fanout = d.fanout_exchange(n("t_fanout"));
        assert_eq!(
            (fanout.kind, fanout.durable, fanout.auto_delete),
            (ExchangeType::Fanout, false, true)
        );
        let q = d.topic_queue(n("t"));
        assert_eq!((q.durable, q.auto_delete), (false, false));
        assert!(q.arguments.0.is_empty());
        for q in [d.reply_queue(n("reply_x")), d.fanout_queue(n("t_fanout_x"))] {
            assert_eq!((q.durable, q.auto_delete), (false, false));
            assert_eq!(q.arguments.0, vec![("x-expires", Value::Int(1_800_000))]);
        }
        assert!(d.consumer_arguments(false, None).0.is_empty());
        assert_eq!(d.fanout_queue_name("t", "ab"), "t_fanout_ab");
        assert!(d.fanout_queue_is_own());
    }

    #[test]
    fn a_ttl_of_zero_sets_no_expiry() {
        let d = Declares::default();
        assert!(d.reply_queue(n("r")).arguments.0.is_empty());
        assert!(d.fanout_queue(n("f")).arguments.0.is_empty());
    }

    #[test]
    fn durable_queues_make_topic_exchanges_and_queues_durable_only() {
        let d = Declares {
            durable_queues: true,
            transient_ttl_s: 1800,
            ..Declares::default()
        };
        assert!(d.topic_exchange(n("openstack")).durable);
        assert!(d.topic_queue(n("t")).durable);
        assert!(!d.fanout_exchange(n("t_fanout")).durable);
        assert!(!d.fanout_queue(n("f")).durable);
        assert!(!d.reply_queue(n("r")).durable);
    }

    #[test]
    fn auto_delete_applies_to_topic_exchanges_and_queues() {
        let d = Declares {
            auto_delete: true,
            ..Declares::default()
        };
        assert!(d.topic_exchange(n("openstack")).auto_delete);
        assert!(d.topic_queue(n("t")).auto_delete);
        assert!(!d.reply_queue(n("r")).auto_delete);
        assert!(!d.fanout_queue(n("f")).auto_delete);
    }

    #[test]
    fn quorum_queues_are_durable_typed_and_limited_where_oslo_puts_them() {
        let d = Declares {
            quorum: true,
            quorum_limits: QuorumLimits {
                delivery_limit: 5,
                max_memory_length: 0,
                max_memory_bytes: 1 << 40,
            },
            transient_ttl_s: 1800,
            ..Declares::default()
        };
        assert!(d.topic_exchange(n("openstack")).durable);
        let q = d.topic_queue(n("t"));
        assert!(q.durable);
        assert_eq!(
            q.arguments.0,
            vec![
                ("x-queue-type", str("quorum")),
                ("x-delivery-limit", Value::Int(5)),
                ("x-max-in-memory-bytes", Value::Int(1 << 40)),
            ]
        );
        // Transient queues stay classic without rabbit_transient_quorum_queue.
        let r = d.reply_queue(n("r"));
        assert!(!r.durable);
        assert_eq!(keys(&r.arguments), vec!["x-expires"]);
        assert!(!d.fanout_exchange(n("t_fanout")).durable);
    }

    #[test]
    fn transient_quorum_makes_reply_and_fanout_queues_quorum_with_their_ttl() {
        let d = Declares {
            transient_quorum: true,
            quorum_limits: QuorumLimits {
                delivery_limit: 3,
                ..QuorumLimits::default()
            },
            transient_ttl_s: 60,
            ..Declares::default()
        };
        for q in [d.reply_queue(n("r")), d.fanout_queue(n("f"))] {
            assert!(q.durable);
            assert_eq!(
                q.arguments.0,
                vec![
                    ("x-queue-type", str("quorum")),
                    ("x-delivery-limit", Value::Int(3)),
                    ("x-expires", Value::Int(60_000)),
                ]
            );
        }
        assert!(d.fanout_exchange(n("t_fanout")).durable);
        // ... and not the topic queues.
        let t = d.topic_queue(n("t"));
        assert!(!t.durable && t.arguments.0.is_empty());
    }

    #[test]
    fn ha_queues_add_the_ha_policy_to_every_queue() {
        let d = Declares {
            ha_queues: true,
            transient_ttl_s: 10,
            ..Declares::default()
        };
        for q in [
            d.topic_queue(n("t")),
            d.reply_queue(n("r")),
            d.fanout_queue(n("f")),
        ] {
            assert_eq!(q.arguments.get("x-ha-policy"), Some(&str("all")));
        }
    }

    #[test]
    fn stream_fanout_is_one_durable_stream_per_topic_read_from_the_end() {
        let d = Declares {
            stream_fanout: true,
            transient_quorum: true,
            ha_queues: true,
            transient_ttl_s: 1800,
            ..Declares::default()
        };
        assert_eq!(d.fanout_queue_name("t", "ab"), "t_fanout");
        assert!(!d.fanout_queue_is_own());
        let q = d.fanout_queue(n("t_fanout"));
        assert!(q.durable && !q.auto_delete);
        assert_eq!(
            q.arguments.0,
            vec![("x-queue-type", str("stream")), ("x-max-age", str("1800s"))]
        );
        assert!(Declares::is_stream(&q));
        assert!(d.fanout_exchange(n("t_fanout")).durable);
        assert_eq!(
            d.consumer_arguments(true, None).0,
            vec![("x-stream-offset", str("last"))]
        );
        assert_eq!(
            d.consumer_arguments(true, Some(42)).0,
            vec![("x-stream-offset", Value::Int(42))]
        );
        // Reply queues keep their quorum arguments.
        assert_eq!(
            keys(&d.reply_queue(n("r")).arguments),
            vec!["x-ha-policy", "x-queue-type", "x-expires"]
        );
        let no_ttl = Declares {
            transient_ttl_s: 0,
            ..d
        };
        assert_eq!(
            no_ttl.fanout_queue(n("t_fanout")).arguments.0,
            vec![("x-queue-type", str("stream"))]
        );
    }

    #[test]
    fn cancel_on_failover_is_a_consumer_argument() {
        let d = Declares {
            cancel_on_failover: true,
            ..Declares::default()
        };
        assert_eq!(
            d.consumer_arguments(false, None).0,
            vec![("x-cancel-on-ha-failover", Value::Bool(true))]
        );
    }

    #[test]
    fn integer_arguments_take_the_narrowest_amqp_type() {
        let args = Arguments(vec![
            ("small", Value::Int(1_800_000)),
            ("big", Value::Int(1 << 40)),
            ("s", str("quorum")),
            ("b", Value::Bool(true)),
        ]);
        let table = args.table();
        let inner = table.inner();
        assert_eq!(inner.get("small"), Some(&AMQPValue::LongInt(1_800_000)));
        assert_eq!(inner.get("big"), Some(&AMQPValue::LongLongInt(1 << 40)));
        assert_eq!(inner.get("b"), Some(&AMQPValue::Boolean(true)));
        assert!(matches!(inner.get("s"), Some(AMQPValue::LongString(_))));
    }
}
