//! Where values come from, and which one wins: the files and dirs in oslo.config's
//! order, then the program's overrides.
//!
//! oslo.config's rules (`cfg.py`: `_ConfigFileOpt`, `_ConfigDirOpt`, `_Namespace`):
//!
//! * sources are read in the order given, `--config-file` and `--config-dir` mixed;
//!   a dir contributes the files matching `*.conf` in it (not hidden ones), sorted by
//!   name; a leading `~` means the home directory;
//! * a missing file is an error, reported with every other missing one at the end; a
//!   missing dir is an error at once;
//! * (not oslo's) a file larger than [`MAX_FILE_SIZE`] is an error, read no further, so
//!   `/dev/zero` or a pipe that never ends cannot exhaust memory; and a dir's `*.conf`
//!   that is not a regular file (a FIFO, a device, a socket, a directory), symlinks
//!   followed, is an error rather than something to open, since opening a FIFO waits
//!   for a writer forever. A file named on its own may be anything readable
//!   (`--config-file <(...)`, a pipe from the shell, works);
//! * section names other than `DEFAULT` are case-insensitive (`[OSLO_MESSAGING_RABBIT]`
//!   is `[oslo_messaging_rabbit]`), `DEFAULT` must be written so (`[default]` is a
//!   section named `default`); keys are case-sensitive;
//! * a single-valued option takes its value from the newest file that sets it (the last
//!   value there); a multi-valued one collects every value of every file, oldest first;
//! * a deprecated name counts like the option's own name in its file, the own name
//!   winning within one file.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::ini;

/// The largest config file read (4 MiB; oslo's sample `nova.conf`, every option
/// commented, is about 0.5 MiB). Reading one costs up to about 30 times its size in
/// memory when it is nothing but one-line assignments, so the limit also bounds that. A larger one is [`ConfigError::Unreadable`] with an
/// error of kind [`io::ErrorKind::FileTooLarge`].
pub(crate) const MAX_FILE_SIZE: u64 = 4 << 20;

/// One place to read configuration from, as `--config-file` and `--config-dir` name
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// One file.
    File(PathBuf),
    /// A directory: its `*.conf` files (hidden ones excepted), sorted by name.
    Dir(PathBuf),
}

/// One value given for an option.
#[derive(Clone, Debug)]
pub(crate) struct Setting {
    /// The key as written (an alias of the option, maybe).
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) origin: Origin,
    /// The index of its file in read order; overrides come after every file.
    pub(crate) rank: usize,
}

/// One value as a file gave it, stored compactly (its key is the map's, its file the
/// store's `files[rank]`): a file of a million one-line assignments must not cost a
/// copy of its path each.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) value: String,
    pub(crate) line: usize,
    pub(crate) rank: usize,
}

/// A section: where it was first seen (file index and line), and its values by key,
/// oldest first.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) first_seen: (usize, usize),
    pub(crate) keys: BTreeMap<String, Vec<Stored>>,
}

/// Everything read, by normalised section name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Store {
    /// The files read, in order.
    pub(crate) files: Vec<PathBuf>,
    pub(crate) groups: BTreeMap<String, Group>,
    /// The program's values, by (normalised section, key): they win over the files.
    overrides: BTreeMap<(String, String), String>,
}

/// oslo's group name rule: `DEFAULT` as written, any other section lower-cased.
pub(crate) fn normalize_group(name: &str) -> String {
    if name == "DEFAULT" {
        name.to_owned()
    } else {
        name.to_lowercase()
    }
}

/// `~` and `~/…` with the home directory, as Python's `os.path.expanduser`.
fn expand_home(path: &Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_owned();
    };
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_owned(),
    }
}

/// The `*.conf` files of a config dir, sorted by name, hidden files left out (Python's
/// `sorted(glob.glob(dir + '/*.conf'))`).
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if !dir.exists() {
        return Err(ConfigError::DirNotFound {
            path: dir.to_owned(),
        });
    }
    let unreadable = |source| ConfigError::Unreadable {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let name = entry.map_err(unreadable)?.file_name();
        let text = name.to_string_lossy();
        if text.ends_with(".conf") && !text.starts_with('.') {
            files.push(dir.join(name));
        }
    }
    files.sort();
    Ok(files)
}

/// How a file came to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Named on its own: anything readable.
    Named,
    /// Found in a config dir: regular files only.
    InDir,
}

/// The bytes of `path`, at most [`MAX_FILE_SIZE`] of them.
fn read_bounded(path: &Path, kind: Kind) -> io::Result<Vec<u8>> {
    if kind == Kind::InDir && !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a config dir's *.conf must be files: a FIFO or device \
             there could never be read to its end)",
        ));
    }
    let file = std::fs::File::open(path)?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "larger than {} MiB, the most a config file may hold",
                MAX_FILE_SIZE >> 20
            ),
        )
    };
    let known = file.metadata()?;
    if known.is_file() && known.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(bytes)
}

