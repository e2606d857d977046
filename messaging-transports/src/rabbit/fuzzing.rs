//! The RabbitMQ side of [`crate::fuzzing`].

use messaging_core::{TransportError, TransportUrl};

use super::{options::Options, wire};

pub(crate) fn options(url: &TransportUrl) -> Result<(), TransportError> {
    Options::from_url(url).map(drop)
}

pub(crate) fn bodies(input: &[u8]) -> Vec<Result<String, String>> {
    let Some((&shape, rest)) = input.split_first() else {
        return Vec::new();
    };
    let body = if shape & 1 == 0 {
        let inner = String::from_utf8_lossy(rest);
        let mut out = br#"{"oslo.version": "2.0", "oslo.message": "#.to_vec();
        out.extend(serde_json::to_vec(&inner).unwrap_or_default());
        out.push(b'}');
        out
    } else {
        rest.to_vec()
    };
    vec![
        wire::decode_request(&body)
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string()),
        wire::decode_reply(&body)
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string()),
        wire::decode_notification(&body)
            .map(|n| format!("{n:?}"))
            .map_err(|e| e.to_string()),
        Ok(format!(
            "{:?}",
            wire::decode_failure(&String::from_utf8_lossy(rest))
        )),
    ]
}
