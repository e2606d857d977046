//! [`ConfigBuilder`] and [`Config`]: the files read, and the messaging options typed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use messaging_core::notify::NotifyDriver;
use messaging_core::{Target, TransportUrl, Untrusted};

use crate::error::{ConfigError, Origin, Purpose};
use crate::schema::{self, DEFAULT, NOTIFICATIONS, Section};
use crate::sources::{Setting, Source, Store, normalize_group};
use crate::substitute::substitute;
use crate::values::{self, got, is_secret};

/// oslo's `rpc_response_timeout` default, in seconds.
pub const DEFAULT_RPC_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// oslo's `executor_thread_pool_size` default.
pub const DEFAULT_EXECUTOR_THREAD_POOL_SIZE: usize = 64;
/// oslo's `control_exchange` default.
pub const DEFAULT_CONTROL_EXCHANGE: &str = "openstack";
/// oslo's `[oslo_messaging_notifications] topics` default.
pub const DEFAULT_NOTIFICATION_TOPIC: &str = "notifications";

/// The longest `rpc_response_timeout` taken: a year (more would only overflow clocks).
const MAX_TIMEOUT_S: i64 = 365 * 24 * 3600;
/// The largest `executor_thread_pool_size` taken.
const MAX_POOL_SIZE: i64 = 65_536;

// ===== ConfigBuilder =====

/// Where to read from, and what the program sets itself: [`load`](Self::load) reads the
/// sources in the order they were added (oslo's `--config-file` / `--config-dir`
/// order) and lets overrides win over every file.
///
/// # Examples
///
/// ```
/// use messaging_config::Config;
///
/// # let dir = std::env::temp_dir().join(format!("cfg-doc-builder-{}", std::process::id()));
/// # std::fs::create_dir_all(dir.join("conf.d")).unwrap();
/// # std::fs::write(dir.join("nova.conf"), "[DEFAULT]\ntransport_url = memory://\nrpc_response_timeout = 90\n").unwrap();
/// # std::fs::write(dir.join("conf.d/10-timeout.conf"), "[DEFAULT]\nrpc_response_timeout = 120\n").unwrap();
/// let config = Config::builder()
///     .config_file(dir.join("nova.conf"))
///     .config_dir(dir.join("conf.d"))
///     .set_override("DEFAULT", "rpc_ping_enabled", "true")
///     .load()?;
/// assert_eq!(config.rpc_response_timeout().as_secs(), 120); // the later file wins
/// assert!(config.rpc_ping_enabled()); // the override wins
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), messaging_config::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    sources: Vec<Source>,
    overrides: Vec<(String, String, String)>,
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overrides: Vec<String> = self
            .overrides
            .iter()
            .map(|(group, key, value)| {
                let value = if is_secret(key) { "***" } else { value };
                format!("[{group}] {key} = {value}")
            })
            .collect();
        f.debug_struct("ConfigBuilder")
            .field("sources", &self.sources)
            .field("overrides", &overrides)
            .finish()
    }
}

impl ConfigBuilder {
    /// No sources, no overrides.
    pub fn new() -> Self {
        ConfigBuilder::default()
    }

    /// Reads a file next (`--config-file`).
    pub fn config_file(self, path: impl Into<PathBuf>) -> Self {
        self.source(Source::File(path.into()))
    }

    /// Reads a dir's `*.conf` files next, sorted by name (`--config-dir`).
    pub fn config_dir(self, path: impl Into<PathBuf>) -> Self {
        self.source(Source::Dir(path.into()))
    }

    /// Reads `source` next.
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// Reads `sources` next, in order.
    pub fn sources(mut self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.sources.extend(sources);
        self
    }

    /// Sets option `key` of section `group` to `value` whatever the files say, as
    /// oslo's `set_override` (or a command-line flag) does; the value is checked like a
    /// file's. For a multi-valued option (`driver`) it stands for the whole list. A later
    /// override of the same option replaces an earlier one.
    pub fn set_override(
        mut self,
        group: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.overrides
            .push((group.into(), key.into(), value.into()));
        self
    }

    /// Reads every source and checks the messaging options.
    ///
    /// On success every option read by an accessor of [`Config`] is valid, and
    /// unknown sections and options have been logged (one `tracing` debug line each,
    /// never with a value) and ignored, as oslo.config ignores them. The options of a
    /// transport's section (`[oslo_messaging_rabbit]`, `[oslo_messaging_nats]`) are
    /// checked when that transport is resolved ([`Config::rpc_transport_url`],
    /// [`Config::notification_transport_url`]), by the transport itself, as
    /// oslo.messaging checks them when the driver loads.
    ///
    /// # Errors
    ///
    /// [`ConfigError::FilesNotFound`], [`ConfigError::DirNotFound`],
    /// [`ConfigError::Unreadable`], [`ConfigError::Syntax`], and
    /// [`ConfigError::Value`] for a messaging option of `[DEFAULT]` or
    /// `[oslo_messaging_notifications]` with a value it cannot take.
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut store = Store::read(&self.sources)?;
        for (group, key, value) in self.overrides {
            store.set_override(&group, &key, value);
        }
        log_ignored(&store);
        Config::from_store(store)
    }
}

