//! oslo.config's INI dialect, line for line as `oslo_config/iniparser.py` and
//! `cfg.ConfigParser` read it (oslo.config 10.7.0):
//!
//! * lines end at `\n`, `\r\n` or `\r` (Python's universal newlines); trailing
//!   whitespace is dropped; a line left empty is blank;
//! * `[name]` starts a section; the name is everything between the brackets, as written
//!   (`[ x ]` is the section ` x `); `[` without a closing `]`, and `[]`, are errors;
//! * `#` or `;` **at the start of a line** starts a comment; elsewhere they are part of
//!   the value (`key = a # b` is `a # b`);
//! * `key = value` or `key: value`, split at whichever of `=` and `:` comes first; key
//!   and value are stripped; one pair of matching quotes (`"…"` or `'…'`) around the
//!   whole value is removed; an empty value is allowed, an empty key is an error, and so
//!   is a line with neither `=` nor `:`;
//! * a line starting with a space or a tab continues the value before it (stripped, and
//!   joined with `\n`); a blank line, a comment or a section ends the value, so a
//!   continuation after one of them is an error ("unexpected continuation line");
//! * an assignment before any section is an error; a key may repeat (every value is
//!   kept, in order: the last one is a single-valued option's value, all of them a
//!   multi-valued option's).
//!
//! The one addition: a file starting with a UTF-8 byte order mark is refused with a
//! clear error (oslo.config reads the mark as text and refuses the first line with a
//! puzzling one). Errors carry the line number and never quote the line: it could hold a
//! password.

/// One `key = value`, with the section it is in and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// The section: its index in [`Parsed::sections`].
    pub(crate) section: usize,
    pub(crate) key: String,
    /// The value: stripped, unquoted, continuation lines joined with `\n`.
    pub(crate) value: String,
    /// 1-based.
    pub(crate) line: usize,
}

/// A parsed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Every section header, as written, with its line.
    pub(crate) sections: Vec<(String, usize)>,
    /// Every assignment, in file order.
    pub(crate) assignments: Vec<Assignment>,
}

/// A line the dialect refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// 1-based.
    pub(crate) line: usize,
    pub(crate) reason: &'static str,
}

/// Python's `str.isspace`: Unicode white space plus the four separators `\x1c`..`\x1f`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The lines of `text`, split at `\r\n`, `\r` or `\n` (the line ends not included).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(end) => {
                let after = if current[end..].starts_with("\r\n") {
                    end + 2
                } else {
                    end + 1
                };
                rest = Some(&current[after..]).filter(|r| !r.is_empty());
                Some(&current[..end])
            }
            None => {
                rest = None;
                (!current.is_empty()).then_some(current)
            }
        }
    })
}

/// The value being read: its key, its lines so far, where it started.
struct Pending<'a> {
    key: &'a str,
    lines: Vec<&'a str>,
    line: usize,
}

/// Parses one file's text.
pub(crate) fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    if text.starts_with('\u{feff}') {
        return Err(SyntaxError {
            line: 1,
            reason: "the file starts with a byte order mark, which oslo.config refuses: \
                     save it as UTF-8 without one",
        });
    }
    let mut parsed = Parsed::default();
    let mut section: Option<usize> = None;
    let mut pending: Option<Pending<'_>> = None;
    let flush = |pending: &mut Option<Pending<'_>>,
                 section: Option<usize>,
                 parsed: &mut Parsed|
     -> Result<(), SyntaxError> {
        let Some(done) = pending.take() else {
            return Ok(());
        };
        let Some(section) = section else {
            return Err(SyntaxError {
                line: done.line,
                reason: "an assignment before any section: start with a section, e.g. [DEFAULT]",
            });
        };
        parsed.assignments.push(Assignment {
            section,
            key: done.key.to_owned(),
            value: done.lines.join("\n"),
            line: done.line,
        });
        Ok(())
    };
    for (index, raw) in lines(text).enumerate() {
        let number = index + 1;
        let line = raw.trim_end_matches(is_py_space);
        if line.is_empty() {
            // A blank line ends a multi-line value.
            flush(&mut pending, section, &mut parsed)?;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match pending.as_mut() {
                Some(value) => value.lines.push(line.trim_start_matches(is_py_space)),
                None => {
                    return Err(SyntaxError {
                        line: number,
                        reason: "unexpected continuation line (an indented line continues \
                                 the value of the assignment right above it)",
                    });
                }
            }
            continue;
        }
        flush(&mut pending, section, &mut parsed)?;
        if let Some(header) = line.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(SyntaxError {
                    line: number,
                    reason: "invalid section (must end with `]`)",
                });
            };
            if name.is_empty() {
                return Err(SyntaxError {
                    line: number,
                    reason: "empty section name",
                });
            }
            section = Some(parsed.sections.len());
            parsed.sections.push((name.to_owned(), number));
        } else if line.starts_with(['#', ';']) {
            // A comment.
        } else {
            let (key, value) = split_key_value(line).ok_or(SyntaxError {
                line: number,
                reason: "no `=` or `:` in an assignment",
            })?;
            if key.is_empty() {
                return Err(SyntaxError {
                    line: number,
                    reason: "key cannot be empty",
                });
            }
            pending = Some(Pending {
                key,
                lines: vec![value],
                line: number,
            });
        }
    }
    flush(&mut pending, section, &mut parsed)?;
    Ok(parsed)
}

