//! [`Pattern`]: shell-style wildcards with the semantics of Python's
//! `fnmatch.fnmatchcase` (what oslo's routing driver matches event types and
//! priorities with, on POSIX).

use std::fmt;

/// A shell-style wildcard pattern, matched against a whole string exactly as Python's
/// `fnmatch.fnmatchcase` (3.11) does:
///
/// * `*` matches any run of characters, empty included (dots too: `compute.*`
///   matches `compute.instance.create.end`);
/// * `?` matches any one character;
/// * `[seq]` matches one character of `seq`, `[!seq]` one not in it; `a-z` in a
///   sequence is a range (a reversed one, `z-a`, matches nothing), and a `]` or `-`
///   first in the sequence, or a `-` last, is itself;
/// * a `[` without a closing `]` is itself; there is no escape character (`[*]`
///   matches a `*`);
/// * everything else matches itself, case-sensitively.
///
/// Every string is a valid pattern.
///
/// # Examples
///
/// ```
/// use messaging_core::notify::Pattern;
///
/// let p = Pattern::new("compute.instance.*.end");
/// assert!(p.matches("compute.instance.create.end"));
/// assert!(!p.matches("compute.instance.create.start"));
/// assert!(Pattern::new("error?").matches("errors"));
/// assert!(Pattern::new("[!a-c]x").matches("dx"));
/// assert!(!Pattern::new("foo.*").matches("foo"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// Any run of characters (consecutive stars are one).
    Star,
    /// Any one character.
    Any,
    /// This character.
    Char(char),
    /// One character of (or, negated, not of) a set.
    Class { negated: bool, items: Vec<Item> },
    /// Nothing at all: an empty set, e.g. `[z-a]`.
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    One(char),
    Range(char, char),
}

impl Item {
    fn contains(&self, c: char) -> bool {
        match *self {
            Item::One(one) => one == c,
            Item::Range(low, high) => low <= c && c <= high,
        }
    }
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star => true,
            Token::Any => true,
            Token::Char(own) => *own == c,
            Token::Class { negated, items } => items.iter().any(|i| i.contains(c)) != *negated,
            Token::Never => false,
        }
    }
}

impl Pattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => match class(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => tokens.push(Token::Char('[')),
                },
                other => tokens.push(Token::Char(other)),
            }
        }
        Pattern {
            source: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches the whole of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let tokens = &self.tokens;
        // Greedy with backtracking to the last star: linear in most cases, at worst
        // the product of the two lengths.
        let (mut t, mut p) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(token) if token.matches(text[t]) => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|token| *token == Token::Star)
    }
}

/// The set that starts after the `[` at `start - 1`, and the index after its `]`;
/// `None` if it has no closing `]` (the `[` is then itself). Follows CPython 3.11's
/// `fnmatch.translate`, ranges and empty ranges included.
fn class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let n = chars.len();
    let mut j = start;
    if j < n && chars[j] == '!' {
        j += 1;
    }
    if j < n && chars[j] == ']' {
        j += 1;
    }
    while j < n && chars[j] != ']' {
        j += 1;
    }
    if j >= n {
        return None;
    }
    let stuff = &chars[start..j];
    // Split at the hyphens that make ranges: not the first character (after a `!`),
    // and never the character right after a range's hyphen.
    let mut chunks: Vec<Vec<char>> = Vec::new();
    if stuff.contains(&'-') {
        let mut from = start;
        let mut k = if chars[start] == '!' {
            start + 2
        } else {
            start + 1
        };
        while let Some(hyphen) = (k..j).find(|&at| chars[at] == '-') {
            chunks.push(chars[from..hyphen].to_vec());
            from = hyphen + 1;
            k = hyphen + 3;
        }
        let last = &chars[from..j];
        match chunks.last_mut() {
            Some(previous) if last.is_empty() => previous.push('-'),
            _ => chunks.push(last.to_vec()),
        }
        // A reversed range matches nothing: drop it, ends included.
        for k in (1..chunks.len()).rev() {
            let (low, high) = (chunks[k - 1].last().copied(), chunks[k].first().copied());
            if let (Some(low), Some(high)) = (low, high)
                && low > high
            {
                let tail: Vec<char> = chunks[k][1..].to_vec();
                chunks[k - 1].pop();
                chunks[k - 1].extend(tail);
                chunks.remove(k);
            }
        }
    } else {
        chunks.push(stuff.to_vec());
    }
    // The set is the chunks joined by range hyphens: the last character of one chunk
    // and the first of the next are a range's ends.
    let mut negated = false;
    let mut items = Vec::new();
    let mut first = true;
    for (index, chunk) in chunks.iter().enumerate() {
        let mut chars = &chunk[..];
        if index > 0 {
            // This chunk's first character closes the range the previous one opened.
            if let (Some(Item::One(low)), Some(&high)) = (items.pop(), chars.first()) {
                items.push(Item::Range(low, high));
            }
            chars = &chars[1..];
        }
        for &c in chars {
            if first && c == '!' {
                negated = true;
            } else {
                items.push(Item::One(c));
            }
            first = false;
        }
        first = false;
    }
    let token = match (negated, items.is_empty()) {
        // `[!]`-like after dropping ranges: any character.
        (true, true) => Token::Any,
        (false, true) => Token::Never,
        (negated, false) => Token::Class { negated, items },
    };
    Some((token, j + 1))
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl From<&str> for Pattern {
    fn from(pattern: &str) -> Self {
        Pattern::new(pattern)
    }
}

