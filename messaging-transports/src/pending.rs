//! Calls waiting for replies, routed by message id: shared by the broker transports,
//! whose one reply subscription per transport serves every call.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use messaging_core::RemoteError;
use messaging_core::reply::{Replier, ReplyEvent, ReplySender};

struct Call {
    sender: ReplySender,
    /// A result that came without its ending (pre-2015 oslo servers send it apart).
    stashed: Option<Result<Bytes, RemoteError>>,
}

/// The calls of one transport that still wait for a reply.
#[derive(Default)]
pub(crate) struct PendingCalls {
    calls: Mutex<HashMap<String, Call>>,
}

impl std::fmt::Debug for PendingCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCalls").finish_non_exhaustive()
    }
}

impl PendingCalls {
    /// Registers a call waiting for `id`.
    pub(crate) fn expect(&self, id: String, sender: ReplySender) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() >= 64 && calls.len().is_power_of_two() {
            // Forget calls whose callers gave up (their receivers are gone).
            calls.retain(|_, call| !call.sender.is_closed());
        }
        calls.insert(
            id,
            Call {
                sender,
                stashed: None,
            },
        );
    }

    /// Forgets a call (its request could not be sent).
    pub(crate) fn forget(&self, id: &str) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Routes one reply message: `outcome` `None` is a heartbeat unless `ending`; a
    /// result without `ending` waits for the ending. Unknown ids are ignored.
    pub(crate) fn deliver(
        &self,
        id: &str,
        outcome: Option<Result<Bytes, RemoteError>>,
        ending: bool,
    ) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let Some(call) = calls.get_mut(id) else {
            tracing::debug!(msg_id = %id, "no call waiting for this reply");
            return;
        };
        let event = match (outcome, ending) {
            (None, false) => ReplyEvent::Heartbeat,
            (Some(outcome), true) => ReplyEvent::Reply(outcome),
            (Some(outcome), false) => {
                call.stashed = Some(outcome);
                return;
            }
            (None, true) => ReplyEvent::Reply(
                call.stashed
                    .take()
                    .unwrap_or(Ok(Bytes::from_static(b"null"))),
            ),
        };
        let _ = call.sender.send(event);
        if ending {
            calls.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messaging_core::reply::reply_channel;

    #[test]
    fn heartbeats_then_the_reply_then_nothing() {
        let calls = PendingCalls::default();
        let (tx, mut rx) = reply_channel();
        calls.expect("m".into(), tx);
        calls.deliver("m", None, false);
        calls.deliver("m", Some(Ok(Bytes::from_static(b"1"))), true);
        calls.deliver("m", None, false);
        calls.deliver("other", None, false);
        assert_eq!(rx.try_recv(), Some(Ok(ReplyEvent::Heartbeat)));
        assert_eq!(
            rx.try_recv(),
            Some(Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"1")))))
        );
        assert!(
            matches!(rx.try_recv(), Some(Err(_))),
            "the call was forgotten after its reply"
        );
    }

    #[test]
    fn an_old_style_result_waits_for_its_ending() {
        let calls = PendingCalls::default();
        let (tx, mut rx) = reply_channel();
        calls.expect("m".into(), tx);
        calls.deliver("m", Some(Ok(Bytes::from_static(b"7"))), false);
        assert_eq!(rx.try_recv(), None);
        calls.deliver("m", None, true);
        assert_eq!(
            rx.try_recv(),
            Some(Ok(ReplyEvent::Reply(Ok(Bytes::from_static(b"7")))))
        );
    }
}
