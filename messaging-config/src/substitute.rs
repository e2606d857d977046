//! oslo.config's `$` substitution (`ConfigOpts._substitute`, a `string.Template` with
//! `safe_substitute`), applied to every value read through this crate:
//!
//! * `$$` and `\$` are a literal `$` (so a password with a `$` is written `$$` in an
//!   oslo config file, and means the same here);
//! * `$name` and `${name}` (a name is a letter or `_`, then letters, digits, `_` and
//!   `.`) are the value of option `name` of the same section, else of `[DEFAULT]`;
//!   `${section.name}` is the option of that section; the value found is substituted
//!   in turn;
//! * any other `$` is kept as it is.
//!
//! oslo resolves a name against every option the service registered, with their
//! defaults. A file reader knows only what the files (and overrides) set, plus the
//! defaults of the options read here; naming anything else is an error, since the
//! value oslo would use is unknown.

/// A value could not be substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SubstituteError {
    /// `$name` names an option that is set nowhere (the name, as written).
    NotSet(String),
    /// References nested too deep: most likely a loop (`a = $b`, `b = $a`).
    TooDeep(String),
}

impl SubstituteError {
    /// The reason, naming the reference unless the value is secret (a `$` inside a
    /// password would otherwise show the rest of it).
    pub(crate) fn reason(&self, secret: bool) -> String {
        match (self, secret) {
            (SubstituteError::NotSet(name), false) => format!(
                "`${name}` names an option set in no config file (oslo.config would use \
                 the service's default for it, which is not known here): set it, or \
                 write `$$` for a literal `$`"
            ),
            (SubstituteError::TooDeep(name), false) => {
                format!("`${name}`: `$` references nested too deep (a loop?)")
            }
            (_, true) => "a `$` in this value (hidden: it may hold a password) names \
                          an option set in no config file, or starts a loop: write `$$` \
                          for a literal `$`"
                .to_owned(),
        }
    }
}

/// The deepest chain of references followed.
const MAX_DEPTH: usize = 16;

/// `value` of an option in `group`, substituted. `lookup(group, name)` returns the
/// value set for option `name` of `group` (not yet substituted), if any.
pub(crate) fn substitute(
    value: &str,
    group: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<String, SubstituteError> {
    substitute_at(value, group, lookup, 0)
}

fn substitute_at(
    value: &str,
    group: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
    depth: usize,
) -> Result<String, SubstituteError> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let value = value.replace("\\$", "$$");
    let mut out = String::with_capacity(value.len());
    let mut rest = value.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(name) = identifier(after) {
            out.push_str(&resolve(name, group, lookup, depth)?);
            rest = &after[name.len()..];
        } else if let Some(name) = after
            .strip_prefix('{')
            .and_then(|braced| identifier(braced).filter(|n| braced[n.len()..].starts_with('}')))
        {
            out.push_str(&resolve(name, group, lookup, depth)?);
            rest = &after[name.len() + 2..];
        } else {
            // Not a placeholder: `safe_substitute` keeps the `$`.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The longest name at the start of `text`: `[_A-Za-z][._A-Za-z0-9]*`.
fn identifier(text: &str) -> Option<&str> {
    let first = text.chars().next()?;
    if !(first == '_' || first.is_ascii_alphabetic()) {
        return None;
    }
    let end = text
        .find(|c: char| !(c == '_' || c == '.' || c.is_ascii_alphanumeric()))
        .unwrap_or(text.len());
    Some(&text[..end])
}

/// The value `name` refers to from `group`, substituted in its own section.
fn resolve(
    name: &str,
    group: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
    depth: usize,
) -> Result<String, SubstituteError> {
    if depth >= MAX_DEPTH {
        return Err(SubstituteError::TooDeep(name.to_owned()));
    }
    let (owner, option) = match name.split_once('.') {
        Some((owner, option)) => (owner, option),
        None => (group, name),
    };
    let found = lookup(owner, option)
        .map(|value| (owner, value))
        .or_else(|| lookup("DEFAULT", name).map(|value| ("DEFAULT", value)));
    match found {
        Some((owner, value)) => substitute_at(&value, owner, lookup, depth + 1),
        None => Err(SubstituteError::NotSet(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(
        values: &'static [(&'static str, &'static str, &'static str)],
    ) -> impl Fn(&str, &str) -> Option<String> {
        move |group: &str, name: &str| {
            values
                .iter()
                .find(|(g, n, _)| *g == group && *n == name)
                .map(|(_, _, v)| (*v).to_owned())
        }
    }

    fn sub(
        value: &str,
        values: &'static [(&'static str, &'static str, &'static str)],
    ) -> Result<String, SubstituteError> {
        substitute(value, "g", &with(values))
    }

    #[test]
    fn dollars_are_escaped_by_doubling_or_a_backslash() {
        assert_eq!(sub("pa$$word", &[]).unwrap(), "pa$word");
        assert_eq!(sub("pa\\$word", &[]).unwrap(), "pa$word");
        assert_eq!(sub("$$$$", &[]).unwrap(), "$$");
        assert_eq!(sub("no dollar", &[]).unwrap(), "no dollar");
    }

    #[test]
    fn names_resolve_in_the_section_then_default() {
        let values = &[
            ("g", "host", "h1"),
            ("DEFAULT", "host", "default-host"),
            ("DEFAULT", "state_path", "/var/lib/nova"),
            ("other", "x", "X"),
        ];
        assert_eq!(sub("$host:5672", values).unwrap(), "h1:5672");
        assert_eq!(
            sub("${state_path}/lock", values).unwrap(),
            "/var/lib/nova/lock"
        );
        assert_eq!(sub("${other.x}y", values).unwrap(), "Xy");
        assert_eq!(sub("$other.x", values).unwrap(), "X");
    }

    #[test]
    fn resolved_values_are_substituted_in_their_own_section() {
        let values = &[
            ("g", "a", "${other.b}!"),
            ("other", "b", "$c"),
            ("other", "c", "C"),
        ];
        assert_eq!(sub("$a", values).unwrap(), "C!");
    }

    #[test]
    fn anything_else_after_a_dollar_is_kept() {
        assert_eq!(
            sub("cost: $5, ${ x}, ${x, $-", &[]).unwrap(),
            "cost: $5, ${ x}, ${x, $-"
        );
        assert_eq!(sub("end$", &[]).unwrap(), "end$");
    }

    #[test]
    fn unknown_names_and_loops_are_errors() {
        assert_eq!(
            sub("a$nope", &[]),
            Err(SubstituteError::NotSet("nope".into()))
        );
        let looping = &[("g", "a", "$b"), ("g", "b", "$a")];
        assert!(matches!(
            sub("$a", looping),
            Err(SubstituteError::TooDeep(_))
        ));
        let secret = SubstituteError::NotSet("xyzzy".into()).reason(true);
        assert!(!secret.contains("xyzzy"), "{secret}");
        assert!(
            SubstituteError::NotSet("xyzzy".into())
                .reason(false)
                .contains("`$xyzzy`")
        );
    }
}
