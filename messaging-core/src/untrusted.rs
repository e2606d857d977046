//! [`Untrusted`]: how text from the wire (a method name, a reply queue, a decoder's
//! error quoting the bytes it choked on) is shown in logs and errors.

use std::fmt;

/// Text from an untrusted source, shown safely: control characters and Unicode
/// direction overrides are escaped (so it cannot forge log lines or hide text), and
/// anything past `limit` characters is cut and replaced by its length (so a megabyte
/// of it cannot flood a log).
///
/// # Examples
///
/// ```
/// use messaging_core::Untrusted;
///
/// assert_eq!(Untrusted::new("get_state").to_string(), "get_state");
/// assert_eq!(Untrusted::new("a\nERROR forged").to_string(), "a\\nERROR forged");
/// let long = "x".repeat(1000);
/// assert_eq!(
///     Untrusted::with_limit(&long, 4).to_string(),
///     "xxxx…(1000 bytes)"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Untrusted<'a> {
    text: &'a str,
    limit: usize,
}

impl<'a> Untrusted<'a> {
    /// How many characters [`new`](Untrusted::new) shows.
    pub const DEFAULT_LIMIT: usize = 64;

    /// `text`, showing at most [`DEFAULT_LIMIT`](Untrusted::DEFAULT_LIMIT) characters.
    pub fn new(text: &'a str) -> Self {
        Untrusted::with_limit(text, Self::DEFAULT_LIMIT)
    }

    /// `text`, showing at most `limit` characters.
    pub fn with_limit(text: &'a str, limit: usize) -> Self {
        Untrusted { text, limit }
    }
}

/// Whether `c` must not reach a log as itself.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.text.chars().enumerate() {
            if shown == self.limit {
                return write!(f, "…({} bytes)", self.text.len());
            }
            if unsafe_char(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_or_hide_log_text() {
        let shown = Untrusted::new("a\x1b[2J\r\nb\u{202E}c").to_string();
        assert_eq!(shown, "a\\u{1b}[2J\\r\\nb\\u{202e}c");
        assert!(!shown.chars().any(unsafe_char));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(100);
        let shown = Untrusted::with_limit(&text, 3).to_string();
        assert_eq!(shown, "ééé…(200 bytes)");
        assert_eq!(Untrusted::with_limit("abc", 3).to_string(), "abc");
    }
}
