//! oslo's simulator spells two flags with two letters after one dash, `-tg` and `-tp`
//! (argparse allows that; clap's short flags are one character). The binary rewrites
//! them to their long names before clap parses the command line.

use std::ffi::OsString;

/// oslo's two-letter short flags and their long names here.
const TWO_LETTER: [(&str, &str); 2] = [("-tg", "--targets"), ("-tp", "--topic")];

/// `args` (a whole command line, program name first) with oslo simulator's two-letter
/// short flags rewritten for clap: after the `simulate` subcommand and up to a `--`,
/// every word `-tg` becomes `--targets` and `-tp` becomes `--topic`, and `-tg=V` /
/// `-tp=V` become `--targets=V` / `--topic=V`. Everything else is returned as it was,
/// in the same order (words that are not UTF-8 included).
///
/// # Examples
///
/// ```
/// use messaging_cli::oslo_short_flags;
///
/// let args = oslo_short_flags(
///     ["messaging", "simulate", "-tp", "t", "rpc-client", "-tg=t.s", "-p", "2"],
/// );
/// assert_eq!(
///     args,
///     ["messaging", "simulate", "--topic", "t", "rpc-client", "--targets=t.s", "-p", "2"]
/// );
/// // Only under `simulate`.
/// assert_eq!(oslo_short_flags(["messaging", "-tp"]), ["messaging", "-tp"]);
/// ```
pub fn oslo_short_flags<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let Some(simulate) = args.iter().skip(1).position(|a| a == "simulate") else {
        return args;
    };
    for arg in args.iter_mut().skip(simulate + 2) {
        let Some(word) = arg.to_str() else {
            continue;
        };
        if word == "--" {
            break;
        }
        for (short, long) in TWO_LETTER {
            let rewritten = if word == short {
                Some(long.to_owned())
            } else {
                word.strip_prefix(short)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(|value| format!("{long}={value}"))
            };
            if let Some(rewritten) = rewritten {
                *arg = rewritten.into();
                break;
            }
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        oslo_short_flags(args.iter().copied())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn rewrites_only_oslos_two_letter_flags_after_simulate() {
        assert_eq!(
            rewrite(&[
                "m",
                "-v",
                "simulate",
                "-tg",
                "a.b",
                "c.d",
                "-tp=x",
                "rpc-client"
            ]),
            [
                "m",
                "-v",
                "simulate",
                "--targets",
                "a.b",
                "c.d",
                "--topic=x",
                "rpc-client"
            ]
        );
        // Not before `simulate`, not after `--`, not look-alikes.
        assert_eq!(
            rewrite(&["m", "-tp", "simulate", "-tgx", "--tp", "-t", "--", "-tp"]),
            ["m", "-tp", "simulate", "-tgx", "--tp", "-t", "--", "-tp"]
        );
        // The program name is never taken for the subcommand.
        assert_eq!(rewrite(&["simulate", "-tp"]), ["simulate", "-tp"]);
        assert_eq!(rewrite(&[]), Vec::<String>::new());
    }

    #[cfg(unix)]
    #[test]
    fn words_that_are_not_utf8_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![0xff, b'-']);
        let out = oslo_short_flags([
            OsString::from("m"),
            "simulate".into(),
            odd.clone(),
            "-tp".into(),
        ]);
        assert_eq!(
            out,
            [
                OsString::from("m"),
                "simulate".into(),
                odd,
                "--topic".into()
            ]
        );
    }
}
