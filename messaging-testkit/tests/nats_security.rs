//! NATS authentication and TLS (issue 12, items 3 and 4), against nats-servers these
//! tests start with configuration files of their own: users with passwords and NKeys,
//! a token, an operator with an account and a user (JWTs made and signed here, for
//! `.creds` files), and TLS with client certificates required (`verify: true`) from a
//! CA made here (`rcgen`). What is right connects and makes a call; what is wrong is a
//! `TransportError::Refused` at once, after one connection attempt (counted in the
//! server's own log), with at most one log line, and no password, token, seed, creds
//! file or key in any error, `Debug` output or log line (every level but TRACE, where
//! async-nats prints the protocol, its CONNECT included, for whoever asks for it).
//!
//! Each server runs on a free loopback port with a directory of its own, and is killed
//! (its directory removed) when its guard drops, on the test thread, even when the
//! test fails. The tests run when `MESSAGING_TEST_NATS_URL` is set (the broker tests
//! are enabled) and `/usr/sbin/nats-server` exists.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{Context, Target, TransportError, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use tracing::Level;

const NATS: &str = "/usr/sbin/nats-server";

static LOGS: LazyLock<LogCapture> = LazyLock::new(LogCapture::global);

/// The tests take turns: each counts the log lines its operations add to the
/// process's one log.
static SERIAL: Mutex<()> = Mutex::new(());

fn enabled() -> bool {
    if std::env::var("MESSAGING_TEST_NATS_URL").is_err() {
        eprintln!("skipped: MESSAGING_TEST_NATS_URL is not set");
        return false;
    }
    if !Path::new(NATS).exists() {
        eprintln!("skipped: {NATS} is not installed");
        return false;
    }
    LazyLock::force(&LOGS);
    true
}

/// A nats-server of the test's own, configured by the file it was started with.
struct OwnServer {
    child: Mutex<Option<Child>>,
    dir: PathBuf,
    port: u16,
}

