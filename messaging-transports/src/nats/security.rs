//! How a NATS transport proves who it is (user and password, token, NKey seed, `.creds`
//! file) and how it checks the server (TLS): read from the URL and the files it names
//! when the transport opens, so that a mistake is a URL error then, not a failed
//! connection later. Nothing here ever quotes a secret or a file's contents: errors
//! name the option and the file, `Debug` shows `***` or the file's name.

use std::sync::Arc;

use async_nats::rustls;
use messaging_core::{InvalidTransportUrl, Secret, TransportError, TransportUrl};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How the client authenticates: one way at most.
#[derive(Clone, Debug, Default)]
pub(crate) enum Auth {
    /// No credentials: the server must allow anonymous clients.
    #[default]
    Anonymous,
    /// `nats://user:password@host`.
    UserPassword { user: String, password: Secret },
    /// `nats://:token@host`: an empty user name and the token as the password.
    Token(Secret),
    /// `nkey_seed_file`: a user NKey seed, signing the server's nonce.
    NKey { file: String, seed: Secret },
    /// `creds_file`: a user JWT and the NKey seed that signs for it.
    Creds { file: String, contents: Secret },
}

impl Auth {
    /// Gives the client these credentials.
    pub(crate) fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, TransportError> {
        Ok(match self {
            Auth::Anonymous => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            Auth::Token(token) => options.token(token.expose().to_owned()),
            Auth::NKey { seed, .. } => options.nkey(seed.expose().to_owned()),
            // Checked when the transport opened; the client's error is not quoted (it
            // could carry part of the file).
            Auth::Creds { file, contents } => {
                options.credentials(contents.expose()).map_err(|_| {
                    TransportError::other(format!("`creds_file` `{file}` cannot be used"))
                })?
            }
        })
    }

    /// What the credentials are, for messages: never a secret.
    pub(crate) fn describe(&self) -> String {
        match self {
            Auth::Anonymous => "no credentials".to_owned(),
            Auth::UserPassword { user, .. } => format!("user `{user}` and its password"),
            Auth::Token(_) => "a token".to_owned(),
            Auth::NKey { file, .. } => format!("the NKey seed in `{file}`"),
            Auth::Creds { file, .. } => format!("the credentials in `{file}`"),
        }
    }
}

/// The URL with every host's credentials written `***`, for an error about a user name
/// that may be a secret (`Display` hides passwords only).
fn without_credentials(url: &TransportUrl) -> TransportUrl {
    let shown = url.to_string();
    // What follows the host list (virtual host, options), as `Display` wrote it.
    let rest = shown.get(url.scheme().len() + 3..).unwrap_or_default();
    let tail = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    let hosts: Vec<String> = url
        .hosts()
        .iter()
        .map(|h| {
            let mut host = String::new();
            if h.username.is_some() || h.password.is_some() {
                host.push_str("***@");
            }
            match h.hostname.as_deref() {
                Some(name) if name.contains(':') => host.push_str(&format!("[{name}]")),
                Some(name) => host.push_str(name),
                None => {}
            }
            if let Some(port) = h.port {
                host.push_str(&format!(":{port}"));
            }
            host
        })
        .collect();
    let scheme = url.scheme();
    TransportUrl::parse(&format!("{scheme}://{}{tail}", hosts.join(",")))
        .or_else(|_| TransportUrl::parse(&format!("{scheme}://")))
        // Unreachable (both parse); the URL itself only as the very last resort.
        .unwrap_or_else(|_| url.clone())
}

/// Reads the URL's credentials: those of its hosts (the same for every host that
/// has any), `nkey_seed_file` or `creds_file`, one of them at most.
/// The largest credentials or TLS file read: a CA bundle of every public root is
/// under 1 MiB.
const FILE_LIMIT: u64 = 8 << 20;

/// A file's bytes, at most [`FILE_LIMIT`] of them: `/dev/zero` or an endless pipe
/// named as a file is an error (see [`unreadable`]), not memory exhausted.
fn read_bounded(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    Ok(bytes)
}

