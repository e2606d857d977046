//! The NATS side of [`crate::fuzzing`].

use bytes::{BufMut, Bytes, BytesMut};
use messaging_core::{TransportError, TransportUrl};

use super::{frame, options::Options};

pub(crate) fn options(url: &TransportUrl) -> Result<(), TransportError> {
    Options::from_url(url).map(drop)
}

pub(crate) fn bodies(input: &[u8]) -> Vec<Result<String, String>> {
    let Some((&shape, rest)) = input.split_first() else {
        return Vec::new();
    };
    let body = if shape & 1 == 0 {
        let (split, rest) = match rest.split_first() {
            Some((&split, rest)) => (usize::from(split).min(rest.len()), rest),
            None => (0, rest),
        };
        let split = if split == 0 { rest.len() } else { split };
        let (header, payload) = rest.split_at(split);
        let mut out = BytesMut::with_capacity(4 + rest.len());
        out.put_u32(u32::try_from(header.len()).unwrap_or(u32::MAX));
        out.put_slice(header);
        out.put_slice(payload);
        out.freeze()
    } else {
        Bytes::copy_from_slice(rest)
    };
    vec![
        frame::decode_message(&body)
            .map(|m| format!("{m:?}"))
            .map_err(|e| e.to_string()),
        frame::decode_reply(&body)
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string()),
    ]
}
