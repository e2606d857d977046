//! oslo's interface version rule.

/// A parsed `major.minor[.revision]` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    major: u64,
    minor: u64,
    revision: u64,
}

pub(crate) fn parse(version: &str) -> Option<Version> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let revision = match parts.next() {
        Some(r) => r.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Version {
        major,
        minor,
        revision,
    })
}

/// Whether an endpoint implementing `implemented` can serve a caller asking for
/// `requested` (oslo's `version_is_compatible`): same major, requested minor not above
/// the implemented one, and with equal minors the requested revision not above the
/// implemented one (a missing revision counts as 0). Malformed versions are never
/// compatible.
///
/// # Examples
///
/// ```
/// use messaging_core::rpc::version_is_compatible;
///
/// assert!(version_is_compatible("1.24", "1.23"));
/// assert!(!version_is_compatible("1.22", "1.23"));
/// assert!(!version_is_compatible("1.23", "1.23.1"));
/// assert!(version_is_compatible("1.24", "1.23.1"));
/// assert!(version_is_compatible("1.23.0", "1.23"));
/// assert!(!version_is_compatible("2.0", "1.0"));
/// ```
pub fn version_is_compatible(implemented: &str, requested: &str) -> bool {
    let (Some(imp), Some(req)) = (parse(implemented), parse(requested)) else {
        return false;
    };
    if imp.major != req.major || req.minor > imp.minor {
        return false;
    }
    req.minor < imp.minor || req.revision <= imp.revision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_versions_parse_to_none() {
        for bad in ["", "1", "a.b", "1.2.3.4", "1.-2", "1..2"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(parse("1.2").is_some() && parse("1.2.3").is_some());
    }
}