/// Why the file `path` of option `key` could not be used: the error's kind only (its
/// message could quote the file).
fn unreadable(key: &str, path: &str, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::FileTooLarge => format!(
            "`{key}`: `{path}` is larger than {} MiB: not a credentials, key or certificate file",
            FILE_LIMIT >> 20
        ),
        kind => format!("`{key}`: cannot read `{path}`: {kind}"),
    }
}

pub(crate) fn auth(
    url: &TransportUrl,
    bad: &dyn Fn(String) -> TransportError,
) -> Result<Auth, TransportError> {
    let mut written = url
        .hosts()
        .iter()
        .filter(|h| h.username.is_some() || h.password.is_some())
        .map(|h| (h.username.as_deref().unwrap_or(""), h.password.as_ref()));
    let first = written.next();
    if let Some(first) = first
        && written.any(|other| other != first)
    {
        return Err(bad(
            "the hosts carry different credentials: NATS uses one set for all of its \
             servers (write them once, on the first host)"
                .to_owned(),
        ));
    }
    let from_hosts = match first {
        None => None,
        Some((user, Some(password))) if !user.is_empty() => Some(Auth::UserPassword {
            user: user.to_owned(),
            password: password.clone(),
        }),
        Some(("", Some(token))) if !token.expose().is_empty() => Some(Auth::Token(token.clone())),
        // The name is not quoted, nor the URL with it: written this way it may well be
        // a token.
        Some((_, None)) => {
            return Err(TransportError::InvalidUrl(InvalidTransportUrl::new(
                &without_credentials(url),
                "a user name without a password: write `nats://user:password@host` for a \
                 user, or `nats://:token@host` (an empty user name) for a token",
            )));
        }
        Some(_) => {
            return Err(bad(
                "empty credentials: `nats://:@host` names neither a user nor a token".to_owned(),
            ));
        }
    };
    let file = |key: &str| -> Result<Option<(String, String)>, TransportError> {
        let Some(path) = url.option(key) else {
            return Ok(None);
        };
        if path.is_empty() {
            return Err(bad(format!("`{key}` is empty: give the file's path")));
        }
        let bytes = read_bounded(path).map_err(|e| bad(unreadable(key, path, &e)))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            bad(format!(
                "`{key}`: cannot read `{path}`: {}",
                std::io::ErrorKind::InvalidData
            ))
        })?;
        Ok(Some((path.to_owned(), text)))
    };
    let nkey = match file("nkey_seed_file")? {
        None => None,
        Some((path, text)) => {
            // The seed is the file's first line that is not blank or a comment (the
            // form `nk -gen user` and `nsc` write).
            let seed = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
                .unwrap_or_default();
            match nkeys::KeyPair::from_seed(seed) {
                Ok(pair) if pair.key_pair_type() == nkeys::KeyPairType::User => {}
                // Neither the parser's error nor the line is quoted.
                _ => {
                    return Err(bad(format!(
                        "`nkey_seed_file`: `{path}` holds no user NKey seed (a line starting \
                         with `SU`)"
                    )));
                }
            }
            Some(Auth::NKey {
                file: path,
                seed: Secret::new(seed),
            })
        }
    };
    let creds = match file("creds_file")? {
        None => None,
        Some((path, text)) => {
            if async_nats::ConnectOptions::new()
                .credentials(&text)
                .is_err()
            {
                return Err(bad(format!(
                    "`creds_file`: `{path}` holds no user JWT and NKey seed in the `.creds` \
                     format"
                )));
            }
            Some(Auth::Creds {
                file: path,
                contents: Secret::new(text),
            })
        }
    };
    let given: Vec<Auth> = [from_hosts, nkey, creds].into_iter().flatten().collect();
    match <[Auth; 1]>::try_from(given) {
        Ok([one]) => Ok(one),
        Err(given) if given.is_empty() => Ok(Auth::Anonymous),
        Err(given) => Err(bad(format!(
            "several ways to authenticate ({}): give one of a user and password, a token, \
             `nkey_seed_file` or `creds_file`",
            given
                .iter()
                .map(Auth::describe)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// TLS as the URL asks for it: the client's configuration, built when the transport
/// opens. Its `Debug` names the files, never what they hold.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) config: rustls::ClientConfig,
    ca_file: Option<String>,
    cert_file: Option<String>,
    verify_hostname: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ssl_ca_file", &self.ca_file)
            .field("ssl_cert_file", &self.cert_file)
            .field("ssl_enforce_hostname_verification", &self.verify_hostname)
            .finish()
    }
}

/// A boolean option as oslo.config reads one (true/1/yes/on, false/0/no/off, any case).
fn flag(
    url: &TransportUrl,
    key: &str,
    bad: &dyn Fn(String) -> TransportError,
) -> Result<Option<bool>, TransportError> {
    match url.option(key).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
        Some("false" | "0" | "no" | "off") => Ok(Some(false)),
        Some(_) => Err(bad(format!(
            "`{key}` must be true or false, got `{}`",
            url.option(key).unwrap_or_default()
        ))),
    }
}

/// Reads the URL's TLS options: `tls://` or `ssl=true` (`tls=true`, the earlier name,
/// too) turn TLS on; `ssl_ca_file`, `ssl_cert_file` + `ssl_key_file` and
/// `ssl_enforce_hostname_verification` (default true) shape it. `None`: plain TCP
/// (unless the server requires TLS, when the client upgrades with the system's roots).
pub(crate) fn tls(
    url: &TransportUrl,
    bad: &dyn Fn(String) -> TransportError,
) -> Result<Option<Tls>, TransportError> {
    let scheme = url.scheme() == "tls";
    let (ssl, legacy) = (flag(url, "ssl", bad)?, flag(url, "tls", bad)?);
    if let (Some(ssl), Some(legacy)) = (ssl, legacy)
        && ssl != legacy
    {
        return Err(bad(
            "`ssl` and `tls` disagree (`tls` is the earlier name of `ssl`: give one)".to_owned(),
        ));
    }
    // The option, when given, wins over the scheme (`tls://h?ssl=false` is plain).
    let on = ssl.or(legacy).unwrap_or(scheme);
    let path = |key: &str| url.option(key).filter(|p| !p.is_empty());
    let named = [
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_enforce_hostname_verification",
    ]
    .into_iter()
    .find(|key| url.option(key).is_some());
    if !on {
        return match named {
            Some(key) => Err(bad(format!(
                "`{key}` is set but TLS is off: use `tls://` or `ssl=true`"
            ))),
            None => Ok(None),
        };
    }
    let verify_hostname = flag(url, "ssl_enforce_hostname_verification", bad)?.unwrap_or(true);
    let read = |key: &str| -> Result<Option<(String, Vec<u8>)>, TransportError> {
        let Some(file) = path(key) else {
            return Ok(None);
        };
        let bytes = read_bounded(file).map_err(|e| bad(unreadable(key, file, &e)))?;
        Ok(Some((file.to_owned(), bytes)))
    };
    // Parsed now, so that a bad file is an error when the transport opens. The
    // parsers' errors are not quoted: they could carry bytes of a key.
    let certificates =
        |key: &str, file: &str, bytes: &[u8]| match CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(certs) if !certs.is_empty() => Ok(certs),
            _ => Err(bad(format!(
                "`{key}`: `{file}` holds no readable PEM certificate"
            ))),
        };
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots, plus `ssl_ca_file` (as on RabbitMQ). A system without
    // readable roots is no error when the URL names a CA.
    roots.add_parsable_certificates(native_roots().iter().cloned());
    let ca = read("ssl_ca_file")?;
    if let Some((file, bytes)) = &ca {
        for cert in certificates("ssl_ca_file", file, bytes)? {
            roots.add(cert).map_err(|_| {
                bad(format!(
                    "`ssl_ca_file`: `{file}` holds a certificate that cannot be a trust anchor"
                ))
            })?;
        }
    }
    if roots.is_empty() {
        return Err(bad(
            "TLS has no certificate to trust: the system has no readable root certificates \
             and `ssl_ca_file` is not set"
                .to_owned(),
        ));
    }
    let cert = read("ssl_cert_file")?;
    let key = read("ssl_key_file")?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => return Err(bad("`ssl_cert_file` needs `ssl_key_file`".to_owned())),
        (None, Some(_)) => return Err(bad("`ssl_key_file` needs `ssl_cert_file`".to_owned())),
        (Some((cert_file, cert)), Some((key_file, key))) => {
            let chain = certificates("ssl_cert_file", &cert_file, &cert)?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
                bad(format!(
                    "`ssl_key_file`: `{key_file}` holds no readable, unencrypted PEM private \
                     key (PKCS#8, PKCS#1 or SEC1)"
                ))
            })?;
            Some((cert_file, chain, key))
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let roots = Arc::new(roots);
    let builder = if verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let checks = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| bad(format!("TLS: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName { checks }))
    };
    let (config, cert_file) = match identity {
        None => (builder.with_no_client_auth(), None),
        Some((file, chain, key)) => (
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                bad(format!(
                    "`ssl_key_file` is not the key of the certificate in `{file}`, or its kind \
                     is not supported"
                ))
            })?,
            Some(file),
        ),
    };
    Ok(Some(Tls {
        config,
        ca_file: ca.map(|(file, _)| file),
        cert_file,
        verify_hostname,
    }))
}