/// `key = value` or `key: value`, at whichever separator comes first; both stripped,
/// and one pair of matching quotes around the value removed.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim_matches(is_py_space);
    let value = line[at + 1..].trim_matches(is_py_space);
    let quoted = (value.starts_with('"') && value.ends_with('"'))
        || (value.starts_with('\'') && value.ends_with('\''));
    let value = match value.len() {
        // A lone quote is its own first and last character: oslo leaves nothing.
        1 if quoted => "",
        _ if quoted => &value[1..value.len() - 1],
        _ => value,
    };
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The assignments of `text` as `(section, key, value, line)`.
    fn assignments(text: &str) -> Vec<(String, String, String, usize)> {
        let parsed = parse(text).unwrap();
        parsed
            .assignments
            .into_iter()
            .map(|a| (parsed.sections[a.section].0.clone(), a.key, a.value, a.line))
            .collect()
    }

    fn one(text: &str) -> (String, String) {
        let all = assignments(text);
        assert_eq!(all.len(), 1, "{all:?}");
        (all[0].1.clone(), all[0].2.clone())
    }

    fn error(text: &str) -> SyntaxError {
        parse(text).unwrap_err()
    }

    fn owned(
        section: &str,
        key: &str,
        value: &str,
        line: usize,
    ) -> (String, String, String, usize) {
        (section.to_owned(), key.to_owned(), value.to_owned(), line)
    }

    #[test]
    fn equals_and_colon_both_assign_at_whichever_comes_first() {
        assert_eq!(one("[s]\na = 1\n"), ("a".into(), "1".into()));
        assert_eq!(one("[s]\na: 1\n"), ("a".into(), "1".into()));
        assert_eq!(
            one("[s]\nurl = rabbit://u:p@h:5672/\n"),
            ("url".into(), "rabbit://u:p@h:5672/".into())
        );
        assert_eq!(
            one("[s]\nurl: rabbit://u:p@h:5672/?a=b\n"),
            ("url".into(), "rabbit://u:p@h:5672/?a=b".into())
        );
        assert_eq!(one("[s]\na=b=c\n"), ("a".into(), "b=c".into()));
    }

    #[test]
    fn keys_and_values_are_stripped_and_one_pair_of_quotes_removed() {
        assert_eq!(one("[s]\nkey\t =  spaced value \t\n").1, "spaced value");
        assert_eq!(one("[s]\nkey = \"quoted\"\n").1, "quoted");
        assert_eq!(one("[s]\nkey = ' both '\n").1, " both ");
        assert_eq!(one("[s]\nkey = \"\"x\"\"\n").1, "\"x\"");
        assert_eq!(one("[s]\nkey = \"mixed'\n").1, "\"mixed'");
        assert_eq!(one("[s]\nkey = \"\n").1, "");
        assert_eq!(one("[s]\nkey = a\"b\"\n").1, "a\"b\"");
    }

    #[test]
    fn empty_values_are_values() {
        assert_eq!(one("[s]\nkey =\n"), ("key".into(), String::new()));
        assert_eq!(one("[s]\nkey:\n"), ("key".into(), String::new()));
        assert_eq!(one("[s]\nkey = \"\"\n"), ("key".into(), String::new()));
    }

    #[test]
    fn comments_start_a_line_with_hash_or_semicolon_and_nowhere_else() {
        assert_eq!(
            assignments("# top\n[s]\n; semi = 1\n#hash = 2\na = x # not a comment ; nor this\n"),
            [owned("s", "a", "x # not a comment ; nor this", 5)]
        );
    }

    #[test]
    fn continuation_lines_join_with_newlines_until_a_blank_line() {
        assert_eq!(
            assignments("[s]\na = first\n  second\n\tthird  \n\nb = 2\n"),
            [
                owned("s", "a", "first\nsecond\nthird", 2),
                owned("s", "b", "2", 6)
            ]
        );
        // A quoted first line loses its quotes; the continuation keeps its own.
        assert_eq!(one("[s]\na = \"x\"\n  \"y\"\n").1, "x\n\"y\"");
        // An indented comment continues the value, as in oslo.
        assert_eq!(one("[s]\na = x\n  # y\n").1, "x\n# y");
        // An empty first line, then the value below.
        assert_eq!(one("[s]\na =\n  one\n  two\n").1, "\none\ntwo");
    }

    #[test]
    fn a_continuation_after_a_blank_line_comment_or_section_is_an_error() {
        for (text, line) in [
            ("  a = 1\n", 1),
            ("[s]\na = 1\n\n  b\n", 4),
            ("[s]\na = 1\n# c\n  b\n", 4),
            ("[s]\n  a = 1\n", 2),
        ] {
            let e = error(text);
            assert_eq!(e.line, line, "{text:?}");
            assert!(
                e.reason.starts_with("unexpected continuation line"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn section_names_are_taken_as_written() {
        let parsed =
            parse("[DEFAULT]\na = 1\n[ spaced ]\n[OSLO_Messaging_Rabbit]\nb = 2\n[a]b]\n").unwrap();
        assert_eq!(
            parsed.sections,
            [
                ("DEFAULT".to_owned(), 1),
                (" spaced ".to_owned(), 3),
                ("OSLO_Messaging_Rabbit".to_owned(), 4),
                ("a]b".to_owned(), 6)
            ]
        );
        assert_eq!(
            parsed.sections[parsed.assignments[1].section].0,
            "OSLO_Messaging_Rabbit"
        );
    }

    #[test]
    fn bad_sections_are_errors() {
        assert_eq!(
            error("[DEFAULT\n"),
            SyntaxError {
                line: 1,
                reason: "invalid section (must end with `]`)"
            }
        );
        assert_eq!(error("[s]\n[]\n").reason, "empty section name");
        assert_eq!(error("[s]\n[]\n").line, 2);
    }

    #[test]
    fn assignments_need_a_section_a_separator_and_a_key() {
        let e = error("a = 1\n[s]\n");
        assert_eq!(e.line, 1);
        assert!(e.reason.starts_with("an assignment before any section"));
        assert_eq!(
            error("[s]\n\njust words\n"),
            SyntaxError {
                line: 3,
                reason: "no `=` or `:` in an assignment"
            }
        );
        assert_eq!(error("[s]\n= value\n").reason, "key cannot be empty");
        assert_eq!(
            error("[s]\n\t= value\n").reason.split(" (").next(),
            Some("unexpected continuation line")
        );
        assert_eq!(error("[s]\n: value\n").line, 2);
    }

    #[test]
    fn repeated_keys_keep_every_value_in_order() {
        assert_eq!(
            assignments("[s]\ndriver = messagingv2\ndriver = log\n[t]\ndriver = x\n"),
            [
                owned("s", "driver", "messagingv2", 2),
                owned("s", "driver", "log", 3),
                owned("t", "driver", "x", 5)
            ]
        );
    }

    #[test]
    fn every_line_ending_counts_and_trailing_whitespace_goes() {
        assert_eq!(
            assignments("[s]\r\na = 1\rb = 2\nc = 3 \u{c}\u{1f}"),
            [
                owned("s", "a", "1", 2),
                owned("s", "b", "2", 3),
                owned("s", "c", "3", 4)
            ]
        );
        // A line of spaces is blank: it ends the value above.
        assert!(
            error("[s]\na = 1\n   \n  b\n")
                .reason
                .starts_with("unexpected")
        );
    }

    #[test]
    fn a_byte_order_mark_is_refused_with_a_clear_error() {
        let e = error("\u{feff}[DEFAULT]\n");
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("byte order mark"), "{e:?}");
    }

    #[test]
    fn keys_are_case_sensitive_and_kept_as_written() {
        assert_eq!(
            assignments("[s]\nKey = 1\nkey = 2\n"),
            [owned("s", "Key", "1", 2), owned("s", "key", "2", 3)]
        );
    }
}
