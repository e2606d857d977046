//! Fuzzing every decoder an outsider can reach (issue 9, item 13): both codecs, oslo's
//! envelope on RabbitMQ, the NATS frame, the transport URL and the transports' URL
//! options. Properties, on every generated input:
//!
//! * no panic (a panic would take down a poller or a handler thread);
//! * bounded allocation: decoding an input of `n` bytes allocates at most
//!   [`codec_bound`]`(n)` bytes in all per codec decode (what bincode may claim for
//!   `n` bytes, plus the value), and [`envelope_bound`]`(n)` per envelope, frame or
//!   URL, whatever lengths the input claims (measured with an instrumented global
//!   allocator);
//! * no secret in any error: a password in a URL never reaches the error's text, nor
//!   the `Display`/`Debug` of a URL that parsed.
//!
//! `cargo test` runs a short smoke run per target. The long run (at least a million
//! inputs per target):
//!
//! ```sh
//! MESSAGING_FUZZ_ITERATIONS=1000000 cargo test --release -p messaging-testkit --test fuzz -- --nocapture
//! ```
//!
//! Each target prints its report (inputs, accepted, largest allocation).

use std::alloc::System;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use messaging_core::codec::{Codec, CodecError, CodecKind, bincode_claim_limit};
use messaging_core::{Context, RemoteError, TransportUrl};
use messaging_testkit::fuzz::{Fuzz, Report, Verdict, iterations};
use messaging_transports::fuzzing;
use serde::{Deserialize, Serialize};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Inputs per target in the default (smoke) run.
const SMOKE: u64 = 5_000;

/// One target at a time, so the allocator's counters see only its decoding.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The largest allocation total measured in the current target.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The most one decode of `len` bytes by a codec may allocate, in all: what bincode
/// may claim for that length (`messaging_core::codec::bincode_claim_limit`), what
/// serde preallocates for a sequence or map whose length the input claims (at most
/// 1 MiB each, and the types decoded here nest three), and the decoded value itself
/// (a small multiple of the input).
fn codec_bound(len: usize) -> usize {
    bincode_claim_limit(len) + 3 * (1 << 20) + 32 * len + (64 << 10)
}

/// The most a whole check of `len` bytes may allocate: linear in the input, never
/// driven by a length the input claims. The constant covers what one input becomes in
/// the harness: wrapped in oslo's envelope after a lossy UTF-8 conversion (up to three
/// bytes per input byte), decoded as a request, a reply, a notification and a failure
/// (each copying the text once or twice), and each outcome summarised with `Debug`.
fn envelope_bound(len: usize) -> usize {
    (2 << 20) + 128 * len
}

/// Runs `f`, failing if it allocated more than `bound` bytes in all (bytes allocated
/// plus growth by reallocation), and records the largest total seen.
fn bounded<R>(bound: usize, f: impl FnOnce() -> R) -> Result<R, String> {
    let region = Region::new(GLOBAL);
    let result = f();
    let stats = region.change();
    let total = stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize;
    LARGEST.fetch_max(total, Ordering::Relaxed);
    if total > bound {
        return Err(format!("allocated {total} bytes (bound {bound})"));
    }
    Ok(result)
}

/// Runs a target, printing its report and the largest allocation measured.
fn fuzz(target: Fuzz, check: impl FnMut(&[u8]) -> Result<Verdict, String>) -> Report {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    let report = target.run(iterations(SMOKE), check);
    eprintln!(
        "{report}; largest allocation {} bytes",
        LARGEST.load(Ordering::Relaxed)
    );
    report
}

fn verdict<T, E>(results: impl IntoIterator<Item = Result<T, E>>) -> Verdict {
    let mut verdict = Verdict::Rejected;
    for result in results {
        if result.is_ok() {
            verdict = Verdict::Accepted;
        }
    }
    verdict
}

// ===== codecs =====

