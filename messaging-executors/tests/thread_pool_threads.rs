//! The thread pool spawns workers on demand and joins every one in `wait()`. Alone in
//! its own test binary, because it counts the process's threads by name.

use std::time::Duration;

use messaging_core::dispatch::block_on;
use messaging_core::{Message, SendOptions, Server, Subscription, Target, Transport};
use messaging_executors::ThreadPoolExecutor;
use messaging_testkit::{Recorder, fake_transport, within};

const STEP: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn thread_pool_spawns_workers_on_demand_and_joins_them_all() {
    within(Duration::from_secs(60), "on-demand workers", || {
        let recorder = Recorder::new();
        let (transport, _fake) = fake_transport();
        let server = Server::builder(
            transport.clone(),
            Subscription::Rpc(Target::new("t").with_server("s")),
            recorder.dispatcher(),
            ThreadPoolExecutor::new(),
        )
        .build()
        .unwrap();
        let cast = |body: String| {
            block_on(transport.cast(
                &Target::new("t"),
                Message::new(body),
                &SendOptions::default(),
            ))
            .unwrap()
        };
        let before = threads_named("messaging-worke");
        server.start().unwrap();
        std::thread::sleep(SETTLE);
        assert_eq!(
            threads_named("messaging-worke"),
            before,
            "an idle pool has no workers"
        );
        for i in 0..5 {
            cast(format!("gate:{i}"));
        }
        assert!(recorder.wait_started(5, STEP));
        assert!(threads_named("messaging-worke") >= before + 5);
        server.stop().unwrap();
        recorder.open_gate();
        server.wait().unwrap();
        // A joined thread has finished running, but the kernel may list it under
        // /proc for a moment longer (the joiner is woken before the task is reaped):
        // give it that moment. A worker still running would stay listed.
        let joined = std::time::Instant::now() + Duration::from_secs(2);
        while threads_named("messaging-worke") != before && std::time::Instant::now() < joined {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            threads_named("messaging-worke"),
            before,
            "wait() joined every worker"
        );
    });
}
