//! [`Codec`]: how message bodies are encoded. Two implementations behind one trait:
//! [`Bincode`] (bincode 2, compact and fast, for Rust-to-Rust) and [`Json`]
//! (self-describing; what oslo.messaging speaks, and what dynamic arguments need).
//! [`CodecKind`] names one at run time; every [`Message`](crate::Message) records the
//! codec of its body, so a receiver always decodes with the sender's codec.
//!
//! bincode is not self-describing: values it encodes must not rely on
//! `#[serde(skip_serializing_if)]`, `flatten`, `untagged` or internally tagged enums,
//! and `serde_json::Value` cannot be decoded from it. Use the JSON codec for dynamic
//! values (`?codec=json` on the transport URL); [`bincode_can_decode`] tells which
//! types need it, and servers refuse to start a handler bincode cannot feed.
//!
//! # Hostile input
//!
//! Bodies come from the network, so decoding is bounded by the body's size: a length
//! prefix can never make bincode allocate more than [`bincode_claim_limit`] of the
//! body's length (about [`MAX_CLAIM_FACTOR`] times it, rounded up to a power-of-16
//! tier, at least 64 KiB), however large the length it claims. A transport bounds the body's size itself (its
//! `max_message_size`) before decoding. Malformed bodies are [`CodecError`]s, never
//! panics. JSON nesting is limited to 128 levels (serde_json's limit).

mod depth;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A body could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{codec} could not {operation} the body: {message}")]
pub struct CodecError {
    codec: &'static str,
    operation: &'static str,
    message: String,
}

impl CodecError {
    /// The decoder's message, which may quote the input, is cut and escaped: bodies
    /// come from the network and errors reach logs.
    fn new(codec: &'static str, operation: &'static str, message: impl fmt::Display) -> Self {
        CodecError {
            codec,
            operation,
            message: crate::Untrusted::with_limit(&message.to_string(), 200).to_string(),
        }
    }
}

/// Encodes and decodes message bodies.
pub trait Codec {
    /// The codec's name (`bincode`, `json`).
    fn name(&self) -> &'static str;
    /// Encodes a value.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError>;
    /// Decodes a value; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// bincode 2 with its standard configuration (varint, little-endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bincode;

/// JSON (serde_json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

/// What bincode may claim (and so allocate) while decoding, as a multiple of the
/// body's length: a value's in-memory size is at most 16 times its encoded size (a
/// `u128` varint takes one byte), so no valid body needs more.
pub const MAX_CLAIM_FACTOR: usize = 16;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// bincode's byte limit bounds what a decoder may claim before allocating. It is a
/// const generic, so the limit is picked from a few tiers, each 16 times the last.
const TIERS: [usize; 5] = [64 * KIB, MIB, 16 * MIB, 256 * MIB, u32::MAX as usize];

/// The most bincode may claim (and so allocate) while decoding `len` bytes: the
/// smallest limit tier that any valid body of this length fits in, at most
/// `256 × len + 64 KiB` for bodies up to 16 MiB.
pub fn bincode_claim_limit(len: usize) -> usize {
    let need = len.saturating_mul(MAX_CLAIM_FACTOR).saturating_add(4 * KIB);
    TIERS
        .into_iter()
        .find(|tier| need <= *tier)
        .unwrap_or(TIERS[TIERS.len() - 1])
}

fn bincode_decode<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    match bincode_claim_limit(bytes.len()) {
        limit if limit == TIERS[0] => limited(bytes, standard().with_limit::<{ TIERS[0] }>()),
        limit if limit == TIERS[1] => limited(bytes, standard().with_limit::<{ TIERS[1] }>()),
        limit if limit == TIERS[2] => limited(bytes, standard().with_limit::<{ TIERS[2] }>()),
        limit if limit == TIERS[3] => limited(bytes, standard().with_limit::<{ TIERS[3] }>()),
        // Bodies over 16 MiB: a transport's size limit is what bounds these.
        _ => limited(bytes, standard().with_limit::<{ TIERS[4] }>()),
    }
}

/// Decodes under `config`'s byte limit and [`depth::MAX_DEPTH`] levels of nesting,
/// returning the value and how many bytes it took.
fn limited<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<(T, usize), bincode::error::DecodeError> {
    let mut tail = Tail { rest: bytes };
    let mut decoder = bincode::serde::OwnedSerdeDecoder::from_reader(&mut tail, config);
    let left = std::cell::Cell::new(depth::MAX_DEPTH);
    let value = T::deserialize(depth::Limited::new(decoder.as_deserializer(), &left))?;
    Ok((value, bytes.len() - tail.rest.len()))
}

