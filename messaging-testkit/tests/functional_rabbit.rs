//! The functional suite on RabbitMQ, when `MESSAGING_TEST_RABBIT_URL` is set (`.ci/run`
//! sets it); otherwise each test says it was skipped. Queues expire after 10 minutes
//! unused (`queue_ttl`), so test runs leave nothing behind on the broker. The suite runs
//! twice: with oslo's defaults, and (module `quorum`) with every queue a quorum queue.

use messaging_testkit::with_option;

fn url() -> Option<String> {
    let url = std::env::var("MESSAGING_TEST_RABBIT_URL").ok()?;
    Some(with_option(&url, "queue_ttl", "600"))
}

messaging_testkit::functional_suite!(url());

/// `rabbit_quorum_queue` and `rabbit_transient_quorum_queue`: topic, server, reply,
/// fanout and notification queues are quorum queues, their exchanges durable — under
/// a control exchange of their own, since the shared broker's `openstack` is not.
mod quorum {
    fn url() -> Option<String> {
        Some(messaging_testkit::with_options(
            &super::url()?,
            &[
                ("rabbit_quorum_queue", "true"),
                ("rabbit_transient_quorum_queue", "true"),
                ("control_exchange", "openstack_quorum_tests"),
            ],
        ))
    }

    messaging_testkit::functional_suite!(url());
}
