//! The functional suite on RabbitMQ, when `MESSAGING_TEST_RABBIT_URL` is set (`.ci/run`
//! sets it); otherwise each test says it was skipped. Queues expire after 10 minutes
//! unused (`queue_ttl`), so test runs leave nothing behind on the broker.

fn url() -> Option<String> {
    let url = std::env::var("MESSAGING_TEST_RABBIT_URL").ok()?;
    Some(messaging_testkit::with_option(&url, "queue_ttl", "600"))
}

messaging_testkit::functional_suite!(url());
