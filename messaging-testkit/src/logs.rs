//! Capturing `tracing` events in a test, to assert on what was logged.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapturedEvent {
    /// Its level.
    pub level: Level,
    /// Its target (module path unless set).
    pub target: String,
    /// Its `message` field.
    pub message: String,
    /// Its other fields, formatted with `Debug`.
    pub fields: Vec<(String, String)>,
}

/// Records every event emitted on the current thread while its guard lives.
///
/// # Examples
///
/// ```
/// let (logs, _guard) = messaging_testkit::LogCapture::start();
/// tracing::warn!(server = "s1", "possible hang: stop() is waiting");
/// assert_eq!(logs.count(tracing::Level::WARN, "possible hang"), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogCapture {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
}

impl LogCapture {
    /// Starts capturing on this thread; capture ends when the guard is dropped.
    pub fn start() -> (LogCapture, DefaultGuard) {
        let capture = LogCapture::default();
        let subscriber = CaptureSubscriber {
            events: capture.events.clone(),
            next_span: AtomicU64::new(1),
        };
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many events at `level` have a message containing `text`.
    pub fn count(&self, level: Level, text: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.level == level && e.message.contains(text))
            .count()
    }
}

struct CaptureSubscriber {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
    next_span: AtomicU64,
}

#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others
                .push((field.name().to_owned(), value.to_owned()));
        }
    }
}

impl Subscriber for CaptureSubscriber {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CapturedEvent {
                level: *event.metadata().level(),
                target: event.metadata().target().to_owned(),
                message: fields.message,
                fields: fields.others,
            });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
