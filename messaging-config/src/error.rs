//! [`ConfigError`], and [`Origin`]: where a value came from.

use std::fmt;
use std::path::{Path, PathBuf};

use messaging_core::TransportError;

// ===== Origin =====

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A config file, at a line (1-based) where the assignment starts.
    File {
        /// The file, as it was named (a dir's file: the dir joined with its name).
        path: PathBuf,
        /// The line.
        line: usize,
    },
    /// [`ConfigBuilder::set_override`](crate::ConfigBuilder::set_override): the program
    /// (a command-line flag, say).
    Override,
    /// Nobody set it: the option's default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Override => f.write_str("override"),
            Origin::Default => f.write_str("default"),
        }
    }
}

// ===== Purpose =====

/// Which of a service's two transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// RPC: `[DEFAULT] transport_url`.
    Rpc,
    /// Notifications: `[oslo_messaging_notifications] transport_url`, else
    /// `[DEFAULT] transport_url`.
    Notifications,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Rpc => "RPC",
            Purpose::Notifications => "notification",
        })
    }
}

// ===== ConfigError =====

/// Reading the configuration, or opening a transport it describes, failed.
///
/// Messages name the file and line, the section and the key at fault; they quote a
/// value only when its key is not secret (`transport_url`, keys naming a password,
/// secret, token or credential are never quoted) and never quote a line of a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Config files that do not exist (all of them, as oslo.config reports them).
    #[error("config file not found: {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    FilesNotFound {
        /// The missing files.
        paths: Vec<PathBuf>,
    },
    /// A config dir that does not exist.
    #[error("config dir not found: {}", path.display())]
    DirNotFound {
        /// The dir.
        path: PathBuf,
    },
    /// A file or dir that exists but cannot be read (permissions, a directory named
    /// as a config file), a file larger than 4 MiB (error kind
    /// [`FileTooLarge`](std::io::ErrorKind::FileTooLarge): `/dev/zero` as a config
    /// file ends here rather than exhausting memory), or a config dir's `*.conf` that
    /// is not a regular file (a FIFO, a device).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file or dir.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line the INI dialect refuses (see the crate docs), or a file not in UTF-8.
    #[error("{}:{line}: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value an option cannot take.
    #[error("{origin}: [{section}] {key}: {reason}")]
    Value {
        /// Where the value was set.
        origin: Origin,
        /// The section, normalised (`DEFAULT`, or lower case).
        section: String,
        /// The key as written.
        key: String,
        /// What is wrong (quoting the value unless the key is secret).
        reason: String,
    },
    /// A transport was asked for, and no URL was configured for it.
    #[error("{}", no_url(*purpose))]
    NoTransportUrl {
        /// Which transport.
        purpose: Purpose,
    },
    /// The `routing` notification driver is configured, and no `routing_config` file
    /// names its routing table.
    #[error(
        "[oslo_messaging_notifications] driver routing needs routing_config (the YAML \
         file of its routing table)"
    )]
    NoRoutingConfig,
    /// The routing driver's `routing_config` file cannot be read or is not a routing
    /// table.
    #[error(transparent)]
    Routing(#[from] messaging_core::notify::RoutingError),
    /// The transport refused to open for another reason than its URL (which was
    /// checked when it was resolved), e.g. it could not start its runtime.
    #[error("cannot open the {purpose} transport: {source}")]
    Transport {
        /// Which transport.
        purpose: Purpose,
        /// The transport's error (passwords hidden).
        #[source]
        source: TransportError,
    },
}

fn no_url(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Rpc => {
            "no transport URL: set `transport_url` in [DEFAULT] (oslo.messaging would \
             fall back to `rabbit://`, guest on localhost: write that if you mean it)"
        }
        Purpose::Notifications => {
            "no notification transport URL: set `transport_url` in \
             [oslo_messaging_notifications] or [DEFAULT] (oslo.messaging would fall back \
             to `rabbit://`, guest on localhost: write that if you mean it)"
        }
    }
}

impl ConfigError {
    /// The file and line at fault, when a line of a file is.
    pub fn location(&self) -> Option<(&Path, usize)> {
        match self {
            ConfigError::Syntax { path, line, .. }
            | ConfigError::Value {
                origin: Origin::File { path, line },
                ..
            } => Some((path, *line)),
            _ => None,
        }
    }

    /// The section and key at fault, for a [`ConfigError::Value`].
    pub fn option(&self) -> Option<(&str, &str)> {
        match self {
            ConfigError::Value { section, key, .. } => Some((section, key)),
            _ => None,
        }
    }

    pub(crate) fn value(
        origin: &Origin,
        section: &str,
        key: &str,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Value {
            origin: origin.clone(),
            section: section.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_line_section_and_key() {
        let e = ConfigError::value(
            &Origin::File {
                path: "/etc/nova/nova.conf".into(),
                line: 12,
            },
            "oslo_messaging_rabbit",
            "heartbeat_rate",
            "must be a whole number",
        );
        assert_eq!(
            e.to_string(),
            "/etc/nova/nova.conf:12: [oslo_messaging_rabbit] heartbeat_rate: must be a whole number"
        );
        assert_eq!(e.location(), Some((Path::new("/etc/nova/nova.conf"), 12)));
        assert_eq!(
            e.option(),
            Some(("oslo_messaging_rabbit", "heartbeat_rate"))
        );
        let e = ConfigError::FilesNotFound {
            paths: vec!["a.conf".into(), "b.conf".into()],
        };
        assert_eq!(e.to_string(), "config file not found: a.conf, b.conf");
        assert_eq!(e.location(), None);
    }
}
