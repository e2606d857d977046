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
//!
//! Bounds oslo does not have: references are followed at most [`MAX_DEPTH`] deep, at
//! most [`MAX_REFERENCES`] of them for one value, and one value expands to at most
//! [`MAX_EXPANDED`] bytes (or its own length, if longer), so that `a = $b$b`,
//! `b = $c$c`, ... cannot take exponential time or memory.
//!
//! A value that takes in the value of a secret key (`control_exchange =
//! $admin_password`) is secret in turn ([`Substituted::secret`]), and an error inside
//! a secret value reached by reference does not name what it found there.

use crate::values::is_secret;

/// A value could not be substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SubstituteError {
    /// `$name` names an option that is set nowhere (the name, as written).
    NotSet(String),
    /// References nested too deep: most likely a loop (`a = $b`, `b = $a`).
    TooDeep(String),
    /// More than [`MAX_REFERENCES`] references, or more than [`MAX_EXPANDED`] bytes,
    /// for one value.
    TooLarge(&'static str),
    /// Something wrong inside a secret value a reference led to: not said what, which
    /// would quote part of it.
    InSecret,
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
            (SubstituteError::TooLarge(what), _) => {
                format!("{what} (references that multiply? write `$$` for a literal `$`)")
            }
            (SubstituteError::InSecret, false) => "a `$` reference leads to a hidden value \
                                                    (it may hold a password) in which a `$` \
                                                    names an option set in no config file, \
                                                    or starts a loop: write `$$` there for a \
                                                    literal `$`"
                .to_owned(),
            (_, true) => "a `$` in this value (hidden: it may hold a password) names \
                          an option set in no config file, or starts a loop: write `$$` \
                          for a literal `$`"
                .to_owned(),
        }
    }
}

/// A substituted value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Substituted {
    pub(crate) text: String,
    /// Whether a reference took in the value of a secret key.
    pub(crate) secret: bool,
}

/// The deepest chain of references followed.
pub(crate) const MAX_DEPTH: usize = 16;

/// The most references followed for one value, nested ones included.
pub(crate) const MAX_REFERENCES: usize = 10_000;

/// The most bytes one value expands to (unless it is longer itself).
pub(crate) const MAX_EXPANDED: usize = 1 << 20;

/// What is left of one value's allowance as it is substituted.
struct Budget {
    references: usize,
    max_len: usize,
    secret: bool,
}

