//! [`TransportUrl`]: oslo.messaging's transport URL grammar, with credentials that never leak.
//!
//! ```text
//! driver://[user:pass@]host:port[,[userN:passN@]hostN:portN]/virtual_host?key=value&...
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::InvalidTransportUrl;

const REDACTED: &str = "***";

// ===== Secret =====

/// A password. Its `Debug` shows `***`; it has no `Display`; [`expose`](Secret::expose)
/// is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for handing to a broker client. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

// ===== TransportHost =====

/// One broker host of a [`TransportUrl`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TransportHost {
    /// Host name or IP address (IPv6 without brackets); `None` when empty.
    pub hostname: Option<String>,
    /// Port, if given.
    pub port: Option<u16>,
    /// User name, if given (percent-decoded).
    pub username: Option<String>,
    /// Password, if given (percent-decoded).
    pub password: Option<Secret>,
}

impl TransportHost {
    fn write(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        if let Some(user) = &self.username {
            f.write_str(&quote(user))?;
            if let Some(password) = &self.password {
                f.write_str(":")?;
                f.write_str(&if redact {
                    REDACTED.to_owned()
                } else {
                    quote(password.expose())
                })?;
            }
            f.write_str("@")?;
        }
        if let Some(host) = &self.hostname {
            if host.contains(':') {
                write!(f, "[{host}]")?;
            } else {
                f.write_str(host)?;
            }
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

// ===== TransportUrl =====

/// A parsed transport URL, following oslo.messaging's `TransportURL.parse`.
///
/// * the scheme names the transport (`memory`, `rabbit`, `nats`, ...); the part before a
///   `+` selects the driver (`kombu+memory` → `kombu`);
/// * several comma-separated hosts, each with optional credentials (the user name may
///   contain one `@`; user and password are split on the first `:`; both are
///   percent-decoded), `[v6]:port` addresses included;
/// * the path minus its leading `/`, percent-decoded, is the virtual host (`foo:` has
///   none, `foo:///bar` has `bar`, `foo:////` has `/`);
/// * query options, with repeated keys joined by `,`.
///
/// `Display` and `Debug` write passwords as `***`, so a URL can be logged safely.
///
/// # Examples
///
/// ```
/// use messaging_core::TransportUrl;
///
/// let url: TransportUrl = "rabbit://me:s3cret@h1:5672,h2/prod?heartbeat=30".parse()?;
/// assert_eq!(url.scheme(), "rabbit");
/// assert_eq!(url.hosts().len(), 2);
/// assert_eq!(url.hosts()[0].password.as_ref().unwrap().expose(), "s3cret");
/// assert_eq!(url.virtual_host(), Some("prod"));
/// assert_eq!(url.option("heartbeat"), Some("30"));
/// assert_eq!(url.to_string(), "rabbit://me:***@h1:5672,h2/prod?heartbeat=30");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// # Ok::<(), messaging_core::InvalidTransportUrl>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TransportUrl {
    scheme: String,
    hosts: Vec<TransportHost>,
    virtual_host: Option<String>,
    options: BTreeMap<String, String>,
}

impl TransportUrl {
    /// Parses a URL; see the type's documentation for the grammar.
    ///
    /// # Errors
    ///
    /// [`InvalidTransportUrl`] for anything that does not follow the grammar. The error
    /// quotes a well-known scheme (`rabbit://…`) and nothing else: in a malformed URL
    /// there is no telling which characters belong to a password. A `@` after the host list (in
    /// the path, query or fragment) is refused for the same reason: it means a user
    /// name or password holds an unencoded `/`, `?` or `#`, which would otherwise be
    /// read as part of the host, port or virtual host (and shown in logs). Write those
    /// characters percent-encoded (`%2F`, `%3F`, `%23`, `%40`).
    pub fn parse(input: &str) -> Result<Self, InvalidTransportUrl> {
        let input = input.trim();
        let scheme = input
            .find(':')
            .map(|colon| &input[..colon])
            .filter(|scheme| {
                scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
        let fail = |reason: String| InvalidTransportUrl {
            url: match scheme.filter(|s| is_well_known(s)) {
                Some(scheme) => format!("{}://…", scheme.to_ascii_lowercase()),
                None => "…".to_owned(),
            },
            reason,
        };
        let Some(scheme) = scheme else {
            return Err(fail(
                "no scheme specified (expected `driver://...`, e.g. `rabbit://host`)".to_owned(),
            ));
        };
        let mut rest = &input[scheme.len() + 1..];
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(fail("expected `//` after the scheme".to_owned()));
        }
        let (netloc, after) = match rest.strip_prefix("//") {
            Some(tail) => tail.split_at(tail.find(['/', '?', '#']).unwrap_or(tail.len())),
            None => ("", rest),
        };
        if after.contains('@') {
            return Err(fail(
                "`@` after the host list: a user name or password containing `/`, `?` or `#` \
                 must percent-encode them (`%2F`, `%3F`, `%23`), and a `@` elsewhere is `%40`"
                    .to_owned(),
            ));
        }
        rest = after;
        if let Some(hash) = rest.find('#') {
            rest = &rest[..hash];
        }
        let (path, query) = match rest.find('?') {
            Some(q) => (&rest[..q], &rest[q + 1..]),
            None => (rest, ""),
        };

        let mut hosts = Vec::new();
        for (i, part) in netloc.split(',').filter(|p| !p.is_empty()).enumerate() {
            hosts.push(parse_host(part).map_err(|reason| {
                fail(format!(
                    "host {}: {reason} (user names and passwords must percent-encode \
                     `/`, `?`, `#` and `@`)",
                    i + 1
                ))
            })?);
        }
        let virtual_host = path.strip_prefix('/').map(unquote);
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (unquote_plus(key), unquote_plus(value));
            if value.is_empty() {
                continue; // parse_qs drops blank values
            }
            options
                .entry(key)
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        Ok(TransportUrl {
            scheme: scheme.to_ascii_lowercase(),
            hosts,
            virtual_host,
            options,
        })
    }

    /// The scheme, lower-cased (`rabbit`, `kombu+memory`, ...).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The driver name: the scheme up to the first `+`.
    pub fn driver(&self) -> &str {
        self.scheme.split('+').next().unwrap_or(&self.scheme)
    }

    /// The hosts, in the order written.
    pub fn hosts(&self) -> &[TransportHost] {
        &self.hosts
    }

    /// The virtual host, if the URL has a path.
    pub fn virtual_host(&self) -> Option<&str> {
        self.virtual_host.as_deref()
    }

    /// All query options.
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// One query option.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// The URL with its passwords in clear text, for handing to a broker client.
    /// Never log the result.
    pub fn to_string_with_secrets(&self) -> String {
        struct Unredacted<'a>(&'a TransportUrl);
        impl fmt::Display for Unredacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, false)
            }
        }
        Unredacted(self).to_string()
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        for (i, host) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            host.write(f, redact)?;
        }
        if let Some(vhost) = &self.virtual_host {
            write!(f, "/{}", quote(vhost))?;
        }
        for (i, (key, value)) in self.options.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            write!(f, "{}={}", quote(key), quote_value(value))?;
        }
        Ok(())
    }
}

