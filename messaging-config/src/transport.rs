//! The two transports of a service, as oslo.messaging's `get_rpc_transport` and
//! `get_notification_transport` make them: a configured URL, plus the options of its
//! transport's section turned into URL options.
//!
//! # Precedence
//!
//! For each transport option, the first of:
//!
//! 1. the URL's own query (`transport_url = rabbit://h/?heartbeat_rate=5`), as in oslo,
//!    whose driver reads its options through `ConfigOptsProxy`: "values from the query
//!    part of the transport url override corresponding values from the
//!    configuration". A URL option also hides the section's value under another name
//!    of the same option (`heartbeat` and `heartbeat_timeout_threshold`);
//! 2. the transport's section: `[oslo_messaging_rabbit]` for `rabbit://`, `kombu://`,
//!    `amqp://`, `amqps://`; `[oslo_messaging_nats]` for `nats://`, `tls://`; none for
//!    `memory://`. Overrides, then files, as for any option;
//! 3. for `control_exchange` only, `[DEFAULT] control_exchange`;
//! 4. the transport's default.
//!
//! An option of the section that the transport does not know is ignored (it was
//! logged when the files were read); `rpc_conn_pool_size`, `conn_pool_min_size` and
//! `conn_pool_ttl` are checked to be whole numbers and ignored (the transport keeps one
//! connection, no pool); `ssl_enforce_fips_mode = true` is refused (no FIPS mode here).
//!
//! The resulting URL is checked by the transport's own parser
//! ([`messaging_transports::check`]), so a section value gets exactly the bounds and
//! errors a URL option gets; an error is reported against the line that set the value
//! at fault (the one without which the error goes away or changes), else against the
//! `transport_url` line.

use std::sync::Arc;

use messaging_core::{Transport, TransportError, TransportUrl};

use crate::config::{Config, invalid};
use crate::error::{ConfigError, Origin, Purpose};
use crate::schema::{self, DEFAULT, FIPS, RABBIT, RABBIT_POOL_OPTIONS};
use crate::values;

/// A section option turned into a URL option.
struct Contribution {
    key: String,
    value: String,
    origin: Origin,
    section: &'static str,
    /// Where it was set: (file index, line), overrides last.
    order: (usize, usize),
    /// Whether the value is secret ([`crate::Value::is_secret`]).
    secret: bool,
}

/// The order of a value set at `origin` in the file of index `rank`.
fn order_of(rank: usize, origin: &Origin) -> (usize, usize) {
    match origin {
        Origin::File { line, .. } => (rank, *line),
        _ => (rank, 0),
    }
}

/// `s` percent-encoded for a URL query (everything but `A-Za-z0-9_.-~`).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `base` with `added` as query options.
fn with_options<'a>(
    base: &TransportUrl,
    added: impl Iterator<Item = &'a Contribution>,
) -> Result<TransportUrl, messaging_core::InvalidTransportUrl> {
    let mut text = base.to_string_with_secrets();
    let mut separator = if base.options().is_empty() { '?' } else { '&' };
    for c in added {
        text.push(separator);
        text.push_str(&quote(&c.key));
        text.push('=');
        text.push_str(&quote(&c.value));
        separator = '&';
    }
    TransportUrl::parse(&text)
}

/// A transport's error, as a reason.
fn reason_of(error: &TransportError) -> String {
    match error {
        TransportError::InvalidUrl(bad) => bad.reason().to_owned(),
        other => other.to_string(),
    }
}

impl Config {
    /// The URL the RPC transport opens: `[DEFAULT] transport_url` with the options of
    /// its transport's section (see the [module docs](crate#precedence) for which
    /// wins). Checked by the transport: opening it fails only for reasons outside the
    /// configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoTransportUrl`]; [`ConfigError::Value`] naming the file, line,
    /// section and key of a value the transport refuses.
    pub fn rpc_transport_url(&self) -> Result<TransportUrl, ConfigError> {
        self.resolve(Purpose::Rpc)
    }

    /// The URL the notification transport opens: `[oslo_messaging_notifications]
    /// transport_url`, else `[DEFAULT] transport_url` (oslo's fallback), with the
    /// options of its transport's section, as [`rpc_transport_url`](Self::rpc_transport_url).
    ///
    /// # Errors
    ///
    /// As [`rpc_transport_url`](Self::rpc_transport_url).
    pub fn notification_transport_url(&self) -> Result<TransportUrl, ConfigError> {
        self.resolve(Purpose::Notifications)
    }