/// A bincode reader over a slice that tells what it left unread.
struct Tail<'a> {
    rest: &'a [u8],
}

impl bincode::de::read::Reader for Tail<'_> {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        let Some((head, rest)) = self.rest.split_at_checked(bytes.len()) else {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.rest.len(),
            });
        };
        bytes.copy_from_slice(head);
        self.rest = rest;
        Ok(())
    }

    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.rest.get(..n)
    }

    fn consume(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
    }
}

/// Whether bincode can decode a `T` at all: false for types that need a
/// self-describing format (`serde_json::Value`, `#[serde(flatten)]`, untagged or
/// internally tagged enums — whatever calls serde's `deserialize_any`). Such types
/// need the JSON codec.
///
/// The check decodes a `T` from zeros (the first variant of every enum, `None`,
/// empty collections), so it finds a dynamic value that sits on that path, which is
/// where a payload or argument type usually keeps it; one behind a `Some` or a later
/// enum variant is only found when a message carries it (a decode error then).
///
/// # Examples
///
/// ```
/// use messaging_core::codec::bincode_can_decode;
///
/// #[derive(serde::Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// assert!(bincode_can_decode::<Add>());
/// assert!(!bincode_can_decode::<serde_json::Value>());
/// ```
pub fn bincode_can_decode<T: DeserializeOwned>() -> bool {
    use bincode::error::DecodeError;
    use bincode::serde::DecodeError as SerdeError;
    const ZEROS: [u8; 1024] = [0; 1024];
    !matches!(
        bincode_decode::<T>(&ZEROS),
        Err(DecodeError::Serde(
            SerdeError::AnyNotSupported | SerdeError::IgnoredAnyNotSupported
        ))
    )
}

/// A handler takes a type the transport's codec cannot decode: a server with it would
/// drop every message (notifications) or fail every call, so it is not built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{handler} takes a type {codec} cannot decode (it needs a self-describing format: \
     serde_json::Value, #[serde(flatten)], untagged enums...): open the transport with `?codec=json`"
)]
pub struct UnsupportedCodec {
    /// Which handler, e.g. `the info notification handler`.
    pub handler: String,
    /// The transport's codec.
    pub codec: CodecKind,
}

impl Codec for Bincode {
    fn name(&self) -> &'static str {
        "bincode"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map(Bytes::from)
            .map_err(|e| CodecError::new("bincode", "encode", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, read) = bincode_decode(bytes).map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => CodecError::new(
                "bincode",
                "decode",
                format!(
                    "a length in the body claims more than its {} bytes can hold",
                    bytes.len()
                ),
            ),
            bincode::error::DecodeError::Serde(
                bincode::serde::DecodeError::AnyNotSupported
                | bincode::serde::DecodeError::IgnoredAnyNotSupported,
            ) => CodecError::new(
                "bincode",
                "decode",
                "the type needs a self-describing format (serde_json::Value, flatten, \
                 untagged enums): use the JSON codec (`?codec=json`)",
            ),
            e => CodecError::new("bincode", "decode", e),
        })?;
        if read != bytes.len() {
            return Err(CodecError::new(
                "bincode",
                "decode",
                format!(
                    "{} trailing bytes (does the type match the sender's?)",
                    bytes.len() - read
                ),
            ));
        }
        Ok(value)
    }
}

impl Codec for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| CodecError::new("json", "encode", e))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new("json", "decode", e))
    }
}

/// A codec chosen at run time (per transport, from the URL option `codec`).
///
/// # Examples
///
/// ```
/// use messaging_core::codec::{Codec, CodecKind};
///
/// let json: CodecKind = "json".parse()?;
/// let bytes = json.encode(&serde_json::json!({"a": 1}))?;
/// assert_eq!(bytes, r#"{"a":1}"#);
/// let back: serde_json::Value = json.decode(&bytes)?;
/// assert_eq!(back["a"], 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// [`Bincode`]
    #[default]
    Bincode,
    /// [`Json`]
    Json,
}

