//! kombu's message compression (`kombu_compression`): oslo's `gzip` is kombu's
//! `application/x-gzip`, which is zlib's format (`zlib.compress`), named in the
//! message's `compression` header. Senders compress every body when the option is
//! set; receivers decompress whatever says `application/x-gzip`, whether or not the
//! option is set here, so a Python service that compresses is understood. A body
//! decompresses to at most `max_message_size` bytes (a small body cannot inflate
//! into a large allocation); kombu's other methods (`bz2`, `lzma`, `brotli`, `zstd`)
//! are not available and a body using one is refused like a malformed one.

use std::borrow::Cow;
use std::io::{Read, Write};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use super::connection::fixed;

/// The content type kombu names zlib compression with.
pub(crate) const GZIP: &str = "application/x-gzip";

/// The message header naming the compression.
const HEADER: &str = "compression";

/// The compressions this transport can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// kombu's `gzip` (zlib's format).
    Gzip,
}

/// `kombu_compression`'s value: `None` for no compression.
pub(crate) fn parse(value: Option<&str>) -> Result<Option<Compression>, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(None),
        Some("gzip" | "zlib" | "application/x-gzip") => Ok(Some(Compression::Gzip)),
        Some(other) => Err(format!(
            "`kombu_compression` `{other}` is not available: gzip is (kombu's zlib), \
             bz2, lzma, brotli and zstd are not"
        )),
    }
}

/// Compresses a body (zlib).
pub(crate) fn compress(body: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::ZlibEncoder::new(Vec::with_capacity(body.len() / 2), Default::default());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// Marks properties as carrying a compressed body.
pub(crate) fn mark(properties: BasicProperties, compression: Compression) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    match compression {
        Compression::Gzip => {
            headers.insert(fixed(HEADER), AMQPValue::LongString(GZIP.as_bytes().into()));
        }
    }
    properties.with_headers(headers)
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// It decompresses to more than the limit.
    TooLarge,
    /// A compression this transport does not read.
    Unsupported(String),
    /// Not valid for its compression.
    Corrupt,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("it decompresses to more than max_message_size"),
            BodyError::Unsupported(kind) => write!(
                f,
                "its compression `{}` is not available (only {GZIP})",
                messaging_core::Untrusted::new(kind)
            ),
            BodyError::Corrupt => f.write_str("its compressed body is corrupt"),
        }
    }
}

/// The body as its sender wrote it: decompressed if its headers say so, at most
/// `limit` bytes.
pub(crate) fn body<'a>(
    headers: Option<&FieldTable>,
    data: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, BodyError> {
    let kind = match headers.and_then(|h| h.inner().get(HEADER)) {
        None => return Ok(Cow::Borrowed(data)),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(other) => format!("{other:?}"),
    };
    if kind != GZIP {
        return Err(BodyError::Unsupported(kind));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BodyError::Corrupt)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip_headers() -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(fixed(HEADER), AMQPValue::LongString(GZIP.as_bytes().into()));
        h
    }

    #[test]
    fn compressed_bodies_round_trip_as_kombu_writes_them() {
        let body =
            br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\"}"}"#.repeat(20);
        let packed = compress(&body);
        assert!(packed.len() < body.len() / 4);
        assert_eq!(
            &packed[..1],
            &[0x78],
            "zlib's format, as Python's zlib.compress"
        );
        let read = body_of(Some(&gzip_headers()), &packed, 1 << 20);
        assert_eq!(read.as_deref(), Ok(&body[..]));
        assert_eq!(body_of(None, b"plain", 10).as_deref(), Ok(&b"plain"[..]));
        let marked = mark(BasicProperties::default(), Compression::Gzip);
        assert_eq!(marked.headers().as_ref(), Some(&gzip_headers()));
    }

    fn body_of(h: Option<&FieldTable>, d: &[u8], l: usize) -> Result<Vec<u8>, BodyError> {
        body(h, d, l).map(|c| c.into_owned())
    }

    #[test]
    fn a_small_body_cannot_inflate_past_the_limit() {
        let bomb = compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        assert_eq!(
            body_of(Some(&gzip_headers()), &bomb, 1 << 20),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn other_or_broken_compressions_are_errors() {
        let mut h = FieldTable::default();
        h.insert(
            fixed(HEADER),
            AMQPValue::LongString(b"application/x-bz2".to_vec().into()),
        );
        assert_eq!(
            body_of(Some(&h), b"BZh9", 100),
            Err(BodyError::Unsupported("application/x-bz2".into()))
        );
        assert_eq!(
            body_of(Some(&gzip_headers()), b"not zlib at all", 100),
            Err(BodyError::Corrupt)
        );
        assert_eq!(parse(Some("GZIP")), Ok(Some(Compression::Gzip)));
        assert_eq!(parse(None), Ok(None));
        assert!(parse(Some("bz2")).unwrap_err().contains("not available"));
    }
}
