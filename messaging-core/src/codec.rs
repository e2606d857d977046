//! [`Codec`]: how message bodies are encoded. Two implementations behind one trait:
//! [`Bincode`] (bincode 2, compact and fast, for Rust-to-Rust) and [`Json`]
//! (self-describing; what oslo.messaging speaks, and what dynamic arguments need).
//! [`CodecKind`] names one at run time; every [`Message`](crate::Message) records the
//! codec of its body, so a receiver always decodes with the sender's codec.
//!
//! bincode is not self-describing: values it encodes must not rely on
//! `#[serde(skip_serializing_if)]`, `flatten`, `untagged` or internally tagged enums,
//! and `serde_json::Value` cannot be decoded from it. Use the JSON codec for dynamic
//! values (`?codec=json` on the transport URL).

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
    fn new(codec: &'static str, operation: &'static str, message: impl fmt::Display) -> Self {
        CodecError {
            codec,
            operation,
            message: message.to_string(),
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
        let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| CodecError::new("bincode", "decode", e))?;
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
    fn dynamic_json_values_need_the_json_codec() {
        let value = serde_json::json!({"k": [1, "two", null]});
        let bytes = Json.encode(&value).unwrap();
        assert_eq!(Json.decode::<serde_json::Value>(&bytes).unwrap(), value);
        let bytes = Bincode.encode(&value).unwrap();
        assert!(Bincode.decode::<serde_json::Value>(&bytes).is_err());
    }
}