/// `ssl_enforce_hostname_verification=false`: the server's certificate must still be
/// valid and signed by a trusted CA, but may name another host.
#[derive(Debug)]
struct AnyName {
    checks: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (trust, validity, usage) before the name: a name error
        // means everything else held.
        match self.checks.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.checks.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.checks.supported_verify_schemes()
    }
}

/// The TLS failure in a connection error, if that is what it is: the server's
/// certificate not accepted, or ours refused by the server. Retrying cannot help.
pub(crate) fn tls_refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return match tls {
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    ..
                }) => Some(format!(
                    "the server's certificate does not name the host connected to ({tls}): \
                     connect by a name it holds, or set \
                     `ssl_enforce_hostname_verification=false`"
                )),
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => Some(format!(
                    "the server's certificate is not signed by a trusted CA ({tls}): is \
                     `ssl_ca_file` the CA that signed it?"
                )),
                rustls::Error::InvalidCertificate(_) => {
                    Some(format!("the server's certificate was not accepted: {tls}"))
                }
                rustls::Error::AlertReceived(_) | rustls::Error::NoCertificatesPresented => {
                    Some(format!(
                        "the server refused the TLS handshake ({tls}): does it require a \
                         client certificate (`ssl_cert_file`, `ssl_key_file`) from a CA it \
                         trusts?"
                    ))
                }
                _ => None,
            };
        }
        next = error.source();
    }
    None
}

