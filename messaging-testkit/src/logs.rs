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

/// One captured span (its name and the fields it was created with).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapturedSpan {
    /// Its name, e.g. `rpc.call`.
    pub name: String,
    /// Its fields, formatted with `Debug`.
    pub fields: Vec<(String, String)>,
}

impl CapturedSpan {
    /// The value of one field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Records every event and span emitted on the current thread while its guard lives
/// ([`start`](LogCapture::start)), or in the whole process
/// ([`global`](LogCapture::global), for what handlers log on executor threads).
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
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
}

impl LogCapture {
    /// Starts capturing on this thread; capture ends when the guard is dropped.
    pub fn start() -> (LogCapture, DefaultGuard) {
        let capture = LogCapture::default();
        let guard = tracing::subscriber::set_default(capture.subscriber());
        (capture, guard)
    }

    /// Also captures, into this capture, what the current thread logs while the guard
    /// lives: to watch another thread's logs from the test thread.
    ///
    /// ```
    /// let logs = messaging_testkit::LogCapture::default();
    /// let theirs = logs.clone();
    /// std::thread::spawn(move || {
    ///     let _guard = theirs.attach();
    ///     tracing::warn!("possible hang");
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(logs.count(tracing::Level::WARN, "possible hang"), 1);
    /// ```
    pub fn attach(&self) -> DefaultGuard {
        tracing::subscriber::set_default(self.subscriber())
    }

    /// Captures everything the process logs from now on, on every thread. The first
    /// call installs the global subscriber; later calls return the same capture. Use it
    /// in a test binary of its own: a process has one global subscriber.
    pub fn global() -> LogCapture {
        static GLOBAL: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let capture = LogCapture::default();
                if tracing::subscriber::set_global_default(capture.subscriber()).is_err() {
                    panic!("another global tracing subscriber is already installed");
                }
                capture
            })
            .clone()
    }

    fn subscriber(&self) -> CaptureSubscriber {
        CaptureSubscriber {
            events: self.events.clone(),
            spans: self.spans.clone(),
            next_span: AtomicU64::new(1),
        }
    }

    /// Every span so far.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
    spans: Arc<Mutex<Vec<CapturedSpan>>>,
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

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CapturedSpan {
                name: attributes.metadata().name().to_owned(),
                fields: fields.others,
            });
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
