//! RabbitMQ over TLS (issue 10, item 3), against a node these tests start with a TLS
//! listener and a CA, server and client certificates they make (`rcgen`): the right CA
//! connects; a wrong CA, a certificate for another name and an expired client
//! certificate are clear, immediate errors; mutual TLS with `EXTERNAL` logs in as the
//! certificate's common name; no error or log shows key material or passwords. Runs
//! when `MESSAGING_TEST_RABBIT_URL` is set (the machine has RabbitMQ) and as root.

mod rabbit_node;

use std::path::Path;
use std::time::{Duration, Instant};

use messaging_core::rpc::{self, Endpoint, HandlerError, RpcClient, RpcError};
use messaging_core::{Context, Target, TransportError, ids};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{LogCapture, ServerThread, within};
use rabbit_node::RabbitNode;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    date_time_ymd,
};

const CLIENT_CN: &str = "messaging-client";

/// Writes `ca.pem`, `server.pem`/`server.key` (for `localhost` only),
/// `client.pem`/`client.key` (CN `messaging-client`), `expired.pem`/`expired.key` and
/// `other-ca.pem` (a CA that signed nothing here) into `dir`.
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
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose, expired: bool| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 2);
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (pem, key) = leaf(
        vec!["localhost".into()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
        false,
    );
    write("server.pem", &pem);
    write("server.key", &key);
    let (pem, key) = leaf(
        vec![],
        CLIENT_CN,
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
    );
    write("client.pem", &pem);
    write("client.key", &key);
    let (pem, key) = leaf(vec![], CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth, true);
    write("expired.pem", &pem);
    write("expired.key", &key);
}

const TLS_CONFIG: &str = "\
listeners.tcp = none
listeners.ssl.1 = 127.0.0.1:{amqp_port}
ssl_options.cacertfile = {dir}/ca.pem
ssl_options.certfile = {dir}/server.pem
ssl_options.keyfile = {dir}/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
";

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

fn call(url: &str, topic: &str) -> Result<u64, messaging_core::rpc::RpcError> {
    RpcClient::new(messaging_transports::open(url)?, Target::new(topic))
        .with_timeout(Duration::from_secs(10))
        .call_blocking(&Context::new(), "echo", &7u64)
}

#[test]
fn tls_with_the_right_ca_works_and_wrong_certificates_fail_at_once() {
    if std::env::var("MESSAGING_TEST_RABBIT_URL").is_err() {
        eprintln!("skipped: MESSAGING_TEST_RABBIT_URL is not set");
        return;
    }
    if let Err(why) = rabbit_node::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let logs = LogCapture::global();
    let node = RabbitNode::start(
        "tls",
        TLS_CONFIG,
        &["rabbitmq_auth_mechanism_ssl"],
        make_pki,
    );
    // Stops the node from this thread should the watchdog give up on the worker.
    let _guard = node.guard();
    within(Duration::from_secs(240), "TLS node", move || {
        let password = format!("pw{}", &ids::hex_id()[..12]);
        node.must(&["add_user", "tlsuser", &password]);
        node.must(&["set_permissions", "-p", "/", "tlsuser", ".*", ".*", ".*"]);
        node.must(&[
            "add_user",
            CLIENT_CN,
            &format!("unused{}", &ids::hex_id()[..8]),
        ]);
        node.must(&["set_permissions", "-p", "/", CLIENT_CN, ".*", ".*", ".*"]);
        let dir = node.dir.display().to_string();
        let port = node.amqp_port;
        let base = |host: &str, auth: &str, query: &str| {
            format!("amqps://{auth}{host}:{port}/?connect_timeout=5&{query}")
        };
        let user = format!("tlsuser:{password}@");

        // The right CA, both password mechanisms: a call round trip.
        for method in ["AMQPLAIN", "PLAIN"] {
            let url = base(
                "localhost",
                &user,
                &format!("ssl_ca_file={dir}/ca.pem&rabbit_login_method={method}"),
            );
            let topic = format!("tls_{}", &ids::hex_id()[..8]);
            let server = echo_server(&url, &topic);
            assert_eq!(call(&url, &topic).unwrap(), 7, "{method}");
            server.stop_and_wait().unwrap();
        }

        // Mutual TLS: EXTERNAL logs in as the certificate's CN, no password anywhere.
        let external = base(
            "localhost",
            "",
            &format!(
                "ssl_ca_file={dir}/ca.pem&ssl_cert_file={dir}/client.pem\
                 &ssl_key_file={dir}/client.key&rabbit_login_method=EXTERNAL"
            ),
        );
        let topic = format!("tls_ext_{}", &ids::hex_id()[..8]);
        let server = echo_server(&external, &topic);
        assert_eq!(call(&external, &topic).unwrap(), 7);
        let connections = node.must(&["list_connections", "user", "ssl", "auth_mechanism"]);
        assert!(
            connections
                .lines()
                .any(|l| l.contains(CLIENT_CN) && l.contains("true") && l.contains("EXTERNAL")),
            "{connections}"
        );
        server.stop_and_wait().unwrap();

        // What must fail, at once and saying why.
        let refused = |url: String, says: &[&str]| {
            let started = Instant::now();
            let transport = messaging_transports::open(&url).unwrap();
            let sent = RpcClient::new(transport, Target::new("tls_refused"))
                .with_timeout(Duration::from_secs(20))
                .cast_blocking(&Context::new(), "echo", &1u64);
            let error = match sent {
                Err(RpcError::Transport(error)) => error,
                other => panic!("{url}: expected a transport error, got {other:?}"),
            };
            let took = started.elapsed();
            let text = error.to_string();
            eprintln!("measured: refused after {took:?}: {text}");
            assert!(
                matches!(error, TransportError::Refused { .. }),
                "a certificate failure is final: {error:?}"
            );
            assert!(took < Duration::from_secs(10), "at once: {took:?}");
            for needle in says {
                assert!(text.contains(needle), "{needle:?} not in {text}");
            }
            assert!(!text.contains(&password), "{text}");
            text
        };
        refused(
            base(
                "localhost",
                &user,
                &format!("ssl_ca_file={dir}/other-ca.pem"),
            ),
            &["certificate", "UnknownIssuer"],
        );
        refused(
            base("127.0.0.1", &user, &format!("ssl_ca_file={dir}/ca.pem")),
            &["certificate not valid for name \"127.0.0.1\""],
        );
        refused(
            base(
                "localhost",
                "",
                &format!(
                    "ssl_ca_file={dir}/ca.pem&ssl_cert_file={dir}/expired.pem\
                     &ssl_key_file={dir}/expired.key&rabbit_login_method=EXTERNAL"
                ),
            ),
            &["CertificateExpired"],
        );

        // No key material or password in any log line of the whole test.
        let key = std::fs::read_to_string(node.dir.join("client.key")).unwrap();
        let key_body = key.lines().nth(1).unwrap().to_owned();
        for event in logs.events() {
            let line = format!("{} {:?}", event.message, event.fields);
            assert!(
                !line.contains(&key_body) && !line.contains(&password),
                "{line}"
            );
        }
    });
}
