//! Every executor passes the conformance suite: oslo's `TestServerLocking`, the seed's
//! scenarios and the pinned oslo defects (see `messaging_testkit::conformance`).

mod blocking {
    messaging_testkit::executor_conformance!(messaging_executors::BlockingExecutor::new());
}

mod thread_pool {
    messaging_testkit::executor_conformance!(messaging_executors::ThreadPoolExecutor::new());
}

/// A pool small enough that its queue fills and its workers run out.
mod thread_pool_tiny {
    messaging_testkit::executor_conformance!(
        messaging_executors::ThreadPoolExecutor::new()
            .with_max_workers(2)
            .with_queue_capacity(1)
    );
}

mod event_loop {
    messaging_testkit::executor_conformance!(
        messaging_executors::EventLoopExecutor::new().with_worker_threads(2)
    );
}