    fn resolve(&self, purpose: Purpose) -> Result<TransportUrl, ConfigError> {
        let (base, origin, url_section) = self
            .base_url(purpose)
            .ok_or(ConfigError::NoTransportUrl { purpose })?;
        let contributions = self.contributions(base)?;
        let merged = with_options(base, contributions.iter())
            .map_err(|e| ConfigError::value(origin, url_section, "transport_url", e.reason()))?;
        if let Err(error) = messaging_transports::check(&merged) {
            let first = reason_of(&error);
            // The value at fault: the one whose absence removes or changes the error;
            // of two that conflict, the one set last.
            let culprit = (0..contributions.len()).rev().find(|&skip| {
                let others = contributions
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, c)| c);
                match with_options(base, others) {
                    Ok(url) => messaging_transports::check(&url)
                        .map_or_else(|e| reason_of(&e) != first, |()| true),
                    Err(_) => false,
                }
            });
            // The transport's words could quote a secret value, the culprit's or
            // another's it conflicts with.
            let quotes_secret = contributions
                .iter()
                .any(|c| c.secret && !c.value.is_empty() && first.contains(c.value.as_str()));
            return Err(match culprit.map(|i| &contributions[i]) {
                Some(c) if c.secret || quotes_secret => ConfigError::value(
                    &c.origin,
                    c.section,
                    &c.key,
                    "the transport refuses this value (value hidden)",
                ),
                Some(c) => ConfigError::value(&c.origin, c.section, &c.key, first),
                None if quotes_secret => ConfigError::value(
                    origin,
                    url_section,
                    "transport_url",
                    "the transport refuses this URL with the options of its section \
                     (reason hidden: it quotes a secret value)",
                ),
                None => ConfigError::value(origin, url_section, "transport_url", first),
            });
        }
        // Secret values of the section logged as `***`, as the URL shows passwords.
        let shown = match contributions.iter().any(|c| c.secret) {
            false => merged.to_string(),
            true => {
                let masked: Vec<Contribution> = contributions
                    .iter()
                    .map(|c| Contribution {
                        key: c.key.clone(),
                        value: if c.secret {
                            "***".to_owned()
                        } else {
                            c.value.clone()
                        },
                        origin: c.origin.clone(),
                        section: c.section,
                        order: c.order,
                        secret: c.secret,
                    })
                    .collect();
                with_options(base, masked.iter())
                    .map_or_else(|_| "(hidden)".to_owned(), |url| url.to_string())
            }
        };
        tracing::debug!(
            purpose = %purpose,
            url = %shown,
            origin = %origin,
            "config: {purpose} transport URL resolved",
        );
        Ok(merged)
    }

    /// What the transport's section (and `[DEFAULT] control_exchange`) add to `base`.
    fn contributions(&self, base: &TransportUrl) -> Result<Vec<Contribution>, ConfigError> {
        let mut added: Vec<Contribution> = Vec::new();
        let in_url = |names: &[&str]| names.iter().any(|n| base.option(n).is_some());
        let driver = base.driver();
        let section = schema::section_of_driver(driver);
        if let (Some(section), Some(known)) = (section, messaging_transports::known_options(driver))
        {
            // One value per option, whichever of its names the files use.
            let mut seen: Vec<String> = Vec::new();
            for key in self.store().keys(section) {
                if section == RABBIT && (RABBIT_POOL_OPTIONS.contains(&key.as_str()) || key == FIPS)
                {
                    self.check_unused(section, &key)?;
                    continue;
                }
                if !known.contains(&key.as_str()) {
                    continue;
                }
                let names: Vec<&str> = schema::names_of(&key)
                    .into_iter()
                    .filter(|name| known.contains(name))
                    .collect();
                let option = names.first().copied().unwrap_or(key.as_str()).to_owned();
                if seen.contains(&option) || in_url(&names) {
                    continue;
                }
                seen.push(option);
                let Some(setting) = self.store().single(section, &names) else {
                    continue;
                };
                let order = order_of(setting.rank, &setting.origin);
                let value = self.substituted(section, setting)?;
                added.push(Contribution {
                    key: value.key().to_owned(),
                    // Stripped, as oslo's numbers are (a value continued on the next
                    // line starts with a newline).
                    value: value.as_str().trim().to_owned(),
                    origin: value.origin().clone(),
                    section,
                    order,
                    secret: value.is_secret(),
                });
            }
        }
        let exchange_set = added.iter().any(|c| c.key == "control_exchange");
        if !exchange_set
            && !in_url(&["control_exchange"])
            && let Some(setting) = self.store().single(DEFAULT, &["control_exchange"])
        {
            let secret = self.secret_options.contains(&"control_exchange");
            added.push(Contribution {
                key: "control_exchange".to_owned(),
                value: self.control_exchange().to_owned(),
                order: order_of(setting.rank, &setting.origin),
                origin: setting.origin,
                section: DEFAULT,
                secret,
            });
        }
        added.sort_by_key(|c| c.order);
        Ok(added)
    }

    /// Checks one of oslo's options that mean nothing here.
    fn check_unused(&self, section: &'static str, key: &str) -> Result<(), ConfigError> {
        let Some(value) = self.value(section, key)? else {
            return Ok(());
        };
        if key == FIPS {
            let on = values::boolean(value.as_str()).map_err(|r| invalid(&value, section, &r))?;
            if on {
                return Err(invalid(
                    &value,
                    section,
                    "FIPS mode cannot be enforced: this transport's TLS (rustls) has no FIPS mode",
                ));
            }
        } else {
            values::integer(value.as_str()).map_err(|r| invalid(&value, section, &r))?;
            tracing::debug!(
                section,
                key,
                origin = %value.origin(),
                "config: `{key}` has no effect: the transport keeps one connection, not a pool",
            );
        }
        Ok(())
    }
}

