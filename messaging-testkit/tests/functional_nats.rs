//! The functional suite on NATS, when `MESSAGING_TEST_NATS_URL` is set (`.ci/run` sets
//! it); otherwise each test says it was skipped. Durable consumers expire after 10
//! minutes unused, so test runs leave nothing behind on the server.

fn url() -> Option<String> {
    let url = std::env::var("MESSAGING_TEST_NATS_URL").ok()?;
    Some(messaging_testkit::with_option(&url, "consumer_ttl", "600"))
}

messaging_testkit::functional_suite!(url());