#[derive(Debug, Serialize, Deserialize)]
enum Kind {
    Plain,
    Numbered(u32),
    Named { name: String, weight: f64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct Sample {
    id: u64,
    name: String,
    tags: Vec<String>,
    kind: Kind,
    pair: Option<(u8, i128)>,
    bytes: Vec<u8>,
    counts: BTreeMap<String, u32>,
}

fn sample(i: u64) -> Sample {
    Sample {
        id: i * 7919,
        name: format!("instance-{i}"),
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        kind: match i % 3 {
            0 => Kind::Plain,
            1 => Kind::Numbered(i as u32),
            _ => Kind::Named {
                name: "n".repeat(i as usize % 9),
                weight: i as f64 / 3.0,
            },
        },
        pair: i.is_multiple_of(2).then_some((i as u8, -(i as i128) << 70)),
        bytes: vec![i as u8; (i % 5) as usize],
        counts: [("a".to_owned(), i as u32), ("b".to_owned(), 1)].into(),
    }
}

/// Decodes `input` as `T`, within the codec's allocation bound.
fn decode<T: serde::de::DeserializeOwned>(
    codec: CodecKind,
    input: &[u8],
) -> Result<Result<(), CodecError>, String> {
    bounded(codec_bound(input.len()), || {
        codec.decode::<T>(input).map(drop)
    })
}

/// Decodes `input` as each type a handler commonly takes.
fn decode_all(codec: CodecKind, input: &[u8]) -> Result<Verdict, String> {
    Ok(verdict([
        decode::<Sample>(codec, input)?,
        decode::<String>(codec, input)?,
        decode::<Vec<u8>>(codec, input)?,
        decode::<Vec<String>>(codec, input)?,
        decode::<BTreeMap<String, Vec<u64>>>(codec, input)?,
        decode::<(u128, char, bool, f32)>(codec, input)?,
        decode::<RemoteError>(codec, input)?,
        decode::<Context>(codec, input)?,
        decode::<Option<Vec<Option<String>>>>(codec, input)?,
    ]))
}

fn codec_seeds(codec: CodecKind) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = (0..12)
        .map(|i| codec.encode(&sample(i)).unwrap().to_vec())
        .collect();
    seeds.push(codec.encode("a string").unwrap().to_vec());
    seeds.push(codec.encode(&vec!["x".to_owned(); 3]).unwrap().to_vec());
    seeds.push(
        codec
            .encode(&RemoteError::new("ValueError", "builtins", "bad"))
            .unwrap()
            .to_vec(),
    );
    seeds.push(
        codec
            .encode(&(u128::MAX, 'é', true, 1.5f32))
            .unwrap()
            .to_vec(),
    );
    seeds
}

#[test]
fn fuzz_codec_bincode() {
    let target = Fuzz::new("codec bincode", 0xb1)
        .seeds(codec_seeds(CodecKind::Bincode))
        .dictionary([
            &[0xfb][..],
            &[0xfc],
            &[0xfd],
            &[0xfe],
            &[0xff, 0xff, 0xff, 0xff],
        ]);
    fuzz(target, |input| decode_all(CodecKind::Bincode, input));
}

#[test]
fn fuzz_codec_json() {
    let target = Fuzz::new("codec json", 0x15)
        .seeds(codec_seeds(CodecKind::Json))
        .dictionary([
            "{", "}", "[", "]", "\"", "\\u0000", "\\ud800", "null", "true", ":", ",", "[[[[[[[[",
        ]);
    fuzz(target, |input| {
        let any = decode::<serde_json::Value>(CodecKind::Json, input)?;
        Ok(match (decode_all(CodecKind::Json, input)?, any) {
            (Verdict::Accepted, _) | (_, Ok(())) => Verdict::Accepted,
            _ => Verdict::Rejected,
        })
    });
}

// ===== oslo's envelope on RabbitMQ =====

const OSLO_KEYS: &[&str] = &[
    "\"oslo.version\"",
    "\"oslo.message\"",
    "\"2.0\"",
    "\"method\"",
    "\"args\"",
    "\"namespace\"",
    "\"version\"",
    "\"_msg_id\"",
    "\"_reply_q\"",
    "\"_timeout\"",
    "\"_unique_id\"",
    "\"_context_user\"",
    "\"result\"",
    "\"failure\"",
    "\"ending\"",
    "\"priority\"",
    "\"INFO\"",
    "\"payload\"",
    "\"event_type\"",
    "\"publisher_id\"",
    "\"message_id\"",
    "\"timestamp\"",
    "\"class\"",
    "\"module\"",
    "\"message\"",
    "\"tb\"",
    "\\\"",
    "null",
    "true",
    "false",
];

fn oslo_fixtures() -> Vec<Vec<u8>> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../messaging-transports/tests/fixtures/oslo-wire"
    );
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the oslo wire fixtures") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read(&path).unwrap();
            // As published (shape byte 1: raw) and, for enveloped ones, the inner
            // message (shape byte 0: the harness wraps it again).
            seeds.push([&[1u8][..], &body].concat());
            if let Ok(outer) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(inner) = outer.get("oslo.message").and_then(|m| m.as_str())
            {
                seeds.push([&[0u8][..], inner.as_bytes()].concat());
            }
        }
    }
    assert!(seeds.len() >= 8, "fixtures missing: {}", seeds.len());
    seeds
}

