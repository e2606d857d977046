//! oslo.config files for the messaging framework: a Rust service deployed beside Nova
//! or Neutron reads the same `nova.conf` (`[DEFAULT] transport_url`,
//! `[oslo_messaging_rabbit]`, `[oslo_messaging_notifications]`) and opens the same two
//! transports.
//!
//! ```no_run
//! use messaging_config::{Config, notification_transport, rpc_transport};
//!
//! let config = Config::builder()
//!     .config_file("/etc/nova/nova.conf")
//!     .config_dir("/etc/nova/nova.conf.d")
//!     .load()?;
//! let rpc = rpc_transport(&config)?; // [DEFAULT] transport_url + [oslo_messaging_rabbit]
//! let notifications = notification_transport(&config)?; // its own URL, or the same one
//! let timeout = config.rpc_response_timeout();
//! // drivers, topics, retry and routing table of [oslo_messaging_notifications]:
//! let notifier = messaging_config::notifier(&config, notifications, "compute.host1")?;
//! # Ok::<(), messaging_config::ConfigError>(())
//! ```
//!
//! # How the parts fit
//!
//! * `ini`: one file's text in oslo.config's INI dialect (the rules below), into
//!   sections and assignments with their line numbers.
//! * `sources` ([`Source`]): files and dirs read in oslo's order into one store;
//!   which value of an option wins (newest file, overrides above all; multi-valued
//!   options collect every file's values).
//! * `substitute`: oslo's `$name` / `$$` substitution, applied to every value read.
//! * `values`: oslo's value types (booleans, integers, lists) and which keys are
//!   secret.
//! * `schema`: the sections and options read here, and their older names.
//! * `config` ([`ConfigBuilder`], [`Config`], [`NotificationSettings`]): loading, and
//!   the messaging options typed and checked.
//! * `transport` ([`rpc_transport`], [`notification_transport`]): a configured URL
//!   plus its transport's section, checked by the transport's own parser, opened with
//!   [`messaging_transports::open`].
//! * `notifier` ([`notifier`]): a `Notifier` with the section's drivers, topics,
//!   retry and routing table.
//! * `error` ([`ConfigError`], [`Origin`]): every error names the file, line,
//!   section and key at fault.
//!
//! # The dialect (oslo.config 10.7.0's `iniparser.py` and `cfg.py`)
//!
//! * `[section]` headers; `[DEFAULT]` is written exactly so, any other section name is
//!   case-insensitive; keys are case-sensitive.
//! * `key = value` or `key: value` (whichever separator comes first), key and value
//!   stripped, one pair of quotes around the value removed, empty values allowed.
//! * `#` and `;` comments at the start of a line only.
//! * A line starting with whitespace continues the value above (joined with a
//!   newline); a blank line ends it.
//! * A key repeated: the last value wins for a single-valued option; a multi-valued
//!   one (`driver`) takes them all, across files.
//! * Booleans: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, in any case. Lists:
//!   comma-separated, items stripped. Integers: Python's `int()`; an empty value means
//!   the option's default (oslo reads it as "no value", which for
//!   `rpc_response_timeout` would mean waiting forever).
//! * `$$` (or `\$`) is a `$`; `$name` and `${section.name}` are other options' values.
//!
//! # Order and precedence
//!
//! Sources are read in the order given (files and dirs mixed, as on oslo's command
//! line); a dir contributes its `*.conf` files sorted by name; later values win.
//! Overrides ([`ConfigBuilder::set_override`], for command-line flags) win over every
//! file; defaults come last. A transport's options: the URL's query, then the
//! transport's section, then (for `control_exchange`) `[DEFAULT]`, then the transport's
//! default; see [`rpc_transport`] and the `transport` module.
//!
//! # Unknown and secret
//!
//! Unknown sections and unknown options are ignored, as oslo.config ignores options
//! nobody registered, with one `tracing` debug line each (naming the section, key and
//! file, never the value). `transport_url` and keys naming a password, secret, token or
//! credential are secret: their values never reach a log line, a `Debug` output or an
//! error message (URLs are shown with `***` for passwords). So is any value that takes
//! in a secret one by a `$` reference (`rpc_response_timeout = $transport_url` is
//! refused without quoting what it got), and an error inside a secret value reached by
//! reference does not quote the part it is about. Other values are quoted in errors
//! escaped and cut to 100 characters.
//!
//! # Limits (not oslo's)
//!
//! * A config file larger than 4 MiB is refused ([`ConfigError::Unreadable`]) after
//!   reading at most that much, so `/dev/zero` or a pipe that never ends cannot exhaust
//!   memory.
//! * A config dir's `*.conf` that is not a regular file (a FIFO, a device, a socket, a
//!   directory; symlinks followed) is refused rather than opened: opening a FIFO would
//!   wait for a writer forever. A file named with
//!   [`config_file`](ConfigBuilder::config_file) may be anything readable, so
//!   `--config-file <(generate-config)` works.
//! * `$` references are followed 16 deep at most, 10 000 of them per value, and a
//!   value may expand to at most 1 MiB (or its own length): `a = $b$b`, `b = $c$c`, ...
//!   is an error, not exponential time and memory.
//!
//! # No transport URL
//!
//! Asking for a transport when no `transport_url` is configured is an error
//! ([`ConfigError::NoTransportUrl`]). oslo.messaging would fall back to `rabbit://`, a
//! guest login on localhost, which in production is a misconfiguration connecting
//! somewhere unintended; write `transport_url = rabbit://` to get that.
//!
//! # Sections
//!
//! | section | options read |
//! |---|---|
//! | `[DEFAULT]` | `transport_url`, `control_exchange`, `rpc_response_timeout`, `executor_thread_pool_size` (or `rpc_thread_pool_size`), `rpc_ping_enabled` |
//! | `[oslo_messaging_rabbit]` | every option of the RabbitMQ transport (oslo's names: see `messaging_transports::rabbit`), checked by it; oslo's pool options are checked and ignored |
//! | `[oslo_messaging_notifications]` | `driver` (multi), `transport_url`, `topics`, `retry`, `routing_config` |
//! | `[oslo_messaging_nats]` | ours: every option of the NATS transport (`messaging_transports::nats`) |
//!
//! # Features
//!
//! `rabbit` and `nats` turn on those transports in `messaging-transports` (off by
//! default, as there); a section of a transport the build lacks is ignored with a
//! debug line.
//!
//! *Compiler support: requires rustc 1.89+.*

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

mod config;
mod error;
mod ini;
mod notifier;
mod schema;
mod sources;
mod substitute;
mod transport;
mod values;

pub use config::{
    Config, ConfigBuilder, DEFAULT_CONTROL_EXCHANGE, DEFAULT_EXECUTOR_THREAD_POOL_SIZE,
    DEFAULT_NOTIFICATION_TOPIC, DEFAULT_RPC_RESPONSE_TIMEOUT, NotificationSettings, Value,
};
pub use error::{ConfigError, Origin, Purpose};
pub use notifier::notifier;
pub use sources::Source;
pub use transport::{notification_transport, rpc_transport};