impl From<String> for Pattern {
    fn from(pattern: String) -> Self {
        Pattern::new(&pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern).matches(text)
    }

    /// Each row was checked against CPython 3.11's `fnmatch.fnmatchcase`.
    #[test]
    fn matches_as_python_fnmatchcase() {
        let rows: &[(&str, &str, bool)] = &[
            // literal, case-sensitive
            ("compute.instance.exists", "compute.instance.exists", true),
            ("compute.instance.exists", "compute.instance.exist", false),
            ("Info", "info", false),
            ("", "", true),
            ("", "a", false),
            // *
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("foo.*", "foo.1", true),
            ("foo.*", "foo.", true),
            ("foo.*", "foo", false),
            ("blah.zoo.*", "blah.zoo.zing", true),
            ("*.end", "compute.instance.create.end", true),
            ("*.end", "compute.end.start", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a**b", "ab", true),
            ("*a*a*a", "aaaa", true),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa", false),
            // ?
            ("?", "", false),
            ("?", "x", true),
            ("?", "xy", false),
            ("err?r", "error", true),
            ("é?", "éa", true),
            // [seq], [!seq], ranges
            ("[abc]", "b", true),
            ("[abc]", "d", false),
            ("[!abc]", "d", true),
            ("[!abc]", "a", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[!a-c]x", "dx", true),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[!]]", "a", true),
            ("[-a]", "-", true),
            ("[a-]", "-", true),
            ("[a-]", "b", false),
            ("[!-a]", "-", false),
            ("[!-a]", "b", true),
            ("[z-a]", "z", false),
            ("[z-a]", "a", false),
            ("[z-a]", "m", false),
            ("[!z-a]", "m", true),
            ("[b-ac-d]", "c", true),
            ("[b-ac-d]", "a", false),
            ("[b-ac-d]", "b", false),
            ("[a-c-e]", "-", true),
            ("[a-c-e]", "d", false),
            ("[a-c-e]", "e", true),
            ("[*]", "*", true),
            ("[*]", "a", false),
            ("[?]", "?", true),
            ("[\\]", "\\", true),
            ("[^a]", "^", true),
            ("[^a]", "b", false),
            ("[!]", "!", false),
            ("[!]", "[!]", true),
            // an unclosed [ is itself
            ("[abc", "[abc", true),
            ("[abc", "a", false),
            ("a[", "a[", true),
            ("[", "[", true),
            ("[!", "[!", true),
        ];
        for &(pattern, text, expected) in rows {
            assert_eq!(m(pattern, text), expected, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn keeps_its_source() {
        let p = Pattern::new("compute.*");
        assert_eq!(p.as_str(), "compute.*");
        assert_eq!(p.to_string(), "compute.*");
        assert_eq!(format!("{p:?}"), r#"Pattern("compute.*")"#);
        assert_eq!(Pattern::from("a"), Pattern::new("a"));
    }
}
