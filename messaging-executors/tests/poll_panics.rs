//! Every executor logs a listener's panicking poll as an error and polls again. Alone in
//! its own test binary, because it captures the process's logs (pollers log on their
//! own threads).

use std::time::Duration;

use messaging_core::dispatch::block_on;
use messaging_core::{Executor, Message, SendOptions, Server, Subscription, Target, Transport};
use messaging_executors::{BlockingExecutor, EventLoopExecutor, ThreadPoolExecutor};
use messaging_testkit::{LogCapture, Recorder, ServerThread, fake_transport, within};
use tracing::Level;

const STEP: Duration = Duration::from_secs(20);

#[test]
fn a_panicking_poll_is_logged_as_an_error_and_polled_again_by_every_executor() {
    let logs = LogCapture::global();
    within(Duration::from_secs(60), "poll panics", move || {
        let executors: [Box<dyn Executor>; 3] = [
            Box::new(BlockingExecutor::new()),
            Box::new(ThreadPoolExecutor::new()),
            Box::new(EventLoopExecutor::new().with_worker_threads(1)),
        ];
        for executor in executors {
            let name = executor.name();
            let (transport, fake) = fake_transport();
            let recorder = Recorder::new();
            let server = Server::builder(
                transport.clone(),
                Subscription::Rpc(Target::new("t").with_server("s")),
                recorder.dispatcher(),
                executor,
            )
            .build()
            .unwrap();
            fake.panic_next_polls(2);
            let running = ServerThread::spawn(server).unwrap();
            block_on(transport.cast(
                &Target::new("t"),
                Message::new("after"),
                &SendOptions::default(),
            ))
            .unwrap();
            assert!(
                recorder.wait_processed(1, STEP),
                "{name}: the server polled again after the panics"
            );
            running.stop_and_wait().unwrap();
            let logged = logs
                .events()
                .into_iter()
                .filter(|e| {
                    e.level == Level::ERROR
                        && e.message.contains("polling the listener failed")
                        && e.fields.iter().any(|(k, v)| k == "executor" && v == name)
                        && e.fields.iter().any(|(k, v)| {
                            k == "error" && v.contains("the listener panicked while polling")
                        })
                })
                .count();
            assert_eq!(logged, 2, "{name}: one error per panicking poll");
        }
    });
}
