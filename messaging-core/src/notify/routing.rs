//! [`RoutingTable`]: which drivers the `routing` driver hands a notification to
//! (oslo's `_impl_routing.py` and its `routing_config` YAML file).

use std::fmt;

use super::driver::NotifyDriver;
use super::fnmatch::Pattern;
use crate::message::Priority;

/// One driver's rules inside a group: the driver is chosen for a notification when
/// every rule it has matches (no rule at all: every notification).
///
/// * `accepted_events`: the event type matches one of the patterns;
/// * `accepted_priorities`: the priority, lower case (`info`), matches one of the
///   patterns (lower-cased, as oslo does: `INFO` and `info` are the same).
///
/// An empty list matches nothing, so such a route never chooses its driver.
/// Patterns are [`Pattern`]s (Python's `fnmatch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    driver: NotifyDriver,
    accepted_events: Option<Vec<Pattern>>,
    accepted_priorities: Option<Vec<Pattern>>,
}

impl Route {
    /// A route to `driver` with no rules (it takes every notification).
    pub fn new(driver: NotifyDriver) -> Route {
        Route {
            driver,
            accepted_events: None,
            accepted_priorities: None,
        }
    }

    /// Returns the route with the event types it accepts.
    pub fn accepted_events<I, P>(mut self, patterns: I) -> Route
    where
        I: IntoIterator<Item = P>,
        P: Into<Pattern>,
    {
        self.accepted_events = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Returns the route with the priorities it accepts (patterns, compared lower
    /// case: `info`, `warn`, `e*`).
    pub fn accepted_priorities<I, P>(mut self, patterns: I) -> Route
    where
        I: IntoIterator<Item = P>,
        P: Into<Pattern>,
    {
        self.accepted_priorities = Some(
            patterns
                .into_iter()
                .map(|p| Pattern::new(&p.into().as_str().to_lowercase()))
                .collect(),
        );
        self
    }

    /// The driver this route chooses.
    pub fn driver(&self) -> NotifyDriver {
        self.driver
    }

    /// Whether the route chooses its driver for a notification of `event_type` at
    /// `priority`.
    pub fn accepts(&self, event_type: &str, priority: Priority) -> bool {
        let any = |patterns: &Option<Vec<Pattern>>, text: &str| {
            patterns
                .as_ref()
                .is_none_or(|patterns| patterns.iter().any(|p| p.matches(text)))
        };
        any(&self.accepted_events, event_type) && any(&self.accepted_priorities, priority.as_str())
    }
}

/// The routing driver's table: named groups of [`Route`]s. A notification goes to
/// every driver that a route of any group chooses, once each, in the order the
/// drivers first appear in the table (oslo: the union over the groups of each
/// group's matching drivers). A route to [`NotifyDriver::Routing`] is never taken:
/// oslo does not load the routing driver inside itself.
///
/// Build it in Rust, or (feature `yaml`) read oslo's `routing_config` file with
/// `RoutingTable::from_yaml_file`.
///
/// # Examples
///
/// oslo's documented example: send to `messagingv2` what is `info`, `warn` or `error`,
/// or a scheduler event; log `compute.instance.exists`.
///
/// ```
/// use messaging_core::Priority;
/// use messaging_core::notify::{NotifyDriver, Route, RoutingTable};
///
/// let table = RoutingTable::new()
///     .group("group_1", [
///         Route::new(NotifyDriver::MessagingV2).accepted_priorities(["info", "warn", "error"]),
///         Route::new(NotifyDriver::Log).accepted_events(["compute.instance.exists"]),
///     ])
///     .group("group_2", [
///         Route::new(NotifyDriver::MessagingV2).accepted_events(["compute.scheduler.run_instance.*"]),
///     ]);
/// assert_eq!(
///     table.drivers_for("compute.instance.exists", Priority::Info),
///     [NotifyDriver::MessagingV2, NotifyDriver::Log]
/// );
/// assert_eq!(
///     table.drivers_for("compute.scheduler.run_instance.start", Priority::Debug),
///     [NotifyDriver::MessagingV2]
/// );
/// assert!(table.drivers_for("compute.instance.update", Priority::Debug).is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    groups: Vec<(String, Vec<Route>)>,
}

impl RoutingTable {
    /// An empty table: the routing driver sends nothing (as oslo's, without a
    /// `routing_config`).
    pub fn new() -> RoutingTable {
        RoutingTable::default()
    }