/// One debug line per unknown section and per unknown option of a known one; the
/// names escaped and cut as [`Untrusted`] text (a file may hold anything).
fn log_ignored(store: &Store) {
    for (name, group) in &store.groups {
        let section = schema::section(name);
        let name = Untrusted::new(name);
        match section {
            Section::Unknown => tracing::debug!(
                section = %name,
                origin = %store.origin(group.first_seen),
                "config: ignoring section [{name}]: no messaging options there",
            ),
            Section::WithoutTransport(transport) => tracing::debug!(
                section = %name,
                origin = %store.origin(group.first_seen),
                "config: ignoring section [{name}]: this build has no {transport} transport",
            ),
            Section::Known(known) => {
                for (key, settings) in &group.keys {
                    if known.contains(&key.as_str()) {
                        continue;
                    }
                    let key = Untrusted::new(key);
                    let origin = settings.last().map(|s| store.origin((s.rank, s.line)));
                    tracing::debug!(
                        section = %name,
                        key = %key,
                        origin = ?origin.as_ref().map(ToString::to_string),
                        "config: ignoring unknown option `{key}` in [{name}]",
                    );
                }
            }
        }
    }
}

// ===== Value =====

/// A value as set for an option (after `$` substitution), and where it was set. Its
/// `Debug` hides it when it is [secret](Value::is_secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Value {
    key: String,
    text: String,
    origin: Origin,
    secret: bool,
}

impl Value {
    /// The value. If it [is secret](Value::is_secret), do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the value is secret: its key is (see [`ConfigError`]), or a `$`
    /// reference took in the value of a secret key (`control_exchange =
    /// $admin_password`). A secret value is never shown in a `Debug` output or an
    /// error.
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// Where it was set.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The key it was set under (for an option with an older name, maybe that one).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: &dyn fmt::Debug = if self.secret { &"***" } else { &self.text };
        f.debug_struct("Value")
            .field("key", &self.key)
            .field("text", text)
            .field("origin", &self.origin)
            .finish()
    }
}

// ===== NotificationSettings =====

/// `[oslo_messaging_notifications]`, typed: what a `Notifier` is built from.
///
/// Its `Debug` shows `***` for an option whose value took in a secret by a `$`
/// reference (`topics = $admin_password`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotificationSettings {
    /// `driver` (multi-valued: one line each), every file's, oldest first: some of
    /// `messaging`, `messagingv2`, `routing`, `log`, `noop` (oslo's `test`, an
    /// in-memory list for oslo's own tests, is refused at load). Empty (oslo's
    /// default): notifications go nowhere. An empty `driver =` line adds none.
    pub drivers: Vec<String>,
    /// `topics` (comma-separated; default `notifications`), each a valid topic name.
    pub topics: Vec<String>,
    /// `retry`: how many times a notification that failed to send is retried; `None`
    /// (oslo's `-1`, the default, or any negative number) retries without limit, `0`
    /// never.
    pub retry: Option<u32>,
    /// `routing_config`: the routing driver's YAML file, if set.
    pub routing_config: Option<PathBuf>,
    /// The URL the notification transport uses, as configured: `transport_url` of this
    /// section, else `[DEFAULT] transport_url`; `None` if neither is set. Open it with
    /// [`notification_transport`](crate::notification_transport), which adds the
    /// transport section's options.
    pub transport_url: Option<TransportUrl>,
    /// The options whose values took in a secret (not shown by `Debug`).
    secret_options: Vec<&'static str>,
}

/// `value`, or `***` if `name` is one of `secret`.
fn shown<'a>(secret: &[&str], name: &str, value: &'a dyn fmt::Debug) -> &'a dyn fmt::Debug {
    if secret.contains(&name) {
        &"***"
    } else {
        value
    }
}

impl fmt::Debug for NotificationSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = &self.secret_options;
        f.debug_struct("NotificationSettings")
            .field("drivers", shown(secret, "driver", &self.drivers))
            .field("topics", shown(secret, "topics", &self.topics))
            .field("retry", shown(secret, "retry", &self.retry))
            .field(
                "routing_config",
                shown(secret, "routing_config", &self.routing_config),
            )
            .field("transport_url", &self.transport_url)
            .finish()
    }
}

