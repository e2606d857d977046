//! The lifecycle a broker listener shares: a consumer task on the transport's runtime
//! feeding the listener's [`Buffer`](crate::buffer::Buffer), told through a phase when
//! to stop taking messages and when to clean up, and joined (or, after 10 s, aborted)
//! by `cleanup()`.

use std::sync::Mutex;
use std::time::Duration;

use messaging_core::dispatch::block_on;
use messaging_core::timer;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a listener is in its life; the consumer task watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Consuming.
    Running,
    /// `stop()`: take nothing new (what happens to the rest is the transport's call).
    Stopped,
    /// `cleanup()`: release everything and end.
    Cleanup,
}

/// Resolves once the listener is stopped (or cleaned up).
pub(crate) async fn stopped(phases: &mut watch::Receiver<Phase>) {
    let _ = phases.wait_for(|p| *p != Phase::Running).await;
}

/// Resolves once the listener is cleaned up.
pub(crate) async fn cleaned_up(phases: &mut watch::Receiver<Phase>) {
    let _ = phases.wait_for(|p| *p == Phase::Cleanup).await;
}

/// A listener's consumer task and the phase it watches.
pub(crate) struct ConsumerTask {
    phase: watch::Sender<Phase>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ConsumerTask {
    /// Spawns `consume` on `runtime`, giving it the phase to watch.
    pub(crate) fn spawn<F>(
        runtime: &Handle,
        consume: impl FnOnce(watch::Receiver<Phase>) -> F,
    ) -> ConsumerTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (phase, phases) = watch::channel(Phase::Running);
        let task = runtime.spawn(consume(phases));
        ConsumerTask {
            phase,
            task: Mutex::new(Some(task)),
        }
    }

    /// Running → Stopped; later calls change nothing.
    pub(crate) fn stop(&self) {
        self.phase.send_if_modified(|phase| {
            let change = *phase == Phase::Running;
            if change {
                *phase = Phase::Stopped;
            }
            change
        });
    }

    /// Tells the task to clean up and joins it, aborting it after 10 s; later calls
    /// return at once.
    pub(crate) fn cleanup(&self, listener: &str) {
        self.stop();
        let _ = self.phase.send(Phase::Cleanup);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if block_on(timer::timeout(Duration::from_secs(10), task)).is_err() {
                tracing::warn!(listener, "the consumer did not end in 10 s; aborted");
                abort.abort();
            }
        }
    }

    /// Whether [`cleanup`](ConsumerTask::cleanup) has not run yet.
    pub(crate) fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}