/// The system's root certificates, read once per process (reading them costs about
/// 2 MB of allocations and a walk of the system's certificate store, which every URL
/// check with `ssl=true` would otherwise repeat). A certificate store changed while the
/// process runs is seen after a restart.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

#[cfg(test)]
mod tests {
    use super::super::options::Options;
    use super::*;

    fn options(url: &str) -> Result<Options, TransportError> {
        Options::from_url(&TransportUrl::parse(url).unwrap())
    }

    /// The reason of a URL error, checked to hold none of `secrets`.
    fn refused(url: &str, secrets: &[&str]) -> String {
        let error = match options(url) {
            Err(TransportError::InvalidUrl(e)) => e,
            other => panic!("{url}: {other:?}"),
        };
        for text in [error.to_string(), format!("{error:?}")] {
            for secret in secrets {
                assert!(!text.contains(secret), "{url}: {text}");
            }
        }
        error.reason().to_owned()
    }

    fn dir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nats-security-{}", messaging_core::ids::hex_id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn url_credentials_are_a_user_and_password_or_a_token_never_shown() {
        let o = options("nats://:t0ken-S3CRET@h1,h2").unwrap();
        assert!(
            matches!(&o.auth, Auth::Token(t) if t.expose() == "t0ken-S3CRET"),
            "{:?}",
            o.auth
        );
        assert!(!format!("{o:?}").contains("S3CRET"));
        let o = options("nats://me:pw-S3CRET@h1,me:pw-S3CRET@h2").unwrap();
        assert!(matches!(&o.auth, Auth::UserPassword { user, .. } if user == "me"));
        assert!(!format!("{o:?}").contains("S3CRET"));
        assert!(matches!(options("nats://h").unwrap().auth, Auth::Anonymous));