/// Kills its server when dropped (on the test thread, whatever the worker does).
struct Guard(Arc<OwnServer>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl OwnServer {
    /// Makes a directory, lets `prepare` write files into it, then starts a server with
    /// `config` (`{port}` and `{dir}` replaced; JetStream and the log file added) and
    /// returns once it accepts connections.
    fn start(name: &str, config: &str, prepare: impl FnOnce(&Path)) -> (Arc<OwnServer>, Guard) {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("nats-sec-{name}-{}", ids::hex_id()));
        std::fs::create_dir_all(&dir).unwrap();
        prepare(&dir);
        let text = format!(
            "listen: 127.0.0.1:{port}\nlog_file: \"{dir}/server.log\"\n\
             jetstream {{ store_dir: \"{dir}/js\" }}\n{}",
            config
                .replace("{port}", &port.to_string())
                .replace("{dir}", &dir.display().to_string()),
            dir = dir.display()
        );
        std::fs::write(dir.join("server.conf"), text).unwrap();
        let child = Command::new(NATS)
            .arg("-c")
            .arg(dir.join("server.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = Arc::new(OwnServer {
            child: Mutex::new(Some(child)),
            dir,
            port,
        });
        let guard = Guard(server.clone());
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "nats-server {name} exited: {exited:?}; its log: {}",
                server.log()
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (server, guard)
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// How many lines of its log contain `text`.
    fn logged(&self, text: &str) -> usize {
        self.log().lines().filter(|l| l.contains(text)).count()
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

fn echo_server(url: &str, topic: &str) -> ServerThread {
    let server = rpc::server(
        messaging_transports::open(url).unwrap(),
        Target::new(topic).with_server("s1"),
        vec![Endpoint::new().method("echo", |_ctx, v: u64| Ok::<_, HandlerError>(v))],
        ThreadPoolExecutor::new(),
    )
    .unwrap()
    .build()
    .unwrap();
    ServerThread::spawn(server).unwrap()
}

/// A server and a client on `url` make a call: the credentials (or TLS) work.
fn round_trip(url: &str) {
    let topic = format!("sec_{}", &ids::hex_id()[..10]);
    let server = echo_server(url, &topic);
    let client = RpcClient::new(
        messaging_transports::open(url).unwrap(),
        Target::new(&topic),
    )
    .with_timeout(Duration::from_secs(10));
    let echoed: u64 = client
        .call_blocking(&Context::new(), "echo", &41u64)
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(echoed, 41);
    server.stop_and_wait().unwrap();
}

/// A cast on `url` fails at once with `Refused`, whose text holds every one of
/// `says`; the server logged `attempt` once (one connection attempt, no retries); the
/// client logged at most one warning or error. Returns the error's text.
fn refused(server: &OwnServer, url: &str, attempt: &str, says: &[&str]) -> String {
    let (attempts, lines) = (server.logged(attempt), LOGS.events().len());
    let started = Instant::now();
    let transport = messaging_transports::open(url).unwrap();
    let sent = RpcClient::new(transport, Target::new("sec_refused"))
        .with_timeout(Duration::from_secs(20))
        .cast_blocking(&Context::new(), "echo", &1u64);
    let took = started.elapsed();
    let error = match sent {
        Err(RpcError::Transport(error)) => error,
        other => panic!("{url}: expected a transport error, got {other:?}"),
    };
    let text = error.to_string();
    assert!(
        matches!(error, TransportError::Refused { .. }) && error.is_permanent(),
        "{url}: {error:?}"
    );
    assert!(took < Duration::from_secs(2), "{url}: took {took:?}");
    for needle in says {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    // The server writes its log line as it closes the connection: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.logged(attempt) == attempts && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = server.logged(attempt) - attempts;
    assert_eq!(seen, 1, "{url}: {seen} connection attempts ({attempt:?})");
    let logged: Vec<_> = LOGS.events()[lines..]
        .iter()
        .filter(|e| e.level <= Level::WARN)
        .map(|e| format!("{} {:?}", e.message, e.fields))
        .collect();
    assert!(logged.len() <= 1, "{url}: {logged:?}");
    eprintln!(
        "measured: refused in {took:?}, {seen} attempt, {} client log line(s): {text}",
        logged.len()
    );
    format!("{text} {error:?}")
}

/// No error text, `Debug` output or log line (below TRACE) holds any of `secrets`.
fn nothing_shows(texts: &[String], secrets: &[&str]) {
    let lines: Vec<String> = LOGS
        .events()
        .iter()
        .filter(|e| e.level != Level::TRACE)
        .map(|e| format!("{} {:?}", e.message, e.fields))
        .collect();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for text in texts.iter().chain(&lines) {
            assert!(!text.contains(secret), "a secret shows in: {text}");
        }
    }
}

#[test]
fn users_passwords_nkeys_and_tokens() {
    if !enabled() {
        return;
    }
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let password = format!("pw-{}", ids::hex_id());
    let nkey = nkeys::KeyPair::new_user();
    let seed = nkey.seed().unwrap();
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let (users, _guard) = OwnServer::start(
        "users",
        &format!(
            "authorization {{ users = [\n\
               {{ user: svc, password: \"{password}\" }}\n\
               {{ nkey: {} }}\n\
             ] }}\n",
            nkey.public_key()
        ),
        |dir| {
            std::fs::write(dir.join("user.nk"), format!("{seed}\n")).unwrap();
            std::fs::write(dir.join("stranger.nk"), format!("{stranger}\n")).unwrap();
        },
    );
    let token = format!("tok-{}", ids::hex_id());
    let (tokens, _guard2) = OwnServer::start(
        "token",
        &format!("authorization {{ token: \"{token}\" }}\n"),
        |_| {},
    );
    let secrets = [
        password.clone(),
        seed.clone(),
        stranger.clone(),
        token.clone(),
    ];
    within(
        Duration::from_secs(120),
        "users, NKeys, tokens",
        move || {
            let at = |server: &OwnServer, auth: &str, query: &str| {
                format!(
                    "nats://{auth}127.0.0.1:{}?connect_timeout=5&{query}",
                    server.port
                )
            };
            round_trip(&at(&users, &format!("svc:{password}@"), ""));
            round_trip(&at(
                &users,
                "",
                &format!("nkey_seed_file={}", users.path("user.nk")),
            ));
            round_trip(&at(&tokens, &format!(":{token}@"), ""));

            let mut texts = vec![];
            let failed = "authentication error";
            for (server, url, says) in [
                (
                    &users,
                    at(&users, "svc:wrong-password@", ""),
                    "user `svc` and its password",
                ),
                (&users, at(&users, "", ""), "no credentials"),
                (
                    &users,
                    at(
                        &users,
                        "",
                        &format!("nkey_seed_file={}", users.path("stranger.nk")),
                    ),
                    "the NKey seed in",
                ),
                (&users, at(&users, &format!(":{password}@"), ""), "a token"),
                (&tokens, at(&tokens, ":not-the-token@", ""), "a token"),
                (
                    &tokens,
                    at(&tokens, &format!("svc:{token}@"), ""),
                    "user `svc`",
                ),
            ] {
                texts.push(refused(
                    server,
                    &url,
                    failed,
                    &["authorization violation", says],
                ));
            }

            // A user name alone used to connect anonymously; now it is a URL error that
            // shows neither the name (it may be a token) nor anything else secret.
            let lone = messaging_transports::open(&at(&tokens, &format!("{token}@"), ""))
                .map(drop)
                .expect_err("a user name without a password");
            assert!(
                matches!(lone, TransportError::InvalidUrl(_))
                    && lone.to_string().contains(":token@host"),
                "{lone:?}"
            );
            texts.push(format!("{lone} {lone:?}"));
            for url in [
                at(&users, &format!("svc:{password}@"), ""),
                at(&tokens, &format!(":{token}@"), ""),
                at(
                    &users,
                    "",
                    &format!("nkey_seed_file={}", users.path("user.nk")),
                ),
            ] {
                texts.push(format!("{:?}", messaging_transports::open(&url).unwrap()));
            }
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            nothing_shows(&texts, &secrets);
        },
    );
}

/// Base64url without padding, as JWTs write their parts.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT (v2) about `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": ids::hex_id().to_uppercase(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = base64url(claims.to_string().as_bytes());
    let signature = issuer.sign(format!("{header}.{body}").as_bytes()).unwrap();
    format!("{header}.{body}.{}", base64url(&signature))
}

/// A `.creds` file: the user's JWT and seed, as `nsc` writes them.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[test]
fn creds_files_in_operator_mode() {
    if !enabled() {
        return;
    }
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // An operator, an account it signs, a user the account signs; and a user signed
    // by an account the server does not know.
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let rogue_account = nkeys::KeyPair::new_account();
    let rogue = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        json!({"type": "operator", "version": 2}),
    );
    let account_claims = json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        },
        "default_permissions": {"pub": {}, "sub": {}}
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "test-account",
        account_claims,
    );
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2, "limits": {"subs": -1, "data": -1, "payload": -1, "conn": -1}}),
    );
    let user_claims = json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1});
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "test-user",
        user_claims.clone(),
    );
    let rogue_jwt = jwt(&rogue_account, &rogue.public_key(), "rogue", user_claims);
    let (user_seed, rogue_seed) = (user.seed().unwrap(), rogue.seed().unwrap());
    let files = (
        operator_jwt.clone(),
        creds(&user_jwt, &user_seed),
        creds(&rogue_jwt, &rogue_seed),
    );
    let (server, _guard) = OwnServer::start(
        "operator",
        &format!(
            "operator: \"{{dir}}/operator.jwt\"\nresolver: MEMORY\n\
             system_account: {system}\n\
             resolver_preload: {{\n  {}: \"{account_jwt}\"\n  {system}: \"{system_jwt}\"\n}}\n",
            account.public_key(),
            system = system.public_key(),
        ),
        move |dir| {
            std::fs::write(dir.join("operator.jwt"), &files.0).unwrap();
            std::fs::write(dir.join("user.creds"), &files.1).unwrap();
            std::fs::write(dir.join("rogue.creds"), &files.2).unwrap();
        },
    );
    within(Duration::from_secs(120), "creds files", move || {
        let url = |file: &str| {
            format!(
                "nats://127.0.0.1:{}?connect_timeout=5&creds_file={}",
                server.port,
                server.path(file)
            )
        };
        round_trip(&url("user.creds"));
        let mut texts = vec![refused(
            &server,
            &url("rogue.creds"),
            "authentication error",
            &["authorization violation", "the credentials in"],
        )];
        texts.push(format!(
            "{:?}",
            messaging_transports::open(&url("user.creds")).unwrap()
        ));
        nothing_shows(&texts, &[&user_seed, &rogue_seed, &user_jwt, &rogue_jwt]);
    });
}