/// Opens the RPC transport the configuration describes
/// ([`Config::rpc_transport_url`]) with [`messaging_transports::open`]: oslo's
/// `get_rpc_transport`.
///
/// # Errors
///
/// As [`Config::rpc_transport_url`]; [`ConfigError::Transport`] if the transport
/// cannot start.
///
/// # Examples
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("cfg-doc-rpc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let file = dir.join("service.conf");
/// # std::fs::write(&file, "[DEFAULT]\ntransport_url = memory:///doc\ncontrol_exchange = nova\n").unwrap();
/// let config = messaging_config::Config::from_files([&file])?;
/// let transport = messaging_config::rpc_transport(&config)?;
/// assert_eq!(transport.name(), "memory");
/// assert_eq!(config.rpc_transport_url()?.option("control_exchange"), Some("nova"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), messaging_config::ConfigError>(())
/// ```
pub fn rpc_transport(config: &Config) -> Result<Arc<dyn Transport>, ConfigError> {
    open(config.rpc_transport_url()?, Purpose::Rpc)
}

/// Opens the notification transport the configuration describes
/// ([`Config::notification_transport_url`]): oslo's `get_notification_transport`.
///
/// # Errors
///
/// As [`rpc_transport`].
pub fn notification_transport(config: &Config) -> Result<Arc<dyn Transport>, ConfigError> {
    open(config.notification_transport_url()?, Purpose::Notifications)
}

fn open(url: TransportUrl, purpose: Purpose) -> Result<Arc<dyn Transport>, ConfigError> {
    messaging_transports::open(&url.to_string_with_secrets())
        .map_err(|source| ConfigError::Transport { purpose, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(quote("/etc/ssl/ca.pem"), "%2Fetc%2Fssl%2Fca.pem");
        assert_eq!(quote("a+b c&d=e"), "a%2Bb%20c%26d%3De");
        let base = TransportUrl::parse("rabbit://u:p%40ss@h/vh").unwrap();
        let c = Contribution {
            key: "ssl_ca_file".to_owned(),
            value: "/etc/a+b/ca.pem".to_owned(),
            origin: Origin::Default,
            section: schema::RABBIT,
            order: (0, 0),
            secret: false,
        };
        let url = with_options(&base, [&c].into_iter()).unwrap();
        assert_eq!(url.option("ssl_ca_file"), Some("/etc/a+b/ca.pem"));
        assert_eq!(url.hosts()[0].password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(url.virtual_host(), Some("vh"));
    }
}