#[test]
fn fuzz_oslo_envelope() {
    let target = Fuzz::new("oslo envelope (RabbitMQ)", 0x0510)
        .seeds(oslo_fixtures())
        .dictionary(OSLO_KEYS);
    fuzz(target, |input| {
        // The last outcome is the failure decoder's, which always succeeds (anything
        // unreadable becomes a RemoteError): only the first three tell acceptance.
        bounded(envelope_bound(input.len()), || fuzzing::rabbit_body(input))
            .map(|outcomes| verdict(outcomes.into_iter().take(3)))
    });
}

// ===== the NATS frame =====

#[test]
fn fuzz_nats_frame() {
    let headers = [
        r#"{"kind":"request","codec":"bincode","method":"add","namespace":"ns","version":"1.2","monitor":2.5}"#,
        r#"{"kind":"request","context":{"user":"u","roles":["a"]},"codec":"json","method":"m"}"#,
        r#"{"kind":"notification","codec":"json","message_id":"id","publisher_id":"p","event_type":"e","priority":"info","timestamp":"t"}"#,
        r#"{"kind":"reply","codec":"bincode","outcome":"ok"}"#,
        r#"{"kind":"reply","codec":"json","outcome":"error","error":{"class":"ValueError","module":"builtins","message":"bad","traceback":[]}}"#,
        r#"{"kind":"reply","codec":"json","outcome":"heartbeat"}"#,
        r#"{"kind":"plain","codec":"bincode"}"#,
    ];
    let mut seeds = Vec::new();
    for header in headers {
        let payload: &[u8] = b"{\"a\": 1}";
        // Shape 0: the harness computes the length prefix, header split at byte 2.
        let split = u8::try_from(header.len()).unwrap_or(0);
        seeds.push([&[0u8, split][..], header.as_bytes(), payload].concat());
        // Shape 1: a whole frame as sent.
        let mut frame = vec![1u8];
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
        frame.extend_from_slice(header.as_bytes());
        frame.extend_from_slice(payload);
        seeds.push(frame);
    }
    let target = Fuzz::new("NATS frame", 0x4a75).seeds(seeds).dictionary([
        "\"kind\"",
        "\"request\"",
        "\"reply\"",
        "\"notification\"",
        "\"codec\"",
        "\"bincode\"",
        "\"json\"",
        "\"method\"",
        "\"monitor\"",
        "\"outcome\"",
        "\"error\"",
        "\"priority\"",
        "\"context\"",
        "null",
    ]);
    fuzz(target, |input| {
        bounded(envelope_bound(input.len()), || fuzzing::nats_body(input)).map(verdict)
    });
}

// ===== transport URLs and options =====

/// A password the URL inputs carry; no window of it may reach an error.
const SECRET: &str = "Qz7SecretPw";

fn leaks(text: &str) -> bool {
    SECRET
        .as_bytes()
        .windows(5)
        .any(|w| text.contains(std::str::from_utf8(w).unwrap()))
}

/// A URL that parsed must not show a password in `Display` or `Debug`, unless the
/// same text is also a visible part (a host name, ...).
fn check_parsed(url: &TransportUrl) -> Result<(), String> {
    let shown = [url.to_string(), format!("{url:?}")];
    let public: String = url
        .hosts()
        .iter()
        .map(|h| {
            format!(
                "{} {} ",
                h.username.as_deref().unwrap_or_default(),
                h.hostname.as_deref().unwrap_or_default()
            )
        })
        .chain(url.virtual_host().map(str::to_owned))
        .chain(url.options().iter().map(|(k, v)| format!("{k} {v}")))
        .collect();
    for host in url.hosts() {
        let Some(password) = host.password.as_ref().map(|p| p.expose()) else {
            continue;
        };
        if password.len() < 5 || public.contains(password) {
            continue;
        }
        if shown.iter().any(|s| s.contains(password)) {
            return Err(format!("a parsed URL shows its password: {}", shown[0]));
        }
    }
    Ok(())
}