/// `value` of an option in `group`, substituted. `lookup(group, name)` returns the
/// value set for option `name` of `group` (not yet substituted), if any.
pub(crate) fn substitute(
    value: &str,
    group: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<Substituted, SubstituteError> {
    let mut budget = Budget {
        references: MAX_REFERENCES,
        max_len: MAX_EXPANDED.max(value.len()),
        secret: false,
    };
    let text = substitute_at(value, group, lookup, 0, &mut budget)?;
    Ok(Substituted {
        text,
        secret: budget.secret,
    })
}

fn substitute_at(
    value: &str,
    group: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
    depth: usize,
    budget: &mut Budget,
) -> Result<String, SubstituteError> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let value = value.replace("\\$", "$$");
    let mut out = String::with_capacity(value.len().min(budget.max_len));
    let mut rest = value.as_str();
    let max_len = budget.max_len;
    let push = |out: &mut String, text: &str| {
        if out.len() + text.len() > max_len {
            return Err(SubstituteError::TooLarge(
                "the value expands to more than 1 MiB through `$` references",
            ));
        }
        out.push_str(text);
        Ok(())
    };
    while let Some(at) = rest.find('$') {
        push(&mut out, &rest[..at])?;
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            push(&mut out, "$")?;
            rest = tail;
        } else if let Some(name) = identifier(after) {
            push(&mut out, &resolve(name, group, lookup, depth, budget)?)?;
            rest = &after[name.len()..];
        } else if let Some(name) = after
            .strip_prefix('{')
            .and_then(|braced| identifier(braced).filter(|n| braced[n.len()..].starts_with('}')))
        {
            push(&mut out, &resolve(name, group, lookup, depth, budget)?)?;
            rest = &after[name.len() + 2..];
        } else {
            // Not a placeholder: `safe_substitute` keeps the `$`.
            push(&mut out, "$")?;
            rest = after;
        }
    }
    push(&mut out, rest)?;
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
    budget: &mut Budget,
) -> Result<String, SubstituteError> {
    if depth >= MAX_DEPTH {
        return Err(SubstituteError::TooDeep(name.to_owned()));
    }
    if budget.references == 0 {
        return Err(SubstituteError::TooLarge(
            "too many `$` references (more than 10000 to expand this value)",
        ));
    }
    budget.references -= 1;
    let (owner, option) = match name.split_once('.') {
        Some((owner, option)) => (owner, option),
        None => (group, name),
    };
    let found = lookup(owner, option)
        .map(|value| (owner, option, value))
        .or_else(|| lookup("DEFAULT", name).map(|value| ("DEFAULT", name, value)));
    let Some((owner, key, value)) = found else {
        return Err(SubstituteError::NotSet(name.to_owned()));
    };
    if !is_secret(key) {
        return substitute_at(&value, owner, lookup, depth + 1, budget);
    }
    budget.secret = true;
    substitute_at(&value, owner, lookup, depth + 1, budget).map_err(|e| match e {
        SubstituteError::TooLarge(what) => SubstituteError::TooLarge(what),
        _ => SubstituteError::InSecret,
    })
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
        substitute(value, "g", &with(values)).map(|s| s.text)
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

    #[test]
    fn references_are_bounded_in_number_and_expansion() {
        // 4^8 = 65536 references to an empty value: stopped at MAX_REFERENCES.
        let fanout = &[
            ("g", "a0", "$a1$a1$a1$a1"),
            ("g", "a1", "$a2$a2$a2$a2"),
            ("g", "a2", "$a3$a3$a3$a3"),
            ("g", "a3", "$a4$a4$a4$a4"),
            ("g", "a4", "$a5$a5$a5$a5"),
            ("g", "a5", "$a6$a6$a6$a6"),
            ("g", "a6", "$a7$a7$a7$a7"),
            ("g", "a7", "$a8$a8$a8$a8"),
            ("g", "a8", ""),
        ];
        assert!(matches!(
            sub("$a0", fanout),
            Err(SubstituteError::TooLarge(_))
        ));
        // 4^6 = 4096 references: allowed.
        assert_eq!(sub("$a2", fanout).unwrap(), "");
        // Growth past MAX_EXPANDED, from a short value.
        let big: &'static str = Box::leak("x".repeat(300_000).into_boxed_str());
        let values: &'static [(&str, &str, &str)] =
            Box::leak(vec![("g", "b", big), ("g", "c", "$b$b$b$b")].into_boxed_slice());
        assert!(matches!(
            sub("$c", values),
            Err(SubstituteError::TooLarge(_))
        ));
        assert_eq!(sub("$b$b$b", values).unwrap().len(), 900_000);
        // A value longer than MAX_EXPANDED by itself is no error.
        let long = "y".repeat(MAX_EXPANDED + 10);
        assert_eq!(
            sub(&format!("{long}$$"), &[]).unwrap().len(),
            MAX_EXPANDED + 11
        );
    }

    #[test]
    fn taking_in_a_secret_makes_the_value_secret_and_hides_errors_inside_it() {
        let values = &[
            ("g", "admin_password", "pa$$word"),
            ("g", "host", "h"),
            ("g", "db_password", "pa$zz9q"),
        ];
        let lookup = with(values);
        let plain = substitute("$host", "g", &lookup).unwrap();
        assert_eq!((plain.text.as_str(), plain.secret), ("h", false));
        let secret = substitute("x-$admin_password", "g", &lookup).unwrap();
        assert_eq!((secret.text.as_str(), secret.secret), ("x-pa$word", true));
        // `$zz9q` is part of the password: not named.
        let error = substitute("$db_password", "g", &lookup).unwrap_err();
        assert_eq!(error, SubstituteError::InSecret);
        assert!(
            !error.reason(false).contains("zz9q"),
            "{}",
            error.reason(false)
        );
    }
}