impl Store {
    /// Reads `sources` in order.
    ///
    /// # Errors
    ///
    /// [`ConfigError::FilesNotFound`] (every missing file), [`ConfigError::DirNotFound`],
    /// [`ConfigError::Unreadable`], [`ConfigError::Syntax`].
    pub(crate) fn read(sources: &[Source]) -> Result<Store, ConfigError> {
        let mut store = Store::default();
        let mut missing = Vec::new();
        for source in sources {
            match source {
                Source::File(path) => {
                    store.read_file(&expand_home(path), Kind::Named, &mut missing)?
                }
                Source::Dir(path) => {
                    for file in dir_files(&expand_home(path))? {
                        store.read_file(&file, Kind::InDir, &mut missing)?;
                    }
                }
            }
        }
        if !missing.is_empty() {
            return Err(ConfigError::FilesNotFound { paths: missing });
        }
        Ok(store)
    }

    fn read_file(
        &mut self,
        path: &Path,
        kind: Kind,
        missing: &mut Vec<PathBuf>,
    ) -> Result<(), ConfigError> {
        let bytes = match read_bounded(path, kind) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(path.to_owned());
                return Ok(());
            }
            Err(source) => {
                return Err(ConfigError::Unreadable {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::Syntax {
                path: path.to_owned(),
                line: 1 + valid.iter().filter(|b| **b == b'\n').count(),
                reason: "not UTF-8".to_owned(),
            }
        })?;
        let parsed = ini::parse(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.line,
            reason: e.reason.to_owned(),
        })?;
        let rank = self.files.len();
        self.files.push(path.to_owned());
        // Each section's normalised name, once.
        let names: Vec<String> = parsed
            .sections
            .iter()
            .map(|(name, line)| {
                let name = normalize_group(name);
                self.groups.entry(name.clone()).or_insert_with(|| Group {
                    first_seen: (rank, *line),
                    keys: BTreeMap::new(),
                });
                name
            })
            .collect();
        for assignment in parsed.assignments {
            let Some(group) = self.groups.get_mut(&names[assignment.section]) else {
                continue; // every section was entered above
            };
            let stored = Stored {
                value: assignment.value,
                line: assignment.line,
                rank,
            };
            match group.keys.get_mut(&assignment.key) {
                Some(values) => values.push(stored),
                None => {
                    group.keys.insert(assignment.key, vec![stored]);
                }
            }
        }
        Ok(())
    }

    /// Where a value of the file of index `rank` at `line` was set (overrides have no
    /// file).
    pub(crate) fn origin(&self, (rank, line): (usize, usize)) -> Origin {
        match self.files.get(rank) {
            Some(path) => Origin::File {
                path: path.clone(),
                line,
            },
            None => Origin::Override,
        }
    }

    fn setting(&self, key: &str, stored: &Stored) -> Setting {
        Setting {
            key: key.to_owned(),
            value: stored.value.clone(),
            origin: self.origin((stored.rank, stored.line)),
            rank: stored.rank,
        }
    }

    /// Sets a value that wins over the files.
    pub(crate) fn set_override(&mut self, group: &str, key: &str, value: String) {
        self.overrides
            .insert((normalize_group(group), key.to_owned()), value);
    }

    fn override_of(&self, group: &str, key: &str) -> Option<Setting> {
        self.overrides
            .get(&(normalize_group(group), key.to_owned()))
            .map(|value| Setting {
                key: key.to_owned(),
                value: value.clone(),
                origin: Origin::Override,
                rank: usize::MAX,
            })
    }

    /// The value of a single-valued option known by `names` (its name first, then
    /// older names): an override, else the newest file's (the own name winning within a
    /// file, the last value of that name there).
    pub(crate) fn single(&self, group: &str, names: &[&str]) -> Option<Setting> {
        if let Some(set) = names.iter().find_map(|key| self.override_of(group, key)) {
            return Some(set);
        }
        let keys = &self.groups.get(&normalize_group(group))?.keys;
        let mut best: Option<(usize, usize, &Stored)> = None;
        for (preference, name) in names.iter().enumerate() {
            let Some(last) = keys.get(*name).and_then(|all| all.last()) else {
                continue;
            };
            // Newest file first; within a file the first name listed.
            let better = match best {
                None => true,
                Some((rank, was, _)) => last.rank > rank || (last.rank == rank && preference < was),
            };
            if better {
                best = Some((last.rank, preference, last));
            }
        }
        best.map(|(_, preference, stored)| self.setting(names[preference], stored))
    }

    /// Every value of a multi-valued option, oldest file first; an override stands for
    /// them all.
    pub(crate) fn multi(&self, group: &str, key: &str) -> Vec<Setting> {
        if let Some(set) = self.override_of(group, key) {
            return vec![set];
        }
        self.groups
            .get(&normalize_group(group))
            .and_then(|g| g.keys.get(key))
            .map(|all| all.iter().map(|stored| self.setting(key, stored)).collect())
            .unwrap_or_default()
    }

    /// The keys set in a section (files and overrides), each once.
    pub(crate) fn keys(&self, group: &str) -> Vec<String> {
        let group = normalize_group(group);
        let mut keys: Vec<String> = self
            .groups
            .get(&group)
            .map(|g| g.keys.keys().cloned().collect())
            .unwrap_or_default();
        for (g, key) in self.overrides.keys() {
            if *g == group && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(value: &str, rank: usize) -> Stored {
        Stored {
            value: value.to_owned(),
            line: 0,
            rank,
        }
    }

    fn store(values: &[(&str, &str, &str, usize)]) -> Store {
        let mut store = Store::default();
        for (group, key, value, rank) in values {
            store
                .groups
                .entry(normalize_group(group))
                .or_insert_with(|| Group {
                    first_seen: (usize::MAX, 0),
                    keys: BTreeMap::new(),
                })
                .keys
                .entry((*key).to_owned())
                .or_default()
                .push(setting(value, *rank));
        }
        store
    }

    fn single(store: &Store, group: &str, names: &[&str]) -> Option<String> {
        store.single(group, names).map(|s| s.value)
    }

    #[test]
    fn group_names_other_than_default_are_case_insensitive() {
        assert_eq!(
            normalize_group("OSLO_Messaging_Rabbit"),
            "oslo_messaging_rabbit"
        );
        assert_eq!(normalize_group("DEFAULT"), "DEFAULT");
        assert_eq!(normalize_group("default"), "default");
        assert_eq!(normalize_group("Default"), "default");
    }

    #[test]
    fn the_newest_file_wins_and_within_a_file_the_last_value() {
        let s = store(&[
            ("DEFAULT", "a", "1", 0),
            ("DEFAULT", "a", "2", 0),
            ("DEFAULT", "a", "3", 1),
            ("DEFAULT", "b", "x", 0),
            ("DEFAULT", "b", "y", 0),
        ]);
        assert_eq!(single(&s, "DEFAULT", &["a"]).as_deref(), Some("3"));
        assert_eq!(single(&s, "DEFAULT", &["b"]).as_deref(), Some("y"));
        assert_eq!(single(&s, "DEFAULT", &["c"]), None);
    }

    #[test]
    fn a_deprecated_name_counts_by_file_and_loses_within_one() {
        let names = ["executor_thread_pool_size", "rpc_thread_pool_size"];
        // Newer file, older name: it wins.
        let s = store(&[
            ("DEFAULT", "executor_thread_pool_size", "10", 0),
            ("DEFAULT", "rpc_thread_pool_size", "20", 1),
        ]);
        assert_eq!(single(&s, "DEFAULT", &names).as_deref(), Some("20"));
        // Same file: the option's own name wins, wherever it is written.
        let s = store(&[
            ("DEFAULT", "executor_thread_pool_size", "10", 1),
            ("DEFAULT", "rpc_thread_pool_size", "20", 1),
        ]);
        assert_eq!(single(&s, "DEFAULT", &names).as_deref(), Some("10"));
    }

    #[test]
    fn multi_valued_options_collect_every_file_oldest_first() {
        let s = store(&[
            ("n", "driver", "messagingv2", 0),
            ("n", "driver", "log", 0),
            ("n", "driver", "noop", 2),
        ]);
        let all: Vec<_> = s
            .multi("n", "driver")
            .into_iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(all, ["messagingv2", "log", "noop"]);
    }

    #[test]
    fn overrides_win_over_every_file_and_stand_for_a_whole_list() {
        let mut s = store(&[("DEFAULT", "a", "1", 3), ("n", "driver", "log", 0)]);
        s.set_override("DEFAULT", "a", "9".to_owned());
        s.set_override("N", "driver", "noop".to_owned());
        assert_eq!(single(&s, "DEFAULT", &["a"]).as_deref(), Some("9"));
        let drivers: Vec<_> = s
            .multi("n", "driver")
            .into_iter()
            .map(|s| s.value)
            .collect();
        assert_eq!(drivers, ["noop"]);
        assert_eq!(
            s.single("DEFAULT", &["a"]).unwrap().origin,
            Origin::Override
        );
    }

    #[test]
    fn home_is_expanded() {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(
                expand_home(Path::new("~/x.conf")),
                PathBuf::from(home).join("x.conf")
            );
        }
        assert_eq!(expand_home(Path::new("/a/~/b")), PathBuf::from("/a/~/b"));
        assert_eq!(expand_home(Path::new("~user/b")), PathBuf::from("~user/b"));
    }
}