        // A user without a password used to connect anonymously: now it is an error
        // that does not repeat the name (it may be a token written the NATS way).
        let reason = refused("nats://maybe-a-T0KEN@h", &["T0KEN"]);
        assert!(reason.contains("`nats://:token@host`"), "{reason}");
        assert!(refused("nats://:@h", &[]).contains("empty credentials"));
        let reason = refused("nats://a:S3CRET@h1,b:S3CRET@h2", &["S3CRET"]);
        assert!(reason.contains("different credentials"), "{reason}");
        let reason = refused("nats://a:S3CRET@h1,a:OTHER-S3CRET@h2", &["S3CRET"]);
        assert!(reason.contains("different credentials"), "{reason}");
    }

    #[test]
    fn nkey_seed_and_creds_files_are_read_checked_and_never_shown() {
        let dir = dir();
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let path = |name: &str| dir.join(name).display().to_string();
        std::fs::write(path("user.nk"), format!("# a comment\n\n{seed}\n")).unwrap();
        let o = options(&format!("nats://h?nkey_seed_file={}", path("user.nk"))).unwrap();
        assert!(
            matches!(&o.auth, Auth::NKey { seed: s, .. } if s.expose() == seed),
            "{:?}",
            o.auth
        );
        assert!(!format!("{o:?}").contains(&seed));

        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(path("account.nk"), &account).unwrap();
        std::fs::write(path("garbage.nk"), "SUnot-a-seed-S3CRET\n").unwrap();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(path("user.creds"), &creds).unwrap();
        std::fs::write(path("seedless.creds"), creds.replace(&seed, "")).unwrap();
        let o = options(&format!("nats://h?creds_file={}", path("user.creds"))).unwrap();
        assert!(matches!(&o.auth, Auth::Creds { .. }), "{:?}", o.auth);
        assert!(!format!("{o:?}").contains(&seed));
        assert!(o.auth.apply(async_nats::ConnectOptions::new()).is_ok());

        for (query, says) in [
            (
                format!("nkey_seed_file={}", path("account.nk")),
                "holds no user NKey seed",
            ),
            (
                format!("nkey_seed_file={}", path("garbage.nk")),
                "holds no user NKey seed",
            ),
            (
                format!("nkey_seed_file={}", path("missing.nk")),
                "cannot read",
            ),
            (format!("creds_file={}", path("user.nk")), "`.creds` format"),
            (
                format!("creds_file={}", path("seedless.creds")),
                "`.creds` format",
            ),
            (
                format!(
                    "creds_file={}&nkey_seed_file={}",
                    path("user.creds"),
                    path("user.nk")
                ),
                "several ways to authenticate",
            ),
        ] {
            let reason = refused(&format!("nats://h?{query}"), &[&seed, &account, "S3CRET"]);
            assert!(reason.contains(says), "{query}: {reason}");
        }
        let reason = refused(
            &format!("nats://u:S3CRET@h?nkey_seed_file={}", path("user.nk")),
            &[&seed, "S3CRET"],
        );
        assert!(
            reason.contains(
                "several ways to authenticate (user `u` and its password, the NKey seed in"
            ),
            "{reason}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_options_share_rabbits_names_and_are_checked_when_opening() {
        let dir = dir();
        let path = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            path("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nS3CRETKEYBYTES\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(path("empty.pem"), "nothing here\n").unwrap();
        for url in [
            "tls://h",
            "nats://h?ssl=true",
            "nats://h?tls=1",
            "nats://h?ssl=on&tls=true",
        ] {
            let o = options(url).unwrap();
            let tls = o.tls.as_ref().expect(url);
            assert!(tls.verify_hostname, "{url}: verified by default");
            assert_eq!(o.servers, ["tls://h:4222"], "{url}");
        }
        let o = options("tls://h?ssl_enforce_hostname_verification=false").unwrap();
        assert!(!o.tls.unwrap().verify_hostname);
        assert!(options("nats://h?ssl=false").unwrap().tls.is_none());
        let o = options("tls://h?ssl=false").unwrap();
        assert!(o.tls.is_none());
        assert_eq!(o.servers, ["nats://h:4222"]);
        for (url, says) in [
            (
                format!("nats://h?ssl_ca_file={}", path("empty.pem")),
                "TLS is off: use `tls://` or `ssl=true`",
            ),
            (
                "nats://h?ssl_enforce_hostname_verification=false".to_owned(),
                "TLS is off",
            ),
            (
                "nats://h?ssl=true&tls=false".to_owned(),
                "`ssl` and `tls` disagree",
            ),
            (
                "nats://h?ssl=maybe".to_owned(),
                "`ssl` must be true or false",
            ),
            (
                format!("tls://h?ssl_ca_file={}", path("empty.pem")),
                "holds no readable PEM certificate",
            ),
            (
                format!("tls://h?ssl_ca_file={}", path("missing.pem")),
                "`ssl_ca_file`: cannot read",
            ),
            (
                format!("tls://h?ssl_cert_file={}", path("empty.pem")),
                "`ssl_cert_file` needs `ssl_key_file`",
            ),
            (
                format!("tls://h?ssl_key_file={}", path("key.pem")),
                "`ssl_key_file` needs `ssl_cert_file`",
            ),
            (
                format!(
                    "tls://h?ssl_cert_file={}&ssl_key_file={}",
                    path("key.pem"),
                    path("key.pem")
                ),
                "holds no readable PEM certificate",
            ),
        ] {
            let reason = refused(&url, &["S3CRET"]);
            assert!(reason.contains(says), "{url}: {reason}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Certificate failures are found inside the I/O error the client wraps them in,
    /// and told apart; other TLS errors are not refusals.
    #[test]
    fn tls_refusals_are_recognised_inside_io_errors() {
        let wrapped =
            |error: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
        for (error, says) in [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "not signed by a trusted CA",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "does not name the host",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "was not accepted",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                "client certificate",
            ),
        ] {
            let why = tls_refusal(&wrapped(error)).expect(says);
            assert!(why.contains(says), "{why}");
        }
        assert_eq!(tls_refusal(&wrapped(rustls::Error::DecryptError)), None);
        assert_eq!(
            tls_refusal(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            None
        );
    }

    #[test]
    fn max_pending_defaults_to_prefetch_and_slack_and_is_bounded() {
        assert_eq!(options("nats://h").unwrap().max_pending, 1064);
        assert_eq!(options("nats://h?prefetch=16").unwrap().max_pending, 80);
        assert_eq!(options("nats://h?max_pending=1").unwrap().max_pending, 1);
        for value in ["0", "1000001", "lots"] {
            let reason = refused(&format!("nats://h?max_pending={value}"), &[]);
            assert_eq!(
                reason,
                format!("`max_pending` must be a whole number from 1 to 1000000, got `{value}`")
            );
        }
    }
}