impl FromStr for TransportUrl {
    type Err = InvalidTransportUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransportUrl::parse(s)
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

impl fmt::Debug for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransportUrl(\"{self}\")")
    }
}

/// Whether an error may quote `scheme`: only the drivers' names are shown, since in a
/// mistyped URL the text before the first `:` can be anything, a password included.
fn is_well_known(scheme: &str) -> bool {
    const DRIVERS: &[&str] = &[
        "memory", "fake", "rabbit", "kombu", "amqp", "amqps", "nats", "tls", "kafka", "zmq",
    ];
    scheme
        .split('+')
        .all(|part| DRIVERS.iter().any(|d| d.eq_ignore_ascii_case(part)))
}

fn parse_host(part: &str) -> Result<TransportHost, String> {
    let (credentials, hostport) = match part.rsplit_once('@') {
        Some((creds, hostport)) => (Some(creds), hostport),
        None => (None, part),
    };
    let (username, password) = match credentials {
        Some(creds) => match creds.split_once(':') {
            Some((user, pass)) => (Some(unquote(user)), Some(Secret(unquote(pass)))),
            None => (Some(unquote(creds)), None),
        },
        None => (None, None),
    };
    let (hostname, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unterminated IPv6 address".to_owned())?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err("unexpected characters after an IPv6 address".to_owned()),
        };
        if !is_ipv6(host) {
            return Err("not an IPv6 address between `[` and `]`".to_owned());
        }
        (host.to_owned(), port)
    } else if hostport.matches(':').count() > 1 {
        // A bare IPv6 address; anything else with several `:` is most likely
        // `user:password` without its `@`, and must not be taken for a host name.
        if !is_ipv6(hostport) {
            return Err("several `:` in a host that is not an IPv6 address".to_owned());
        }
        (hostport.to_owned(), None)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (hostport.to_owned(), None),
        }
    };
    if !hostname
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%'))
    {
        return Err("not a host name".to_owned());
    }
    let port = match port {
        Some("") | None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| "the port is not a number from 0 to 65535".to_owned())?,
        ),
    };
    Ok(TransportHost {
        hostname: (!hostname.is_empty()).then_some(hostname),
        port,
        username,
        password,
    })
}

