//! [`NotifyDriver`]: where a notifier sends (oslo's notification drivers), and
//! [`Retry`]: how hard it tries.

use std::fmt;
use std::str::FromStr;

use crate::message::NotificationFormat;

/// Where a [`Notifier`](super::Notifier) sends: oslo's notification drivers, named as
/// in oslo's `[oslo_messaging_notifications] driver` option (a notifier may have
/// several, as that option may list several).
///
/// # Examples
///
/// ```
/// use messaging_core::notify::NotifyDriver;
///
/// let drivers: Vec<NotifyDriver> = ["messagingv2", "log"]
///     .iter()
///     .map(|name| name.parse())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(drivers, [NotifyDriver::MessagingV2, NotifyDriver::Log]);
/// assert!("kafka".parse::<NotifyDriver>().is_err());
/// # Ok::<(), messaging_core::notify::UnknownDriver>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotifyDriver {
    /// `messaging`: over the transport to `<topic>.<priority>` for each topic, in
    /// oslo's message format 1.0 (no envelope; see [`NotificationFormat::V1`]), for
    /// consumers that predate the envelope.
    Messaging,
    /// `messagingv2`: as [`Messaging`](NotifyDriver::Messaging), in the 2.0 envelope
    /// ([`NotificationFormat::V2`]). The default.
    #[default]
    MessagingV2,
    /// `log`: to `tracing`, target `messaging::notification`, at the priority's level
    /// (`debug` at DEBUG; `info`, `audit` and `sample` at INFO; `warn` at WARN;
    /// `error` and `critical` at ERROR), with the payload's secrets masked (a payload
    /// nested more than 128 levels deep, which cannot be searched, is replaced by its
    /// size). (oslo's log driver drops `audit` and `sample`, having no logger method
    /// of those names.)
    Log,
    /// `noop`: nowhere.
    Noop,
    /// `routing`: to the drivers a [`RoutingTable`](super::RoutingTable) selects for
    /// the event type and priority (oslo's `routing_config` file).
    Routing,
}

impl NotifyDriver {
    /// Every driver, in the order of their names in [`UnknownDriver`]'s message.
    pub const ALL: [NotifyDriver; 5] = [
        NotifyDriver::Messaging,
        NotifyDriver::MessagingV2,
        NotifyDriver::Routing,
        NotifyDriver::Log,
        NotifyDriver::Noop,
    ];

    /// oslo's name for the driver (`messagingv2`), which [`FromStr`] parses.
    pub fn name(self) -> &'static str {
        match self {
            NotifyDriver::Messaging => "messaging",
            NotifyDriver::MessagingV2 => "messagingv2",
            NotifyDriver::Log => "log",
            NotifyDriver::Noop => "noop",
            NotifyDriver::Routing => "routing",
        }
    }

    /// The wire format of a messaging driver; `None` for the others.
    pub fn format(self) -> Option<NotificationFormat> {
        match self {
            NotifyDriver::Messaging => Some(NotificationFormat::V1),
            NotifyDriver::MessagingV2 => Some(NotificationFormat::V2),
            _ => None,
        }
    }
}

impl fmt::Display for NotifyDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A driver name that is not one of [`NotifyDriver`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown notification driver `{0}` (expected messaging, messagingv2, routing, log or noop)"
)]
pub struct UnknownDriver(pub String);

impl FromStr for NotifyDriver {
    type Err = UnknownDriver;

    /// Parses oslo's driver names, exactly (they are entry point names, so
    /// case-sensitive). oslo's `test` driver (an in-memory list for oslo's own tests)
    /// is not one of them: use `messaging-testkit` instead.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotifyDriver::ALL
            .into_iter()
            .find(|driver| driver.name() == s)
            .ok_or_else(|| UnknownDriver(s.to_owned()))
    }
}

/// How often a notification is sent again after a failure a reconnect may fix
/// (oslo's `retry`: `-1` forever, `0` never, `n` at most `n` times). A failure no
/// retry can fix (credentials refused, a message too large) fails at once.
///
/// # Examples
///
/// ```
/// use messaging_core::notify::Retry;
///
/// assert_eq!(Retry::from(3), Retry::Limit(3));
/// assert_eq!(Retry::from(None), Retry::Forever);
/// // oslo.config's integer: -1 (or any negative) is forever.
/// assert_eq!(Retry::from_oslo(-1), Retry::Forever);
/// assert_eq!(Retry::from_oslo(0), Retry::Limit(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Until the notification is sent (or the notifier's timeout passes, if it has
    /// one).
    Forever,
    /// At most this many retries, so at most one attempt more than this.
    Limit(u32),
}

impl Retry {
    /// oslo's integer: a negative value is forever, anything else a limit (values
    /// beyond `u32::MAX` are `u32::MAX`).
    pub fn from_oslo(value: i64) -> Retry {
        match u32::try_from(value) {
            Ok(limit) => Retry::Limit(limit),
            Err(_) if value < 0 => Retry::Forever,
            Err(_) => Retry::Limit(u32::MAX),
        }
    }

    /// As [`SendOptions::retry`](crate::SendOptions::retry) says it: `None` forever.
    pub fn as_option(self) -> Option<u32> {
        match self {
            Retry::Forever => None,
            Retry::Limit(limit) => Some(limit),
        }
    }
}

impl From<u32> for Retry {
    fn from(limit: u32) -> Self {
        Retry::Limit(limit)
    }
}

impl From<Option<u32>> for Retry {
    /// `None` is forever, as in [`SendOptions::retry`](crate::SendOptions::retry).
    fn from(limit: Option<u32>) -> Self {
        limit.map_or(Retry::Forever, Retry::Limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_parses_from_its_own_name_and_nothing_else() {
        for driver in NotifyDriver::ALL {
            assert_eq!(driver.name().parse::<NotifyDriver>(), Ok(driver));
            assert_eq!(driver.to_string(), driver.name());
        }
        for bad in ["", "Messaging", "messaging_v2", "test", " log"] {
            assert_eq!(
                bad.parse::<NotifyDriver>(),
                Err(UnknownDriver(bad.to_owned()))
            );
        }
        assert_eq!(NotifyDriver::default(), NotifyDriver::MessagingV2);
        assert_eq!(
            NotifyDriver::Messaging.format(),
            Some(NotificationFormat::V1)
        );
        assert_eq!(
            NotifyDriver::MessagingV2.format(),
            Some(NotificationFormat::V2)
        );
        assert_eq!(NotifyDriver::Log.format(), None);
    }

    #[test]
    fn oslo_retry_values() {
        assert_eq!(Retry::from_oslo(-1), Retry::Forever);
        assert_eq!(Retry::from_oslo(i64::MIN), Retry::Forever);
        assert_eq!(Retry::from_oslo(5), Retry::Limit(5));
        assert_eq!(Retry::from_oslo(i64::MAX), Retry::Limit(u32::MAX));
        assert_eq!(Retry::Forever.as_option(), None);
        assert_eq!(Retry::Limit(2).as_option(), Some(2));
    }
}