impl Codec for CodecKind {
    fn name(&self) -> &'static str {
        match self {
            CodecKind::Bincode => Bincode.name(),
            CodecKind::Json => Json.name(),
        }
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CodecError> {
        match self {
            CodecKind::Bincode => Bincode.encode(value),
            CodecKind::Json => Json.encode(value),
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            CodecKind::Bincode => Bincode.decode(bytes),
            CodecKind::Json => Json.decode(bytes),
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown codec name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec `{0}` (expected bincode or json)")]
pub struct UnknownCodec(pub String);

impl FromStr for CodecKind {
    type Err = UnknownCodec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bincode" => Ok(CodecKind::Bincode),
            "json" => Ok(CodecKind::Json),
            _ => Err(UnknownCodec(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Args {
        a: i64,
        b: Option<String>,
        list: Vec<u8>,
    }

    #[test]
    fn both_codecs_round_trip_typed_values() {
        let args = Args {
            a: -3,
            b: Some("x".into()),
            list: vec![1, 2],
        };
        for codec in [CodecKind::Bincode, CodecKind::Json] {
            let bytes = codec.encode(&args).unwrap();
            assert_eq!(codec.decode::<Args>(&bytes).unwrap(), args, "{codec}");
        }
    }

    #[test]
    fn a_type_mismatch_is_a_typed_error_not_a_panic() {
        let bytes = Bincode.encode(&(1u8, 2u8, 3u8)).unwrap();
        let err = Bincode.decode::<u8>(&bytes).unwrap_err();
        assert!(err.to_string().contains("trailing bytes"), "{err}");
        assert!(Json.decode::<Args>(b"{not json").is_err());
        assert!(Bincode.decode::<Args>(&[0xff]).is_err());
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        // 10^12 as a bincode varint (0xfd + u64 LE), as a String and as bytes: the
        // 70-byte message that used to abort the process.
        let mut body = vec![0xfd];
        body.extend_from_slice(&1_000_000_000_000u64.to_le_bytes());
        body.extend_from_slice(&[b'x'; 61]);
        let err = Bincode.decode::<String>(&body).unwrap_err();
        assert!(
            err.to_string().contains("claims more than its 70 bytes"),
            "{err}"
        );
        assert!(Bincode.decode::<Vec<u8>>(&body).is_err());
        assert!(Bincode.decode::<Args>(&body).is_err());
        assert!(
            Bincode
                .decode::<(u8, String)>(&[&[1][..], &body].concat())
                .is_err()
        );
    }

    #[test]
    fn large_valid_bodies_still_decode() {
        let big = Args {
            a: i64::MIN,
            b: Some("y".repeat(3 << 20)),
            list: vec![7; 2 << 20],
        };
        let bytes = Bincode.encode(&big).unwrap();
        assert_eq!(Bincode.decode::<Args>(&bytes).unwrap(), big);
        let many: Vec<u128> = (0..100_000).collect();
        let bytes = Bincode.encode(&many).unwrap();
        assert_eq!(Bincode.decode::<Vec<u128>>(&bytes).unwrap(), many);
    }

    #[test]
    fn types_needing_a_self_describing_format_are_detected() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct WithValue {
            id: u32,
            extra: serde_json::Value,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Untagged {
            A(u32),
        }
        assert!(bincode_can_decode::<Args>());
        assert!(bincode_can_decode::<String>());
        assert!(bincode_can_decode::<()>());
        assert!(!bincode_can_decode::<serde_json::Value>());
        assert!(!bincode_can_decode::<WithValue>());
        assert!(!bincode_can_decode::<Untagged>());
    }

    #[test]
    fn deep_nesting_of_a_recursive_type_is_an_error_not_a_stack_overflow() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Node {
            children: Vec<Node>,
            next: Option<Box<Node>>,
        }
        fn chain(depth: usize) -> Node {
            (0..depth).fold(
                Node {
                    children: vec![],
                    next: None,
                },
                |inner, _| Node {
                    children: vec![inner],
                    next: None,
                },
            )
        }
        // 40 levels of Node (each a struct, a Vec and its element) decode ...
        let bytes = Bincode.encode(&chain(40)).unwrap();
        assert_eq!(Bincode.decode::<Node>(&bytes).unwrap(), chain(40));
        // ... and a million levels from a peer are refused, on both codecs: each
        // level here is one byte (a vector of length 1).
        let hostile = vec![1u8; 1_000_000];
        let err = Bincode.decode::<Node>(&hostile).unwrap_err();
        assert!(err.to_string().contains("deeper than 128 levels"), "{err}");
        let hostile = "{\"children\":[".repeat(100_000);
        assert!(Json.decode::<Node>(hostile.as_bytes()).is_err());
    }

    #[test]
    fn dynamic_json_values_need_the_json_codec() {
        let value = serde_json::json!({"k": [1, "two", null]});
        let bytes = Json.encode(&value).unwrap();
        assert_eq!(Json.decode::<serde_json::Value>(&bytes).unwrap(), value);
        let bytes = Bincode.encode(&value).unwrap();
        assert!(Bincode.decode::<serde_json::Value>(&bytes).is_err());
    }
}