/// An IPv6 address, with an optional `%zone`.
fn is_ipv6(host: &str) -> bool {
    let address = host.split_once('%').map_or(host, |(address, _)| address);
    address.parse::<std::net::Ipv6Addr>().is_ok()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unquote_plus(s: &str) -> String {
    unquote(&s.replace('+', " "))
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn quote_value(s: &str) -> String {
    // keep the commas that join repeated keys readable
    quote(s).replace("%2C", ",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> TransportUrl {
        TransportUrl::parse(s).unwrap()
    }

    #[test]
    fn virtual_host_follows_oslo() {
        assert_eq!(parse("foo:").virtual_host(), None);
        assert_eq!(parse("foo://host").virtual_host(), None);
        assert_eq!(parse("foo://host/").virtual_host(), Some(""));
        assert_eq!(parse("foo:///bar").virtual_host(), Some("bar"));
        assert_eq!(parse("foo:////").virtual_host(), Some("/"));
        assert_eq!(parse("foo://h/%24").virtual_host(), Some("$"));
    }

    #[test]
    fn several_hosts_with_credentials() {
        let url = parse("testtransport://b1:s1@h1:1000,b2:s2@h2:2000/");
        assert_eq!(url.hosts().len(), 2);
        let h2 = &url.hosts()[1];
        assert_eq!(h2.hostname.as_deref(), Some("h2"));
        assert_eq!(h2.port, Some(2000));
        assert_eq!(h2.username.as_deref(), Some("b2"));
        assert_eq!(h2.password.as_ref().unwrap().expose(), "s2");
        assert_eq!(
            url.to_string(),
            "testtransport://b1:***@h1:1000,b2:***@h2:2000/"
        );
        assert_eq!(
            url.to_string_with_secrets(),
            "testtransport://b1:s1@h1:1000,b2:s2@h2:2000/"
        );
    }

    #[test]
    fn user_may_contain_at_and_password_colon() {
        let url = parse("rabbit://us@er:pa:ss@host");
        let h = &url.hosts()[0];
        assert_eq!(h.username.as_deref(), Some("us@er"));
        assert_eq!(h.password.as_ref().unwrap().expose(), "pa:ss");
    }

    #[test]
    fn credentials_are_percent_decoded_and_requoted() {
        let url = parse("rabbit://us%2Fer:p%40ss@host/v%2Fh");
        let h = &url.hosts()[0];
        assert_eq!(h.username.as_deref(), Some("us/er"));
        assert_eq!(h.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(url.virtual_host(), Some("v/h"));
        assert_eq!(
            url.to_string_with_secrets(),
            "rabbit://us%2Fer:p%40ss@host/v%2Fh"
        );
    }

    #[test]
    fn ipv6_hosts() {
        let url = parse("rabbit://[::1]:5672,[fe80::2],::3/");
        let hosts: Vec<_> = url
            .hosts()
            .iter()
            .map(|h| (h.hostname.clone().unwrap(), h.port))
            .collect();
        assert_eq!(
            hosts,
            [
                ("::1".to_owned(), Some(5672)),
                ("fe80::2".to_owned(), None),
                ("::3".to_owned(), None)
            ]
        );
        assert_eq!(url.to_string(), "rabbit://[::1]:5672,[fe80::2],[::3]/");
    }

    #[test]
    fn query_repeated_keys_join_with_commas_and_blank_values_drop() {
        let url = parse("rabbit://h/?a=1&a=2&b=&c=x+y");
        assert_eq!(url.option("a"), Some("1,2"));
        assert_eq!(url.option("b"), None);
        assert_eq!(url.option("c"), Some("x y"));
    }

    #[test]
    fn driver_is_the_part_before_plus() {
        assert_eq!(parse("kombu+memory:////").driver(), "kombu");
        assert_eq!(parse("RABBIT://h").scheme(), "rabbit");
    }

    #[test]
    fn malformed_urls_are_typed_errors_without_passwords() {
        let err = TransportUrl::parse("no-scheme-here").unwrap_err();
        assert!(err.reason().starts_with("no scheme specified"), "{err}");
        let err = TransportUrl::parse("rabbit://u:hunter2@host:99999/").unwrap_err();
        assert!(
            err.reason().contains("host 1: the port is not a number"),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            err.to_string()
                .starts_with("invalid transport URL `rabbit://…`"),
            "{err}"
        );
        assert!(TransportUrl::parse("rabbit://[::1/").is_err());
        assert!(TransportUrl::parse("1abc://h").is_err());
    }

    /// Issue 9, item 3: a password holding `/`, `?` or `#` (unencoded) made the parser
    /// read part of it as a port, and the error quoted it.
    #[test]
    fn no_part_of_an_unencoded_password_reaches_the_error() {
        for url in [
            "rabbit://guest:S3c/retPW@127.0.0.1:5672/",
            "rabbit://guest:S3c?retPW@127.0.0.1:5672/",
            "rabbit://guest:S3c#retPW@127.0.0.1:5672/",
            "rabbit://guest:123/retPW@127.0.0.1:5672/",
            "rabbit://guest:123?retPW@127.0.0.1:5672/",
            "rabbit://guest:123#retPW@127.0.0.1:5672/",
            "rabbit://guest:S3c/retPW@[::1]:5672/",
            "rabbit//guest:S3cretPW@127.0.0.1:5672/",
            "rabbit:guest:S3cretPW@127.0.0.1:5672/",
            "guest:S3cretPW@127.0.0.1:5672",
            "rabbit://a:b@h1,guest:S3c/retPW@h2/",
            "rabbit://guest:S3cretPW:5672/",
            "rabbit://admin:S3cret:retPW/",
            "amqp://admin:S3cretPWxx127.0.0.1:5672/",
            "rabbit://[guest:S3cretPW]:5672/",
        ] {
            let err = TransportUrl::parse(url).expect_err(url).to_string();
            for fragment in ["S3c", "retPW", "123"] {
                assert!(!err.contains(fragment), "{url} → {err}");
            }
        }
    }

    /// Issue 9, item 9: `rabbit:user:pw@host/` (no `//`) silently meant localhost with
    /// the default credentials.
    #[test]
    fn a_missing_double_slash_is_an_error() {
        let err = TransportUrl::parse("rabbit:guest:pw@host/").unwrap_err();
        assert_eq!(err.reason(), "expected `//` after the scheme");
        assert_eq!(
            err.to_string(),
            "invalid transport URL `rabbit://…`: expected `//` after the scheme"
        );
        let err = TransportUrl::parse("S3cretPW:x@host/").unwrap_err();
        assert!(!err.to_string().contains("S3cret"), "{err}");
        assert!(TransportUrl::parse("memory:").is_ok());
        assert!(TransportUrl::parse("memory:/").is_ok());
        assert!(TransportUrl::parse("memory:///x").is_ok());
    }

    #[test]
    fn encoded_special_characters_in_passwords_parse() {
        let url = parse("rabbit://guest:S3c%2FretPW%3F%23%40@127.0.0.1:5672/");
        let host = &url.hosts()[0];
        assert_eq!(host.password.as_ref().unwrap().expose(), "S3c/retPW?#@");
        assert_eq!(host.hostname.as_deref(), Some("127.0.0.1"));
        assert_eq!(url.to_string(), "rabbit://guest:***@127.0.0.1:5672/");
    }

    #[test]
    fn debug_and_display_never_show_passwords() {
        let url = parse("nats://a:topsecret@h1,b:alsosecret@h2");
        for text in [
            format!("{url}"),
            format!("{url:?}"),
            format!("{:?}", url.hosts()),
        ] {
            assert!(
                !text.contains("topsecret") && !text.contains("alsosecret"),
                "{text}"
            );
        }
    }

    #[test]
    fn empty_netloc_gives_no_hosts() {
        let url = parse("memory://");
        assert!(url.hosts().is_empty());
        assert_eq!(url.to_string(), "memory://");
    }
}
