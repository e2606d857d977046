//! [`notifier`]: a [`Notifier`] as `[oslo_messaging_notifications]` describes it.

use std::sync::Arc;

use messaging_core::Transport;
use messaging_core::notify::{Notifier, NotifyDriver, Retry, RoutingTable};

use crate::config::Config;
use crate::error::ConfigError;

/// A notifier for `publisher_id` on `transport`, with the drivers, topics, retry and
/// routing table of the configuration's `[oslo_messaging_notifications]` section, as
/// oslo's `Notifier(transport, publisher_id)` reads them:
///
/// * `driver`: every one configured, each notification going through all of them;
///   none configured (oslo's default) gives a notifier that sends nothing
///   ([`Notifier::is_enabled`] is false);
/// * `topics` and `retry` (`-1`: retry until the broker takes it, within the
///   notifier's timeout if one is set with [`Notifier::with_timeout`]);
/// * `routing_config`: the `routing` driver's YAML file, read now.
///
/// `transport` is normally [`notification_transport`](crate::notification_transport)
/// of the same configuration. The result can be adjusted like any notifier (its
/// `with_*` methods), e.g. for command-line flags, which win over the files.
///
/// # Errors
///
/// [`ConfigError::NoRoutingConfig`] when the `routing` driver is configured without
/// `routing_config`, [`ConfigError::Routing`] when that file cannot be read or is not
/// a valid routing table. Driver names were checked when the configuration loaded.
///
/// # Examples
///
/// ```no_run
/// use messaging_config::{Config, notification_transport, notifier};
///
/// let config = Config::from_files(["/etc/nova/nova.conf"])?;
/// let notifier = notifier(&config, notification_transport(&config)?, "compute.host1")?;
/// # Ok::<(), messaging_config::ConfigError>(())
/// ```
pub fn notifier(
    config: &Config,
    transport: Arc<dyn Transport>,
    publisher_id: impl Into<String>,
) -> Result<Notifier, ConfigError> {
    let settings = config.notification_settings();
    let drivers: Vec<NotifyDriver> = settings
        .drivers
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    let mut notifier = Notifier::new(transport, publisher_id)
        .with_drivers(drivers.iter().copied())
        .with_topics(settings.topics.iter().cloned())
        .with_retry(Retry::from(settings.retry));
    if drivers.contains(&NotifyDriver::Routing) {
        let path = settings
            .routing_config
            .as_ref()
            .ok_or(ConfigError::NoRoutingConfig)?;
        notifier = notifier.with_routing(RoutingTable::from_yaml_file(path)?);
    }
    Ok(notifier)
}
