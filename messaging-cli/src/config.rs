//! `--config-file` and `--config-dir`: the oslo.config files a service beside Nova or
//! Neutron is configured with, read by `messaging-config`, and what wins over them.
//!
//! The two flags are repeatable and read in the order given, mixed (oslo.config's
//! order: `--config-file a --config-dir d --config-file b` reads `a`, then `d`'s `*.conf`
//! files sorted by name, then `b`; later values win). Explicit values win over the
//! files: `--url` (and, when it is not given, `MESSAGING_URL`, as oslo.config lets its
//! environment win over files) over `transport_url`, `--timeout` over
//! `rpc_response_timeout`, `--topic` over `topics`, and so on.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use messaging_config::{Config, ConfigError, Origin, Purpose, Source};
use messaging_core::{InvalidTransportUrl, TransportUrl};

use crate::CliError;

const FILE: &str = "config_file";
const DIR: &str = "config_dir";

/// `--config-file FILE` and `--config-dir DIR`, in the order given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigArgs {
    /// The files and dirs, in order.
    pub sources: Vec<Source>,
}

impl FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut placed: Vec<(usize, Source)> = Vec::new();
        for (id, source) in [
            (FILE, Source::File as fn(_) -> _),
            (DIR, Source::Dir as fn(_) -> _),
        ] {
            if let (Some(values), Some(indices)) = (
                matches.get_many::<std::path::PathBuf>(id),
                matches.indices_of(id),
            ) {
                placed.extend(indices.zip(values.cloned().map(source)));
            }
        }
        placed.sort_by_key(|(index, _)| *index);
        Ok(ConfigArgs {
            sources: placed.into_iter().map(|(_, source)| source).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ConfigArgs {
    fn augment_args(command: Command) -> Command {
        augment(command, false)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

/// [`ConfigArgs`] as global flags: accepted before or after a subcommand (`simulate`'s
/// modes, where oslo's simulator.py takes `--config-file` before its mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfigArgs(pub ConfigArgs);

impl FromArgMatches for GlobalConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        ConfigArgs::from_arg_matches(matches).map(GlobalConfigArgs)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl Args for GlobalConfigArgs {
    fn augment_args(command: Command) -> Command {
        augment(command, true)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

fn augment(command: Command, global: bool) -> Command {
    command
        .arg(
            Arg::new(FILE)
                .global(global)
                .long("config-file")
                .value_name("FILE")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help(
                    "An oslo.config file to read (nova.conf, ...): transport_url, \
                         [oslo_messaging_rabbit], [oslo_messaging_notifications]. \
                         Repeatable; later files win, flags win over files",
                ),
        )
        .arg(
            Arg::new(DIR)
                .global(global)
                .long("config-dir")
                .value_name("DIR")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help(
                    "Read DIR's *.conf files, sorted by name. Repeatable, read in \
                         order with the --config-file flags",
                ),
        )
}

impl ConfigArgs {
    /// The configuration the files give, with `url` (`--url`, else `MESSAGING_URL`)
    /// over the `transport_url` the `purpose`'s transport uses.
    pub(crate) fn load(&self, url: Option<&str>, purpose: Purpose) -> Result<Loaded, CliError> {
        let mut builder = Config::builder().sources(self.sources.iter().cloned());
        let flag = match url {
            Some(url) => {
                // Checked here, so that its errors read as they always did.
                let parsed =
                    TransportUrl::parse(url).map_err(|e| CliError::usage(e.to_string()))?;
                let group = match purpose {
                    Purpose::Rpc => "DEFAULT",
                    Purpose::Notifications => "oslo_messaging_notifications",
                };
                builder = builder.set_override(group, "transport_url", url);
                Some(parsed)
            }
            None => None,
        };
        Ok(Loaded {
            config: builder.load().map_err(config_error)?,
            purpose,
            flag,
        })
    }
}

/// The configuration a command runs with, and which of its transports it uses.
pub(crate) struct Loaded {
    pub(crate) config: Config,
    purpose: Purpose,
    /// `--url` (or `MESSAGING_URL`), if given.
    flag: Option<TransportUrl>,
}

impl Loaded {
    /// The URL to open: the flag's or the files', with the options of its transport's
    /// section. Passwords included: for `open_json`, never for a message.
    pub(crate) fn url(&self) -> Result<String, CliError> {
        let url = match self.purpose {
            Purpose::Rpc => self.config.rpc_transport_url(),
            Purpose::Notifications => self.config.notification_transport_url(),
        };
        match (url, &self.flag) {
            (Ok(url), _) => Ok(url.to_string_with_secrets()),
            // A bad option in the flag's URL: quoted as given, passwords hidden.
            (
                Err(ConfigError::Value {
                    origin: Origin::Override,
                    key,
                    reason,
                    ..
                }),
                Some(flag),
            ) if key == "transport_url" => Err(CliError::usage(
                InvalidTransportUrl::new(flag, reason).to_string(),
            )),
            (Err(error), _) => Err(config_error(error)),
        }
    }
}

/// A configuration error, for the command line.
pub(crate) fn config_error(error: ConfigError) -> CliError {
    match error {
        ConfigError::NoTransportUrl { .. } => CliError::usage(
            "no transport URL: give --url, set MESSAGING_URL, or give a --config-file \
             that sets transport_url",
        ),
        ConfigError::Transport { .. } => CliError::failure(error.to_string()),
        other => CliError::usage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn files_and_dirs_keep_the_command_lines_order() {
        let probe = Probe::try_parse_from([
            "probe",
            "--config-dir",
            "d1",
            "--config-file",
            "a.conf",
            "--config-dir=d2",
            "--config-file",
            "b.conf",
        ])
        .unwrap();
        assert_eq!(
            probe.config.sources,
            [
                Source::Dir(PathBuf::from("d1")),
                Source::File(PathBuf::from("a.conf")),
                Source::Dir(PathBuf::from("d2")),
                Source::File(PathBuf::from("b.conf")),
            ]
        );
        let none = Probe::try_parse_from(["probe"]).unwrap();
        assert!(none.config.sources.is_empty());
    }
}
