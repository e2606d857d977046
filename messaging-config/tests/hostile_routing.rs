//! The routing driver's `routing_config` YAML as a hostile (or careless) deployer
//! writes it: alias bombs, deep nesting, huge and endless files, roots that are not
//! mappings, bytes that are not UTF-8, and patterns that make naive wildcard matchers
//! backtrack. Reading must end quickly with a clear error; matching must stay cheap.
//! Tests that measure print what they measured to stderr.

mod support;

use std::time::{Duration, Instant};

use messaging_core::Priority;
use messaging_core::notify::{NotifyDriver, Pattern, RoutingError, RoutingTable};
use messaging_testkit::within;
use support::Scratch;

/// How long reading any of these may take (debug build, a loaded machine).
const QUICK: Duration = Duration::from_secs(5);

fn parse_within(what: &str, text: String) -> Result<RoutingTable, RoutingError> {
    let started = Instant::now();
    let result = within(QUICK, what, move || RoutingTable::from_yaml_str(&text));
    eprintln!("{what}: {:?}", started.elapsed());
    result
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        yaml.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    yaml.push_str("g:\n  log:\n    accepted_events: *a9\n");
    let error = parse_within("10^10 aliases", yaml).unwrap_err();
    assert!(matches!(error, RoutingError::Syntax(_)), "{error}");
}

#[test]
fn deep_flow_nesting_is_refused_quickly() {
    for text in [
        "[".repeat(1 << 18),
        "{".repeat(1 << 18),
        "[{".repeat(1 << 17),
    ] {
        let error = parse_within("256 Ki levels of flow nesting", text).unwrap_err();
        assert!(error.to_string().contains("nested"), "{error}");
    }
    // Brackets inside quotes and comments do not count.
    let quoted = format!(
        "g:\n  log:\n    accepted_events: ['{}', \"{}\"] # {}\n",
        "[".repeat(500),
        "{".repeat(500),
        "[".repeat(500)
    );
    let table = parse_within("brackets in quotes", quoted).unwrap();
    assert_eq!(
        table.drivers_for(&"[".repeat(500), Priority::Info),
        [NotifyDriver::Log]
    );
}

#[test]
fn deep_block_nesting_is_refused() {
    let error = parse_within("nested block lists", "- ".repeat(1 << 18)).unwrap_err();
    assert!(matches!(error, RoutingError::Syntax(_)), "{error}");
}

#[test]
fn a_routing_config_over_1_mib_is_refused_without_being_read() {
    let scratch = Scratch::new("routing-huge");
    let path = scratch.file("routing.yaml", "g:\n  log: {}\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    for path in [path, "/dev/zero".into()] {
        let started = Instant::now();
        let shown = path.clone();
        let error = within(QUICK, "a huge routing config", move || {
            RoutingTable::from_yaml_file(&path)
        })
        .unwrap_err();
        eprintln!("{}: {:?}", shown.display(), started.elapsed());
        assert!(matches!(error, RoutingError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
    }
    let mut text = String::from("g:\n  log:\n    accepted_events:\n");
    while text.len() <= 1 << 20 {
        text.push_str("      - 'compute.instance.*.end'\n");
    }
    let error = parse_within("1 MiB of patterns", text).unwrap_err();
    assert!(matches!(error, RoutingError::TooLarge { .. }), "{error}");
}

#[test]
fn a_routing_config_just_under_1_mib_is_read() {
    let mut text = String::from("g:\n  log:\n    accepted_events:\n");
    let line = "      - 'compute.instance.*.end'\n";
    while text.len() + line.len() < 1 << 20 {
        text.push_str(line);
    }
    let table = parse_within("almost 1 MiB of patterns", text).unwrap();
    assert_eq!(
        table.drivers_for("compute.instance.create.end", Priority::Info),
        [NotifyDriver::Log]
    );
}

#[test]
fn roots_that_are_not_mappings_and_bytes_that_are_not_utf8_are_errors() {
    for text in [
        "7",
        "[]",
        "'s'",
        "!!binary aGVsbG8=",
        "? [a]\n: b\n",
        "g: !t {log: {}}",
    ] {
        let error = RoutingTable::from_yaml_str(text).unwrap_err();
        assert!(
            matches!(error, RoutingError::Invalid(_)),
            "{text:?}: {error}"
        );
    }
    assert!(matches!(
        RoutingTable::from_yaml_str("\0"),
        Err(RoutingError::Syntax(_))
    ));
    let scratch = Scratch::new("routing-bytes");
    let path = scratch.path("r.yaml");
    std::fs::write(&path, b"g:\n  log: {accepted_events: [\"\xff\xfe\"]}\n").unwrap();
    let error = RoutingTable::from_yaml_file(&path).unwrap_err();
    assert!(matches!(error, RoutingError::Read { .. }), "{error}");
}

#[test]
fn star_heavy_patterns_match_in_polynomial_time() {
    // `*a*a*a...` is exponential for a backtracking matcher; here it is linear-ish.
    let pattern = Pattern::new(&"*a".repeat(5000));
    let text = "a".repeat(4999) + &"b".repeat(100_000);
    let started = Instant::now();
    assert!(!pattern.matches(&text));
    let took = started.elapsed();
    eprintln!("*a x5000 against 105 KB: {took:?}");
    assert!(took < QUICK, "{took:?}");
    let table = RoutingTable::from_yaml_str(&format!(
        "g:\n  log:\n    accepted_events: ['{}']\n",
        "*a".repeat(5000)
    ))
    .unwrap();
    let started = Instant::now();
    assert!(table.drivers_for(&text, Priority::Info).is_empty());
    assert!(started.elapsed() < QUICK);
}
