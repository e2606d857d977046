//! oslo.config's value types (`oslo_config/types.py`) for the options read here, and
//! which keys are secret.

/// oslo's `Boolean`: `true`/`1`/`on`/`yes` and `false`/`0`/`off`/`no`, any case.
/// Anything else, the empty value included, is an error.
pub(crate) fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" => Ok(false),
        _ => Err("must be true or false (or yes/no, on/off, 1/0, in any case)".to_owned()),
    }
}

/// oslo's `Integer`: Python's `int()` of the stripped text (a sign, digits, `_` between
/// digits); an empty value is no value (`None`), as in oslo.
pub(crate) fn integer(text: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let well_formed = !digits.is_empty()
        && digits
            .split('_')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err("must be a whole number".to_owned());
    }
    text.replace('_', "")
        .parse::<i64>()
        .map(Some)
        .map_err(|_| "is too large a number".to_owned())
}

/// oslo's `List` of strings: stripped, a trailing `,` dropped, split at `,`, each item
/// stripped; the empty value is the empty list.
pub(crate) fn list(text: &str) -> Vec<String> {
    let text = text.trim().trim_end_matches(',');
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',').map(|item| item.trim().to_owned()).collect()
}

/// Whether a key's value is secret: never logged, shown or quoted in an error. oslo
/// marks `transport_url` secret; so is any key naming a password, secret, token or
/// credential.
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "transport_url"
        || ["password", "passwd", "secret", "token", "credential"]
            .iter()
            .any(|word| key.contains(word))
}

/// How many characters of a value an error quotes.
const QUOTED: usize = 100;

/// `reason`, followed by the value quoted (escaped, and cut after [`QUOTED`]
/// characters, its length said) unless it is secret.
pub(crate) fn got(secret: bool, reason: &str, value: &str) -> String {
    if secret {
        return format!("{reason} (value hidden)");
    }
    match value.char_indices().nth(QUOTED) {
        None => format!("{reason}, got `{}`", value.escape_debug()),
        Some((cut, _)) => format!(
            "{reason}, got `{}`…({} bytes)",
            value[..cut].escape_debug(),
            value.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_oslos_spellings_in_any_case() {
        for yes in ["true", "True", "TRUE", "1", "on", "On", "yes", "YES"] {
            assert_eq!(boolean(yes), Ok(true), "{yes}");
        }
        for no in ["false", "False", "0", "off", "OFF", "no", "No"] {
            assert_eq!(boolean(no), Ok(false), "{no}");
        }
        for bad in ["", "y", "n", "2", "enabled", "t", " true"] {
            assert!(boolean(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_follow_pythons_int() {
        assert_eq!(integer("60"), Ok(Some(60)));
        assert_eq!(integer(" -1 "), Ok(Some(-1)));
        assert_eq!(integer("+7"), Ok(Some(7)));
        assert_eq!(integer("007"), Ok(Some(7)));
        assert_eq!(integer("1_000"), Ok(Some(1000)));
        assert_eq!(integer(""), Ok(None));
        assert_eq!(integer("   "), Ok(None));
        for bad in ["1.5", "ten", "1__0", "_1", "1_", "--1", "0x10", "1e3", "+"] {
            assert!(integer(bad).is_err(), "{bad}");
        }
        assert!(
            integer("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn lists_split_at_commas_and_strip_items() {
        assert_eq!(
            list(" notifications, versioned_notifications ,"),
            ["notifications", "versioned_notifications"]
        );
        assert_eq!(list("a,,b"), ["a", "", "b"]);
        assert_eq!(list("one"), ["one"]);
        assert!(list("").is_empty());
        assert_eq!(list(" , "), Vec::<String>::new());
    }

    #[test]
    fn secret_keys_are_recognised_and_never_quoted() {
        for key in [
            "transport_url",
            "password",
            "admin_password",
            "rabbit_PASSWORD",
            "passwd",
            "secret_key",
            "auth_token",
            "credentials_file",
        ] {
            assert!(is_secret(key), "{key}");
            assert!(!got(is_secret(key), "bad", "hunter2").contains("hunter2"));
        }
        for key in ["heartbeat_rate", "ssl_key_file", "topics", "driver"] {
            assert!(!is_secret(key), "{key}");
        }
        assert_eq!(got(false, "bad", "x\n"), "bad, got `x\\n`");
        let long = "é".repeat(1000);
        assert_eq!(
            got(false, "bad", &long),
            format!("bad, got `{}`…(2000 bytes)", "é".repeat(QUOTED))
        );
    }
}
