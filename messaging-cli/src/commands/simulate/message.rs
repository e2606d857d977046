//! The simulator's message, as oslo's `tools/simulator.py` sends it: the namedtuple
//! `Message(seq, cargo, client_ts, server_ts, return_ts)`, which oslo's JSON
//! serialiser turns into a list; timestamps are seconds since the epoch (`time.time()`).
//!
//! * RPC: the keyword argument `message` of `info(ctxt, message)`; the server stamps
//!   `server_ts` and returns the message; oslo's client stamps `return_ts`.
//! * Notifications: the payload of `info({}, 'compute.start', message)`.
//! * `--sync`: `sync_start` / `sync_done` with `message={"id": CLIENT_ID}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeTuple, Serializer};
use serde_json::Value;

use super::stats::micros;

/// Seconds since the epoch, like Python's `time.time()`.
pub(super) fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A message as a client sends it: `[seq, cargo, client_ts, 0, 0]`.
#[derive(Debug)]
pub(super) struct Outgoing<'a> {
    pub(super) seq: u64,
    pub(super) cargo: &'a str,
    pub(super) client_ts: f64,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(5)?;
        tuple.serialize_element(&self.seq)?;
        tuple.serialize_element(self.cargo)?;
        tuple.serialize_element(&self.client_ts)?;
        tuple.serialize_element(&0)?; // server_ts
        tuple.serialize_element(&0)?; // return_ts
        tuple.end()
    }
}

/// The keyword arguments of `info` (and of `sync_start` / `sync_done`).
#[derive(Debug, serde::Serialize)]
pub(super) struct InfoKwargs<'a, M> {
    pub(super) message: &'a M,
}

/// `sync_start` / `sync_done`'s message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SyncMessage {
    pub(super) id: String,
}

/// The sequence number of a simulator message, in either form.
pub(super) fn seq(message: &Value) -> Option<u64> {
    match message {
        Value::Array(items) => items.first()?.as_u64(),
        Value::Object(map) => map.get("seq")?.as_u64(),
        _ => None,
    }
}

/// Stamps `server_ts` into a simulator message; returns its payload bytes and the
/// one-way latency (µs) from `client_ts`, or `None` if it is not a simulator message.
/// Takes oslo's list form and the object form `{seq, cargo, client_ts, server_ts}`.
pub(super) fn stamp(message: &mut Value, now: f64) -> Option<(usize, Option<u32>)> {
    let (bytes, client_ts) = match message {
        Value::Object(map) => {
            let bytes = map.get("cargo")?.as_str()?.len();
            let client_ts = map.get("client_ts").and_then(Value::as_f64);
            map.insert("server_ts".to_owned(), now.into());
            (bytes, client_ts)
        }
        // oslo's Message(seq, cargo, client_ts, server_ts, return_ts).
        Value::Array(items) if items.len() >= 4 => {
            let bytes = items[1].as_str()?.len();
            let client_ts = items[2].as_f64();
            items[3] = now.into();
            (bytes, client_ts)
        }
        _ => return None,
    };
    let latency = client_ts
        .filter(|&t| t > 0.0)
        .and_then(|t| Duration::try_from_secs_f64((now - t).max(0.0)).ok())
        .map(micros);
    Some((bytes, latency))
}

/// Checks a call's reply against the message sent: the same `seq`, `server_ts`
/// stamped. `Err` says what is wrong.
pub(super) fn check_reply(reply: &Value, sent_seq: u64) -> Result<(), String> {
    let server_ts = match reply {
        Value::Array(items) if items.len() >= 4 => items[3].as_f64(),
        Value::Object(map) => map.get("server_ts").and_then(Value::as_f64),
        _ => {
            return Err(format!(
                "the reply is not a simulator message: {}",
                kind(reply)
            ));
        }
    };
    match seq(reply) {
        Some(seq) if seq == sent_seq => {}
        Some(seq) => return Err(format!("sent seq {sent_seq}, the reply has {seq}")),
        None => return Err("the reply has no seq".to_owned()),
    }
    match server_ts {
        Some(ts) if ts > 0.0 => Ok(()),
        _ => Err(format!(
            "the reply to seq {sent_seq} has no server_ts: not stamped by a simulator server"
        )),
    }
}

/// The JSON type of `value`, for errors (never the value: it may be megabytes).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list too short",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outgoing_is_oslos_namedtuple_as_a_list() {
        let message = Outgoing {
            seq: 7,
            cargo: "ab",
            client_ts: 1.5,
        };
        assert_eq!(
            serde_json::to_value(InfoKwargs { message: &message }).unwrap(),
            json!({"message": [7, "ab", 1.5, 0, 0]})
        );
    }

    #[test]
    fn stamp_reads_both_message_forms() {
        let mut object = json!({"seq": 1, "cargo": "abc", "client_ts": 100.0, "server_ts": 0});
        let (bytes, latency) = stamp(&mut object, 100.25).unwrap();
        assert_eq!((bytes, latency), (3, Some(250_000)));
        assert_eq!(object["server_ts"], 100.25);
        let mut list = json!([1, "abcd", 100.0, 0, 0]);
        assert_eq!(stamp(&mut list, 100.0), Some((4, Some(0))));
        assert_eq!(list[3], 100.0);
        // A client clock ahead of the server's: zero, not a panic.
        let mut ahead = json!({"cargo": "", "client_ts": 200.0});
        assert_eq!(stamp(&mut ahead, 100.0), Some((0, Some(0))));
        let mut nan = json!({"cargo": "", "client_ts": "x"});
        assert_eq!(stamp(&mut nan, 100.0), Some((0, None)));
        assert_eq!(stamp(&mut json!(7), 1.0), None);
        assert_eq!(stamp(&mut json!({"seq": 1}), 1.0), None);
        assert_eq!(stamp(&mut json!([1, 2, 3, 4, 5]), 1.0), None);
    }

    #[test]
    fn replies_must_echo_the_seq_stamped() {
        assert_eq!(check_reply(&json!([3, "x", 1.0, 2.0, 0]), 3), Ok(()));
        assert_eq!(
            check_reply(&json!({"seq": 3, "cargo": "x", "server_ts": 2.0}), 3),
            Ok(())
        );
        let wrong = check_reply(&json!([4, "x", 1.0, 2.0, 0]), 3).unwrap_err();
        assert_eq!(wrong, "sent seq 3, the reply has 4");
        let unstamped = check_reply(&json!([3, "x", 1.0, 0, 0]), 3).unwrap_err();
        assert!(unstamped.contains("no server_ts"), "{unstamped}");
        assert!(check_reply(&Value::Null, 3).unwrap_err().contains("null"));
        assert!(
            check_reply(&json!([3]), 3)
                .unwrap_err()
                .contains("too short")
        );
        assert_eq!(seq(&json!({"seq": 9})), Some(9));
        assert_eq!(seq(&json!("9")), None);
    }
}