/// Writes `ca.pem`, `server.pem`/`server.key` (for `localhost` only),
/// `client.pem`/`client.key` and `other-ca.pem` (a CA that signed nothing here) into
/// `dir`.
fn make_pki(dir: &Path) {
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("messaging test CA");
    let (other_pem, _) = ca("another CA");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("ca.pem", &ca_pem);
    write("other-ca.pem", &other_pem);
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (pem, key) = leaf(
        vec!["localhost".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    write("server.pem", &pem);
    write("server.key", &key);
    let (pem, key) = leaf(
        vec![],
        "messaging-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    write("client.pem", &pem);
    write("client.key", &key);
}

#[test]
fn tls_with_client_certificates_and_hostname_verification() {
    if !enabled() {
        return;
    }
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let password = format!("pw-{}", ids::hex_id());
    let (server, _guard) = OwnServer::start(
        "tls",
        &format!(
            "tls {{\n\
               cert_file: \"{{dir}}/server.pem\"\n\
               key_file: \"{{dir}}/server.key\"\n\
               ca_file: \"{{dir}}/ca.pem\"\n\
               verify: true\n\
               timeout: 2\n\
             }}\n\
             authorization {{ users = [ {{ user: svc, password: \"{password}\" }} ] }}\n"
        ),
        make_pki,
    );
    within(Duration::from_secs(120), "TLS", move || {
        let dir = server.dir.display().to_string();
        let port = server.port;
        let client = format!("ssl_cert_file={dir}/client.pem&ssl_key_file={dir}/client.key");
        let url = |scheme: &str, host: &str, query: &str| {
            format!("{scheme}://svc:{password}@{host}:{port}?connect_timeout=5&{query}")
        };
        let trusted = format!("ssl_ca_file={dir}/ca.pem&{client}");

        // The right CA and a client certificate, by either spelling of TLS.
        round_trip(&url("tls", "localhost", &trusted));
        round_trip(&url("nats", "localhost", &format!("ssl=true&{trusted}")));
        // The certificate names localhost only: by address, only without the check.
        round_trip(&url(
            "tls",
            "127.0.0.1",
            &format!("{trusted}&ssl_enforce_hostname_verification=false"),
        ));

        let mut texts = vec![];
        let handshake = "TLS handshake error";
        for (url, says) in [
            (
                url(
                    "tls",
                    "localhost",
                    &format!("ssl_ca_file={dir}/other-ca.pem&{client}"),
                ),
                &[
                    "not signed by a trusted CA",
                    "UnknownIssuer",
                    "`ssl_ca_file`",
                ][..],
            ),
            (
                url("tls", "127.0.0.1", &trusted),
                &[
                    "does not name the host",
                    "ssl_enforce_hostname_verification=false",
                ][..],
            ),
            (
                url("tls", "localhost", &format!("ssl_ca_file={dir}/ca.pem")),
                &["the server refused the TLS handshake", "client certificate"][..],
            ),
        ] {
            texts.push(refused(&server, &url, handshake, says));
        }
        // Plain NATS to a server that requires TLS: the client upgrades, with the
        // system's roots only, which do not hold the test's CA.
        texts.push(refused(
            &server,
            &format!("nats://svc:{password}@localhost:{port}?connect_timeout=5"),
            handshake,
            &["not signed by a trusted CA"],
        ));
        texts.push(format!(
            "{:?}",
            messaging_transports::open(&url("tls", "localhost", &trusted)).unwrap()
        ));
        let key = std::fs::read_to_string(server.dir.join("client.key")).unwrap();
        let key_body = key.lines().nth(1).unwrap().to_owned();
        nothing_shows(&texts, &[&password, &key_body]);
    });
}