#[test]
fn fuzz_transport_url() {
    let seeds = [
        "rabbit://guest:Qz7SecretPw@127.0.0.1:5672/",
        "rabbit://guest:Qz7SecretPw@h1:5672,other:Qz7SecretPw@h2/vhost?heartbeat=30",
        "amqps://us%40er:Qz7%2FSecretPw@[::1]:5671/%2F",
        "nats://user:Qz7SecretPw@n1:4222,n2:4222?codec=json",
        "kombu+memory://guest:Qz7SecretPw@/",
        "rabbit://guest:Qz7Sec/retPw@127.0.0.1:5672/",
        "rabbit://guest:Qz7Sec?retPw@127.0.0.1:5672/",
        "rabbit:guest:Qz7SecretPw@host/",
        "memory:///bus?control_exchange=x",
    ];
    let target = Fuzz::new("transport URL", 0x0421)
        .seeds(seeds.iter().map(|s| s.as_bytes().to_vec()))
        .dictionary([
            "@",
            ":",
            "/",
            "//",
            "?",
            "#",
            "%",
            "%2F",
            "%40",
            "[",
            "]",
            ",",
            "=",
            "&",
            "+",
            "rabbit:",
            "Qz7SecretPw",
        ])
        .max_len(4096);
    fuzz(target, |input| {
        let text = String::from_utf8_lossy(input);
        match bounded(envelope_bound(input.len()), || TransportUrl::parse(&text))? {
            Ok(url) => check_parsed(&url).map(|()| Verdict::Accepted),
            Err(err) => {
                let shown = format!("{err} {err:?}");
                if leaks(&shown) {
                    return Err(format!("the error shows the password: {shown}"));
                }
                Ok(Verdict::Rejected)
            }
        }
    });
}

#[test]
fn fuzz_transport_options() {
    let keys = [
        "codec",
        "control_exchange",
        "max_message_size",
        "prefetch",
        "rabbit_qos_prefetch_count",
        "heartbeat",
        "heartbeat_timeout_threshold",
        "kombu_failover_strategy",
        "rabbit_transient_queues_ttl",
        "queue_ttl",
        "ssl",
        "tls",
        "connect_timeout",
        "subject_prefix",
        "consumer_ttl",
        "notification_max_age",
    ];
    let seeds = [
        "prefetch=10&heartbeat=30",
        "max_message_size=1024&codec=json",
        "connect_timeout=5&ssl=true&kombu_failover_strategy=shuffle",
        "consumer_ttl=60&notification_max_age=3600&subject_prefix=x",
        "rabbit_transient_queues_ttl=0&queue_ttl=300&control_exchange=nova",
    ];
    // The system's root certificates (`ssl=true` on NATS) are read once per process:
    // read them before the allocation bounds apply.
    let _ = fuzzing::nats_options(&TransportUrl::parse("nats://127.0.0.1:1?ssl=true").unwrap());
    let target = Fuzz::new("transport URL options", 0x0975)
        .seeds(seeds.iter().map(|s| s.as_bytes().to_vec()))
        .dictionary(keys.iter().map(|k| format!("&{k}=")))
        .dictionary([
            "true", "false", "json", "bincode", "shuffle", "=", "&", "%", "+",
        ])
        .max_len(2048);
    fuzz(target, |input| {
        bounded(envelope_bound(input.len()), || options_check(input))?
    });
}

fn options_check(input: &[u8]) -> Result<Verdict, String> {
    {
        let query = String::from_utf8_lossy(input);
        let mut accepted = false;
        for scheme in ["memory", "rabbit", "nats"] {
            let text = format!("{scheme}://guest:{SECRET}@127.0.0.1:1/v?{query}");
            let Ok(url) = TransportUrl::parse(&text) else {
                continue;
            };
            let outcome = match scheme {
                "memory" => fuzzing::memory_options(&url),
                "rabbit" => fuzzing::rabbit_options(&url),
                _ => fuzzing::nats_options(&url),
            };
            match outcome {
                Ok(()) => accepted = true,
                Err(err) => {
                    let shown = format!("{err} {err:?}");
                    if leaks(&shown) {
                        return Err(format!(
                            "a {scheme} option error shows the password: {shown}"
                        ));
                    }
                }
            }
        }
        Ok(if accepted {
            Verdict::Accepted
        } else {
            Verdict::Rejected
        })
    }
}