    /// Returns the table with one more group.
    pub fn group(
        mut self,
        name: impl Into<String>,
        routes: impl IntoIterator<Item = Route>,
    ) -> Self {
        self.groups
            .push((name.into(), routes.into_iter().collect()));
        self
    }

    /// The groups, in order: each name with its routes.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &[Route])> {
        self.groups
            .iter()
            .map(|(name, routes)| (name.as_str(), routes.as_slice()))
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(_, routes)| routes.is_empty())
    }

    /// The drivers a notification of `event_type` at `priority` goes to: each at most
    /// once, in the order of their first route in the table, never
    /// [`NotifyDriver::Routing`].
    pub fn drivers_for(&self, event_type: &str, priority: Priority) -> Vec<NotifyDriver> {
        let mut chosen = Vec::new();
        for route in self.groups.iter().flat_map(|(_, routes)| routes) {
            let driver = route.driver;
            if driver != NotifyDriver::Routing
                && !chosen.contains(&driver)
                && route.accepts(event_type, priority)
            {
                chosen.push(driver);
            }
        }
        chosen
    }
}

impl fmt::Display for RoutingTable {
    /// One line: `group_1: messagingv2, log; group_2: messagingv2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (name, routes)) in self.groups.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{name}:")?;
            for (i, route) in routes.iter().enumerate() {
                write!(f, "{}{}", if i == 0 { " " } else { ", " }, route.driver)?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "yaml")]
pub use yaml::RoutingError;

#[cfg(feature = "yaml")]
mod yaml {
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use serde_yaml_ng::Value;

    use super::{NotifyDriver, Pattern, Route, RoutingTable};

    /// The largest routing config read: 1 MiB (oslo's example is ten lines).
    const MAX_SIZE: usize = 1 << 20;

    /// The deepest nesting of flow collections (`[`, `{`) read: the YAML reader's own
    /// limit, checked before it spends time on deeper ones.
    const MAX_FLOW_DEPTH: usize = 128;