impl NotificationSettings {
    /// Whether notifications go anywhere: some driver other than `noop` is set.
    /// (oslo's `Notifier.is_enabled()` says yes for an empty list, though it then sends
    /// nothing.)
    pub fn is_enabled(&self) -> bool {
        self.drivers.iter().any(|driver| driver != "noop")
    }
}

// ===== Config =====

/// The configuration read from oslo.config files: the messaging options typed and
/// checked, the rest kept for [`value`](Self::value).
///
/// Built with [`Config::builder`] (or [`Config::from_files`]). Its `Debug` shows the
/// files and the typed options, passwords hidden.
#[derive(Clone)]
pub struct Config {
    store: Store,
    /// `[DEFAULT] transport_url`, where it was set.
    transport_url: Option<(TransportUrl, Origin)>,
    /// `[oslo_messaging_notifications] transport_url`, where it was set.
    notification_url: Option<(TransportUrl, Origin)>,
    control_exchange: String,
    rpc_response_timeout: Duration,
    executor_thread_pool_size: usize,
    rpc_ping_enabled: bool,
    notifications: NotificationSettings,
    /// The `[DEFAULT]` options whose values took in a secret by a `$` reference
    /// (`control_exchange = $admin_password`): not shown by `Debug`.
    pub(crate) secret_options: Vec<&'static str>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = &self.secret_options;
        f.debug_struct("Config")
            .field("files", &self.store.files)
            .field(
                "transport_url",
                &self.transport_url.as_ref().map(|(u, _)| u),
            )
            .field(
                "control_exchange",
                shown(secret, "control_exchange", &self.control_exchange),
            )
            .field(
                "rpc_response_timeout",
                shown(secret, "rpc_response_timeout", &self.rpc_response_timeout),
            )
            .field(
                "executor_thread_pool_size",
                shown(
                    secret,
                    "executor_thread_pool_size",
                    &self.executor_thread_pool_size,
                ),
            )
            .field(
                "rpc_ping_enabled",
                shown(secret, "rpc_ping_enabled", &self.rpc_ping_enabled),
            )
            .field("notifications", &self.notifications)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A builder: add files and dirs in order, then [`load`](ConfigBuilder::load).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::new()
    }

    /// Reads `files` in order (later values win), like oslo's repeated
    /// `--config-file`.
    ///
    /// # Errors
    ///
    /// As [`ConfigBuilder::load`].
    pub fn from_files<P: Into<PathBuf>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Config, ConfigError> {
        files
            .into_iter()
            .fold(Config::builder(), |b, f| b.config_file(f))
            .load()
    }

    fn from_store(store: Store) -> Result<Config, ConfigError> {
        let mut config = Config {
            store,
            transport_url: None,
            notification_url: None,
            control_exchange: DEFAULT_CONTROL_EXCHANGE.to_owned(),
            rpc_response_timeout: DEFAULT_RPC_RESPONSE_TIMEOUT,
            executor_thread_pool_size: DEFAULT_EXECUTOR_THREAD_POOL_SIZE,
            rpc_ping_enabled: false,
            notifications: NotificationSettings {
                drivers: Vec::new(),
                topics: vec![DEFAULT_NOTIFICATION_TOPIC.to_owned()],
                retry: None,
                routing_config: None,
                transport_url: None,
                secret_options: Vec::new(),
            },
            secret_options: Vec::new(),
        };
        config.transport_url = config.url(DEFAULT)?;
        config.notification_url = config.url(NOTIFICATIONS)?;
        if let Some(v) = config.typed(DEFAULT, &["control_exchange"])? {
            Target::new("t")
                .with_exchange(v.as_str())
                .validate_names()
                .map_err(|e| invalid(&v, DEFAULT, e.reason()))?;
            config.note_secret("control_exchange", &v);
            config.control_exchange = v.text;
        }
        if let Some(v) = config.typed(DEFAULT, &["rpc_response_timeout"])?
            && let Some(seconds) = whole(&v, DEFAULT, 0, MAX_TIMEOUT_S)?
        {
            config.note_secret("rpc_response_timeout", &v);
            config.rpc_response_timeout = Duration::from_secs(seconds as u64);
        }
        if let Some(v) = config.typed(DEFAULT, &schema::names_of("executor_thread_pool_size"))?
            && let Some(size) = whole(&v, DEFAULT, 1, MAX_POOL_SIZE)?
        {
            config.note_secret("executor_thread_pool_size", &v);
            config.executor_thread_pool_size = size as usize;
        }
        if let Some(v) = config.typed(DEFAULT, &["rpc_ping_enabled"])? {
            config.note_secret("rpc_ping_enabled", &v);
            config.rpc_ping_enabled =
                values::boolean(v.as_str()).map_err(|r| invalid(&v, DEFAULT, &r))?;
        }
        config.notifications = config.notification_settings_from_store()?;
        Ok(config)
    }

    /// Remembers that option `name` of `[DEFAULT]` is not to be shown, if `v` is secret.
    fn note_secret(&mut self, name: &'static str, v: &Value) {
        if v.secret {
            self.secret_options.push(name);
        }
    }

    fn notification_settings_from_store(&self) -> Result<NotificationSettings, ConfigError> {
        let mut settings = NotificationSettings {
            drivers: Vec::new(),
            topics: vec![DEFAULT_NOTIFICATION_TOPIC.to_owned()],
            retry: None,
            routing_config: None,
            transport_url: self
                .notification_url
                .as_ref()
                .or(self.transport_url.as_ref())
                .map(|(url, _)| url.clone()),
            secret_options: Vec::new(),
        };
        let mut note = |name: &'static str, v: &Value| {
            if v.secret && !settings.secret_options.contains(&name) {
                settings.secret_options.push(name);
            }
        };
        let mut drivers = Vec::new();
        for v in self.values(NOTIFICATIONS, "driver")? {
            if v.as_str().is_empty() {
                continue;
            }
            if v.as_str().parse::<NotifyDriver>().is_err() {
                let reason = if v.as_str() == "test" {
                    "oslo's `test` driver (an in-memory list for oslo's own tests) is not \
                     implemented: listen on memory:// in tests instead"
                        .to_owned()
                } else {
                    let known: Vec<&str> = NotifyDriver::ALL.iter().map(|d| d.name()).collect();
                    format!("unknown notification driver (known: {})", known.join(", "))
                };
                return Err(invalid(&v, NOTIFICATIONS, &reason));
            }
            note("driver", &v);
            drivers.push(v.text);
        }
        let mut topics = vec![DEFAULT_NOTIFICATION_TOPIC.to_owned()];
        if let Some(v) = self.typed(NOTIFICATIONS, &["topics"])? {
            topics = values::list(v.as_str());
            for topic in &topics {
                Target::new(topic.as_str()).validate_names().map_err(|e| {
                    let reason = match v.secret {
                        true => format!("a topic: {}", e.reason()),
                        false => format!("topic `{}`: {}", topic.escape_debug(), e.reason()),
                    };
                    invalid(&v, NOTIFICATIONS, &reason)
                })?;
            }
            note("topics", &v);
        }
        let mut retry = None;
        if let Some(v) = self.typed(NOTIFICATIONS, &["retry"])?
            && let Some(limit) = whole(&v, NOTIFICATIONS, i64::MIN, u32::MAX as i64)?
        {
            note("retry", &v);
            retry = u32::try_from(limit).ok();
        }
        let mut routing_config = None;
        if let Some(v) = self.typed(NOTIFICATIONS, &["routing_config"])? {
            note("routing_config", &v);
            routing_config = (!v.as_str().is_empty()).then(|| PathBuf::from(v.as_str()));
        }
        settings.drivers = drivers;
        settings.topics = topics;
        settings.retry = retry;
        settings.routing_config = routing_config;
        Ok(settings)
    }

    /// `transport_url` of `group`, parsed; `None` when unset or empty.
    fn url(&self, group: &str) -> Result<Option<(TransportUrl, Origin)>, ConfigError> {
        let Some(v) = self.typed(group, &["transport_url"])? else {
            return Ok(None);
        };
        if v.as_str().trim().is_empty() {
            return Ok(None);
        }
        let url = TransportUrl::parse(v.as_str())
            .map_err(|e| invalid(&v, group, &format!("not a transport URL: {}", e.reason())))?;
        Ok(Some((url, v.origin)))
    }

    /// The value of a single-valued option known by `names`, substituted.
    fn typed(&self, group: &str, names: &[&str]) -> Result<Option<Value>, ConfigError> {
        self.store
            .single(group, names)
            .map(|setting| self.substituted(group, setting))
            .transpose()
    }

    pub(crate) fn substituted(&self, group: &str, setting: Setting) -> Result<Value, ConfigError> {
        let group = normalize_group(group);
        let lookup = |owner: &str, name: &str| -> Option<String> {
            let owner = normalize_group(owner);
            self.store
                .single(&owner, &[name])
                .map(|s| s.value)
                .or_else(|| schema::default_text(&owner, name).map(str::to_owned))
        };
        let secret = is_secret(&setting.key);
        let substituted = substitute(&setting.value, &group, &lookup).map_err(|e| {
            ConfigError::value(&setting.origin, &group, &setting.key, e.reason(secret))
        })?;
        Ok(Value {
            key: setting.key,
            text: substituted.text,
            origin: setting.origin,
            secret: secret || substituted.secret,
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The files read, in the order read (a dir's files where the dir was named).
    pub fn files(&self) -> &[PathBuf] {
        &self.store.files
    }

    /// The value of option `key` of section `group`, `$` substituted, by oslo.config's
    /// rules for a single-valued option: an override, else the newest file's (the
    /// last one in that file). `None` when nothing sets it. For options this crate
    /// does not type, such as a service's own.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Value`] when a `$` reference cannot be resolved.
    pub fn value(&self, group: &str, key: &str) -> Result<Option<Value>, ConfigError> {
        self.typed(group, &[key])
    }

    /// Every value of the multi-valued option `key` of section `group`, `$`
    /// substituted: every file's, oldest first (an override stands for them all).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Value`] when a `$` reference cannot be resolved.
    pub fn values(&self, group: &str, key: &str) -> Result<Vec<Value>, ConfigError> {
        self.store
            .multi(group, key)
            .into_iter()
            .map(|setting| self.substituted(group, setting))
            .collect()
    }

    /// `[DEFAULT] transport_url`, as configured (without the transport section's
    /// options: see [`rpc_transport_url`](Self::rpc_transport_url)).
    pub fn transport_url(&self) -> Option<&TransportUrl> {
        self.transport_url.as_ref().map(|(url, _)| url)
    }

    /// `[DEFAULT] control_exchange` (default `openstack`): the exchange of targets
    /// that name none. The transports get it as their `control_exchange` option unless
    /// their URL or section sets one.
    pub fn control_exchange(&self) -> &str {
        &self.control_exchange
    }

    /// `[DEFAULT] rpc_response_timeout` (whole seconds, default 60): how long a call
    /// waits for its reply.
    pub fn rpc_response_timeout(&self) -> Duration {
        self.rpc_response_timeout
    }

    /// `[DEFAULT] executor_thread_pool_size` (formerly `rpc_thread_pool_size`; 1 to
    /// 65536, default 64): the threads of a server's thread-pool executor.
    pub fn executor_thread_pool_size(&self) -> usize {
        self.executor_thread_pool_size
    }

    /// `[DEFAULT] rpc_ping_enabled` (default false): whether RPC servers answer
    /// `oslo_rpc_server_ping` calls.
    pub fn rpc_ping_enabled(&self) -> bool {
        self.rpc_ping_enabled
    }

    /// `[oslo_messaging_notifications]`, typed.
    pub fn notification_settings(&self) -> &NotificationSettings {
        &self.notifications
    }

    /// Where the value of option `key` of `group` came from: a file and line, an
    /// override, or [`Origin::Default`] when nothing sets it.
    pub fn origin(&self, group: &str, key: &str) -> Origin {
        self.store
            .single(group, &schema::names_of(key))
            .map_or(Origin::Default, |setting| setting.origin)
    }

    /// The configured URL for `purpose` and where it was set (oslo's fallback from the
    /// notification URL to `[DEFAULT]`'s).
    pub(crate) fn base_url(
        &self,
        purpose: Purpose,
    ) -> Option<(&TransportUrl, &Origin, &'static str)> {
        let default = self
            .transport_url
            .as_ref()
            .map(|(url, origin)| (url, origin, DEFAULT));
        match purpose {
            Purpose::Rpc => default,
            Purpose::Notifications => self
                .notification_url
                .as_ref()
                .map(|(url, origin)| (url, origin, NOTIFICATIONS))
                .or(default),
        }
    }
}

/// A [`ConfigError::Value`] for `v` of `group`.
pub(crate) fn invalid(v: &Value, group: &str, reason: &str) -> ConfigError {
    ConfigError::value(&v.origin, group, &v.key, got(v.secret, reason, &v.text))
}

/// `v` as a whole number from `min` to `max`; `None` for an empty value.
fn whole(v: &Value, group: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
    match values::integer(v.as_str()) {
        Ok(Some(n)) if (min..=max).contains(&n) => Ok(Some(n)),
        Ok(None) => Ok(None),
        Ok(Some(_)) if min == i64::MIN => Err(invalid(v, group, &format!("must be at most {max}"))),
        Ok(Some(_)) => Err(invalid(v, group, &format!("must be from {min} to {max}"))),
        Err(reason) => Err(invalid(v, group, &reason)),
    }
}
