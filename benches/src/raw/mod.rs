//! The limits: the same message patterns with nothing of ours in between — channels
//! between two threads or two tokio tasks, lapin on RabbitMQ, async-nats on NATS.

pub mod channels;
pub mod lapin;
pub mod nats;