    /// A `routing_config` file that cannot be used.
    #[derive(Clone, Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum RoutingError {
        /// The file could not be read.
        #[error("cannot read the routing config {path}: {source}")]
        Read {
            /// The file.
            path: PathBuf,
            /// Why.
            #[source]
            source: Arc<std::io::Error>,
        },
        /// The file is not YAML.
        #[error("the routing config is not valid YAML: {0}")]
        Syntax(String),
        /// The YAML is not a routing table: what is wrong, and where.
        #[error("invalid routing config: {0}")]
        Invalid(String),
        /// The file or text is larger than 1 MiB (a routing table is a few lines; a
        /// larger one, or an endless file, is refused before it costs memory).
        #[error("the routing config{} is larger than 1 MiB", shown_path(path.as_deref()))]
        TooLarge {
            /// The file, when read from one.
            path: Option<PathBuf>,
        },
    }

    impl RoutingTable {
        /// Reads oslo's `routing_config` file; see
        /// [`from_yaml_str`](RoutingTable::from_yaml_str).
        ///
        /// At most 1 MiB is read: a larger file (or `/dev/zero`) is
        /// [`RoutingError::TooLarge`].
        ///
        /// # Errors
        ///
        /// [`RoutingError::Read`] if the file cannot be read or is not UTF-8,
        /// [`RoutingError::TooLarge`], else as `from_yaml_str`.
        #[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
        pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<RoutingTable, RoutingError> {
            let path = path.as_ref();
            let read = |e| RoutingError::Read {
                path: path.to_owned(),
                source: Arc::new(e),
            };
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_SIZE as u64 + 1).read_to_end(&mut bytes))
                .map_err(read)?;
            if bytes.len() > MAX_SIZE {
                return Err(RoutingError::TooLarge {
                    path: Some(path.to_owned()),
                });
            }
            let text = String::from_utf8(bytes).map_err(|_| {
                read(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                ))
            })?;
            RoutingTable::from_yaml_str(&text)
        }

        /// Parses oslo's routing YAML: groups, each a mapping of driver names to
        /// rules (`accepted_events`, `accepted_priorities`: lists of patterns).
        ///
        /// ```yaml
        /// group_1:
        ///     messagingv2:
        ///         accepted_priorities: ['info', 'warn', 'error']
        ///     log:
        ///         accepted_events: ['compute.instance.exists']
        /// group_2:
        ///     messagingv2:
        ///         accepted_events: ['compute.scheduler.run_instance.*']
        /// ```
        ///
        /// An empty document is an empty table. A driver with an empty mapping `{}`
        /// takes every notification. Another rule key is ignored with a warning, as
        /// oslo ignores it (which then makes the driver take what that rule was
        /// meant to filter).
        ///
        /// Where oslo differs: it loads the drivers it knows and silently skips the
        /// others (its own sample names a `poll` driver that does not exist), skips
        /// `routing`, and fails only when a notification is sent if a group or a
        /// driver has no mapping or a rule is not a list. Here each of these is an
        /// error when the file is read, so that a typo cannot drop notifications
        /// unnoticed.
        ///
        /// # Errors
        ///
        /// [`RoutingError::TooLarge`] for more than 1 MiB of text,
        /// [`RoutingError::Syntax`] for YAML that does not parse (or nests more
        /// than 128 deep, the YAML reader's limit),
        /// [`RoutingError::Invalid`] (naming the group and driver) for an unknown
        /// driver, `routing`, a group or driver that is not a mapping, or a rule
        /// that is not a list of strings.
        ///
        /// # Examples
        ///
        /// ```
        /// use messaging_core::Priority;
        /// use messaging_core::notify::{NotifyDriver, RoutingTable};
        ///
        /// let table = RoutingTable::from_yaml_str(
        ///     "group_1:\n  log:\n    accepted_priorities: [error, critical]\n",
        /// )?;
        /// assert_eq!(table.drivers_for("x", Priority::Critical), [NotifyDriver::Log]);
        /// assert!(table.drivers_for("x", Priority::Info).is_empty());
        /// # Ok::<(), messaging_core::notify::RoutingError>(())
        /// ```
        #[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
        pub fn from_yaml_str(text: &str) -> Result<RoutingTable, RoutingError> {
            if text.len() > MAX_SIZE {
                return Err(RoutingError::TooLarge { path: None });
            }
            if flow_depth_exceeds(text, MAX_FLOW_DEPTH) {
                return Err(RoutingError::Syntax(format!(
                    "`[` and `{{` nested more than {MAX_FLOW_DEPTH} deep"
                )));
            }
            let document: Value =
                serde_yaml_ng::from_str(text).map_err(|e| RoutingError::Syntax(e.to_string()))?;
            let groups = match document {
                Value::Null => return Ok(RoutingTable::new()),
                Value::Mapping(groups) => groups,
                other => {
                    return Err(RoutingError::Invalid(format!(
                        "the document is {}, not a mapping of groups",
                        kind(&other)
                    )));
                }
            };
            let mut table = RoutingTable::new();
            for (name, drivers) in groups {
                let name = key(&name);
                let Value::Mapping(drivers) = drivers else {
                    return Err(RoutingError::Invalid(format!(
                        "group `{name}` is {}, not a mapping of drivers",
                        kind(&drivers)
                    )));
                };
                let mut routes = Vec::new();
                for (driver_name, rules) in drivers {
                    let driver_name = key(&driver_name);
                    let driver: NotifyDriver = driver_name
                        .parse()
                        .map_err(|e| RoutingError::Invalid(format!("group `{name}`: {e}")))?;
                    if driver == NotifyDriver::Routing {
                        return Err(RoutingError::Invalid(format!(
                            "group `{name}`: the routing driver cannot route to itself"
                        )));
                    }
                    let Value::Mapping(rules) = rules else {
                        return Err(RoutingError::Invalid(format!(
                            "group `{name}`, driver `{driver_name}`: the rules are {}, not a \
                             mapping (write `{{}}` for a driver that takes everything)",
                            kind(&rules)
                        )));
                    };
                    let mut route = Route::new(driver);
                    for (rule, patterns) in rules {
                        let rule = key(&rule);
                        let at = || format!("group `{name}`, driver `{driver_name}`, `{rule}`");
                        match rule.as_str() {
                            "accepted_events" => {
                                route = route.accepted_events(patterns_of(&patterns, at)?);
                            }
                            "accepted_priorities" => {
                                route = route.accepted_priorities(patterns_of(&patterns, at)?);
                            }
                            _ => tracing::warn!(
                                group = %name,
                                driver = %driver_name,
                                rule = %rule,
                                "unknown routing rule ignored (expected accepted_events or \
                                 accepted_priorities)"
                            ),
                        }
                    }
                    routes.push(route);
                }
                table = table.group(name, routes);
            }
            Ok(table)
        }
    }

    /// ` <path>`, or nothing.
    fn shown_path(path: Option<&Path>) -> String {
        path.map(|p| format!(" {}", p.display()))
            .unwrap_or_default()
    }

    /// Whether `[` and `{` outside quotes and comments nest deeper than `limit` (the
    /// YAML reader would refuse the document at its recursion limit, after spending
    /// time on every level: 25 s for 256 Ki levels in a debug build). Counts at most
    /// what the reader sees: a quote inside a plain scalar (`don't`) hides brackets
    /// from the count, never adds any.
    fn flow_depth_exceeds(text: &str, limit: usize) -> bool {
        let mut depth = 0usize;
        let mut quote = None;
        let mut comment = false;
        let mut after_space = true;
        let mut escaped = false;
        for c in text.chars() {
            if comment {
                comment = c != '\n';
            } else if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if q == '"' && c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            } else {
                match c {
                    '\'' | '"' => quote = Some(c),
                    '#' if after_space => comment = true,
                    '[' | '{' => {
                        depth += 1;
                        if depth > limit {
                            return true;
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            after_space = c.is_whitespace();
        }
        false
    }

    /// A mapping key as text (YAML keys may be numbers or booleans).
    fn key(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_owned(),
            other => format!("<{}>", kind(other)),
        }
    }

    fn kind(value: &Value) -> &'static str {
        match value {
            Value::Null => "empty",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
            Value::Tagged(_) => "a tagged value",
        }
    }

    fn patterns_of(value: &Value, at: impl Fn() -> String) -> Result<Vec<Pattern>, RoutingError> {
        let Value::Sequence(items) = value else {
            return Err(RoutingError::Invalid(format!(
                "{}: {}, not a list of patterns",
                at(),
                kind(value)
            )));
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Pattern::new(s)),
                other => Err(RoutingError::Invalid(format!(
                    "{}: a pattern is {}, not a string (quote it)",
                    at(),
                    kind(other)
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drivers(table: &RoutingTable, event: &str, priority: Priority) -> Vec<&'static str> {
        table
            .drivers_for(event, priority)
            .into_iter()
            .map(NotifyDriver::name)
            .collect()
    }

    /// oslo's `test_get_drivers_for_message_accepted_events`.
    #[test]
    fn accepted_events_are_fnmatch_patterns() {
        let table =
            RoutingTable::new().group(
                "group_1",
                [Route::new(NotifyDriver::MessagingV2).accepted_events([
                    "foo.*",
                    "blah.zoo.*",
                    "zip",
                ])],
            );
        assert!(drivers(&table, "unknown", Priority::Info).is_empty());
        assert_eq!(drivers(&table, "foo.1", Priority::Info), ["messagingv2"]);
        assert!(drivers(&table, "foo", Priority::Info).is_empty());
        assert_eq!(
            drivers(&table, "blah.zoo.zing", Priority::Info),
            ["messagingv2"]
        );
        assert_eq!(drivers(&table, "zip", Priority::Info), ["messagingv2"]);
        assert!(drivers(&table, "zipper", Priority::Info).is_empty());
    }

    /// oslo's `test_get_drivers_for_message_accepted_priorities`; patterns are
    /// lower-cased as oslo does.
    #[test]
    fn accepted_priorities_match_the_lower_case_name() {
        let table = RoutingTable::new().group(
            "group_1",
            [Route::new(NotifyDriver::MessagingV2).accepted_priorities(["info", "ERROR"])],
        );
        assert!(drivers(&table, "e", Priority::Debug).is_empty());
        assert_eq!(drivers(&table, "e", Priority::Info), ["messagingv2"]);
        assert_eq!(drivers(&table, "e", Priority::Error), ["messagingv2"]);
        // `warn` is the priority's name; `warning` never matches it.
        let warning = RoutingTable::new().group(
            "g",
            [Route::new(NotifyDriver::Log).accepted_priorities(["warning"])],
        );
        assert!(drivers(&warning, "e", Priority::Warn).is_empty());
        let wildcard = RoutingTable::new().group(
            "g",
            [Route::new(NotifyDriver::Log).accepted_priorities(["?r*", "[ac]*"])],
        );
        for (priority, expected) in [
            (Priority::Error, true),
            (Priority::Critical, true),
            (Priority::Audit, true),
            (Priority::Info, false),
            (Priority::Sample, false),
        ] {
            assert_eq!(
                !drivers(&wildcard, "e", priority).is_empty(),
                expected,
                "{priority}"
            );
        }
    }

    /// oslo's `test_get_drivers_for_message_both`: both rules must match; each
    /// driver's own rules decide for it alone.
    #[test]
    fn a_route_with_both_rules_needs_both() {
        let table = RoutingTable::new().group(
            "group_1",
            [
                Route::new(NotifyDriver::MessagingV2)
                    .accepted_priorities(["info"])
                    .accepted_events(["foo.*"]),
                Route::new(NotifyDriver::Log).accepted_priorities(["info"]),
                Route::new(NotifyDriver::Messaging).accepted_events(["foo.*"]),
            ],
        );
        assert_eq!(drivers(&table, "foo.blah", Priority::Debug), ["messaging"]);
        assert_eq!(drivers(&table, "unknown", Priority::Info), ["log"]);
        assert_eq!(
            drivers(&table, "foo.blah", Priority::Info),
            ["messagingv2", "log", "messaging"]
        );
    }

    #[test]
    fn groups_are_a_union_and_each_driver_comes_once() {
        let table = RoutingTable::new()
            .group(
                "g1",
                [Route::new(NotifyDriver::Log).accepted_events(["a.*"])],
            )
            .group(
                "g2",
                [
                    Route::new(NotifyDriver::MessagingV2).accepted_events(["*.b"]),
                    Route::new(NotifyDriver::Log).accepted_events(["*.b"]),
                ],
            );
        assert_eq!(
            drivers(&table, "a.b", Priority::Info),
            ["log", "messagingv2"]
        );
        assert_eq!(
            drivers(&table, "x.b", Priority::Info),
            ["messagingv2", "log"]
        );
        assert_eq!(drivers(&table, "a.x", Priority::Info), ["log"]);
    }

    #[test]
    fn no_rules_take_everything_and_an_empty_list_nothing() {
        let table = RoutingTable::new().group(
            "g",
            [
                Route::new(NotifyDriver::Log),
                Route::new(NotifyDriver::MessagingV2).accepted_events(Vec::<&str>::new()),
                Route::new(NotifyDriver::Routing),
            ],
        );
        for priority in Priority::ALL {
            assert_eq!(drivers(&table, "anything", priority), ["log"]);
        }
        assert!(RoutingTable::new().is_empty());
        assert!(RoutingTable::new().group("g", []).is_empty());
        assert!(!table.is_empty());
        assert_eq!(table.to_string(), "g: log, messagingv2, routing");
    }
}

#[cfg(all(test, feature = "yaml"))]
mod yaml_tests {
    use super::*;

    fn drivers(table: &RoutingTable, event: &str, priority: Priority) -> Vec<&'static str> {
        table
            .drivers_for(event, priority)
            .into_iter()
            .map(NotifyDriver::name)
            .collect()
    }

    /// oslo's `etc/routing_notifier.yaml.sample`, with its `messaging` driver as it
    /// is and its nonexistent `poll` driver replaced by `log`.
    const SAMPLE: &str = "
# Setting a priority AND an event means both have to be satisfied.
#
# However, defining different sets for the same driver allows you
# to do OR operations.
#
# See how this logic is modelled below:
#
# if (priority in info, warn or error) or
#    (event == compute.scheduler.run_instance)
#        send to messaging driver ...
#
# if priority == 'poll' and
#    event == 'bandwidth.*'
#        send to poll driver

group_1:
    messaging:
        accepted_priorities: ['info', 'warn', 'error']

    log:
        accepted_priorities: ['sample']
        accepted_events: ['bandwidth.*']

group_2:
    messaging:
        accepted_events: ['compute.scheduler.run_instance.*']
";

    #[test]
    fn the_documented_example_routes_as_its_comments_say() {
        let table = RoutingTable::from_yaml_str(SAMPLE).unwrap();
        assert_eq!(
            table.groups().map(|(name, _)| name).collect::<Vec<_>>(),
            ["group_1", "group_2"]
        );
        // priority in info, warn or error -> messaging
        for priority in [Priority::Info, Priority::Warn, Priority::Error] {
            assert_eq!(
                drivers(&table, "compute.instance.update", priority),
                ["messaging"]
            );
        }
        // or the event is a scheduler run_instance event, whatever its priority
        assert_eq!(
            drivers(
                &table,
                "compute.scheduler.run_instance.start",
                Priority::Debug
            ),
            ["messaging"]
        );
        assert!(drivers(&table, "compute.scheduler.select", Priority::Debug).is_empty());
        // sample AND bandwidth.* -> log; either alone is not enough
        assert_eq!(drivers(&table, "bandwidth.in", Priority::Sample), ["log"]);
        assert!(drivers(&table, "cpu.util", Priority::Sample).is_empty());
        assert_eq!(
            drivers(&table, "bandwidth.in", Priority::Info),
            ["messaging"]
        );
        assert!(drivers(&table, "bandwidth.in", Priority::Critical).is_empty());
    }

    #[test]
    fn the_verbatim_sample_is_refused_for_its_unknown_poll_driver() {
        let verbatim = SAMPLE.replace("    log:\n", "    poll:\n");
        let error = RoutingTable::from_yaml_str(&verbatim).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, RoutingError::Invalid(_))
                && text.contains("group `group_1`")
                && text.contains("`poll`"),
            "{text}"
        );
    }

    #[test]
    fn yaml_forms_and_their_errors() {
        assert!(RoutingTable::from_yaml_str("").unwrap().is_empty());
        assert!(
            RoutingTable::from_yaml_str("# nothing\n")
                .unwrap()
                .is_empty()
        );
        let all = RoutingTable::from_yaml_str("g:\n  log: {}\n").unwrap();
        assert_eq!(drivers(&all, "x", Priority::Audit), ["log"]);
        // An unknown rule is ignored (oslo's way): the driver then takes everything.
        let typo = RoutingTable::from_yaml_str("g:\n  log:\n    accepted_event: [a]\n").unwrap();
        assert_eq!(drivers(&typo, "b", Priority::Info), ["log"]);
        let cases: &[(&str, &str)] = &[
            ("[a, b]", "a list, not a mapping of groups"),
            ("g: [log]", "group `g` is a list"),
            ("g:\n  log:\n", "driver `log`: the rules are empty"),
            ("g:\n  kafka: {}\n", "unknown notification driver `kafka`"),
            ("g:\n  routing: {}\n", "cannot route to itself"),
            (
                "g:\n  log:\n    accepted_events: 'foo.*'\n",
                "`accepted_events`: a string, not a list",
            ),
            (
                "g:\n  log:\n    accepted_priorities: [1]\n",
                "a pattern is a number, not a string",
            ),
        ];
        for (yaml, expected) in cases {
            let error = RoutingTable::from_yaml_str(yaml).unwrap_err();
            assert!(
                matches!(error, RoutingError::Invalid(_)) && error.to_string().contains(expected),
                "{yaml:?}: {error}"
            );
        }
        assert!(matches!(
            RoutingTable::from_yaml_str("g: [unclosed"),
            Err(RoutingError::Syntax(_))
        ));
    }

    #[test]
    fn a_file_that_cannot_be_read_names_its_path() {
        let missing = std::env::temp_dir().join("messaging-no-such-routing.yaml");
        let error = RoutingTable::from_yaml_file(&missing).unwrap_err();
        assert!(
            matches!(&error, RoutingError::Read { path, .. } if *path == missing),
            "{error}"
        );
        let file =
            std::env::temp_dir().join(format!("messaging-routing-{}.yaml", std::process::id()));
        std::fs::write(&file, SAMPLE).unwrap();
        let read = RoutingTable::from_yaml_file(&file);
        let _ = std::fs::remove_file(&file);
        assert_eq!(read.unwrap(), RoutingTable::from_yaml_str(SAMPLE).unwrap());
    }
}
