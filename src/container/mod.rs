//! The Cloud WAF log-file container (pull API files and pushed S3/SFTP files): `key:value`
//! header lines, `|==|`, then the body, which may be AES-CBC encrypted (the AES key comes
//! RSA-wrapped in the header) and zlib- or gzip-compressed. Facts in IMPERVA-FORMATS.md §3.
//!
//! Everything here works on bytes already in memory and returns a plaintext body; reading
//! files or HTTP lives elsewhere. Every size is capped (`Limits`), and a bad checksum is
//! reported, never a reason to drop the data.

mod crypto;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::parse::W3cFields;

pub use crypto::KeyStore;

/// Caps on what one file may make us hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body we inflate to; a bigger one is an error (zip bombs), not a truncation.
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Gzip,
}

/// Outcome of the header's MD5 check against the final plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The header has no checksum.
    Absent,
    Match,
    Mismatch {
        expected: String,
        actual: String,
    },
}

/// A container opened to its plaintext body.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Header `key:value` pairs in file order.
    pub header: Vec<(String, String)>,
    /// Columns, when the header carries a W3C `#Fields:` line.
    pub w3c: Option<W3cFields>,
    pub body: Vec<u8>,
    pub encrypted: bool,
    /// Compression of the body (or of the whole file, when that was compressed).
    pub compression: Compression,
    pub checksum: Checksum,
}

impl Opened {
    pub fn header_value(&self, key: &str) -> Option<&str> {
        self.header
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Body lines: split on `\n`, `\r` trimmed, empty lines skipped.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        body_lines(&self.body)
    }
}

/// Split a body into event lines (`\n`, trailing `\r` trimmed, empty lines skipped).
pub fn body_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("file is encrypted with public key id {key_id:?} but no private key was found at {path}")]
    MissingKey { key_id: String, path: PathBuf },
    #[error("cannot read private key {path}: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the header's `key` is not valid base64")]
    KeyNotBase64,
    #[error("RSA decryption of the AES key failed (wrong private key?)")]
    RsaDecrypt,
    #[error("decrypted AES key has {0} bytes; expected 16, 24 or 32")]
    AesKeyLength(usize),
    #[error("ciphertext of {0} bytes is not a multiple of 16 (truncated file?)")]
    CiphertextLength(usize),
    #[error("{kind} stream is corrupt: {reason}")]
    Decompress { kind: &'static str, reason: String },
    #[error("body inflates past the {0}-byte limit")]
    TooLarge(usize),
}

impl ContainerError {
    /// Whether fetching the file again could help (a truncated download can; a wrong key can't).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ContainerError::CiphertextLength(_) | ContainerError::Decompress { .. }
        )
    }
}

const SEPARATOR: &[u8] = b"|==|";

/// Heuristic used by readers that get either plain lines or a whole container: compressed
/// bytes, or a first line shaped like a header `key:value` (not an event).
pub fn looks_like_container(bytes: &[u8]) -> bool {
    if magic(bytes) != Compression::None {
        return true;
    }
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let is_header_line = first_line
        .iter()
        .position(|b| *b == b':')
        .map(|i| i > 0 && first_line[..i].iter().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or(false);
    let is_event = first_line.starts_with(b"CEF:") || first_line.starts_with(b"LEEF:");
    (is_header_line && !is_event && memchr::memmem::find(&bytes[..bytes.len().min(64 * 1024)], SEPARATOR).is_some())
        || first_line == SEPARATOR
}

/// Open a container: split the header at the FIRST `|==|`, decrypt when the header carries a
/// wrapped key, decompress by magic bytes, check the MD5. Bytes without a separator are all body.
pub fn open(bytes: &[u8], keys: &KeyStore, limits: Limits) -> Result<Opened, ContainerError> {
    // A whole file may itself be compressed (pushed files); inflate it first.
    let whole = magic(bytes);
    let inflated;
    let (bytes, whole) = if whole != Compression::None {
        let (b, kind) = inflate_or_plain(bytes, limits)?;
        inflated = b;
        (&inflated[..], kind)
    } else {
        (bytes, whole)
    };
    let (head, body) = match memchr::memmem::find(bytes, SEPARATOR) {
        Some(i) => {
            let mut rest = &bytes[i + SEPARATOR.len()..];
            if let Some(r) = rest.strip_prefix(b"\r\n") {
                rest = r;
            } else if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
            (&bytes[..i], rest)
        }
        None => (&b""[..], bytes),
    };
    let (header, w3c) = parse_header(head);
    let get = |k: &str| {
        header
            .iter()
            .find(|(hk, _)| hk.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };

    let wrapped_key = get("key").map(str::trim).filter(|k| !k.is_empty() && *k != "-1");
    let encrypted = wrapped_key.is_some();
    let plain = match wrapped_key {
        Some(k) => {
            let key_id = get("publicKeyId").unwrap_or("").trim();
            crypto::decrypt_body(body, k, key_id, keys)?
        }
        None => body.to_vec(),
    };
    let (body, body_comp) = if magic(&plain) != Compression::None {
        inflate_or_plain(&plain, limits)?
    } else {
        (plain, Compression::None)
    };
    if body.len() > limits.max_decompressed_bytes {
        return Err(ContainerError::TooLarge(limits.max_decompressed_bytes));
    }
    let checksum = match get("checksum").map(str::trim).filter(|c| !c.is_empty()) {
        None => Checksum::Absent,
        Some(expected) => {
            let actual = hex(&Md5::digest(&body));
            if actual.eq_ignore_ascii_case(expected) {
                Checksum::Match
            } else {
                Checksum::Mismatch {
                    expected: expected.to_string(),
                    actual,
                }
            }
        }
    };
    let compression = if whole != Compression::None { whole } else { body_comp };
    Ok(Opened {
        header,
        w3c,
        body,
        encrypted,
        compression,
        checksum,
    })
}

fn parse_header(head: &[u8]) -> (Vec<(String, String)>, Option<W3cFields>) {
    let text = String::from_utf8_lossy(head);
    let mut header = Vec::new();
    let mut w3c = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("#fields:")) {
            w3c = W3cFields::from_directive(line);
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("fields") {
                w3c = W3cFields::from_directive(v);
            }
            header.push((k.to_string(), v.to_string()));
        }
    }
    (header, w3c)
}

/// Compression by exact magic bytes: gzip `1f 8b 08` (deflate); zlib `78` (deflate, 32 KiB
/// window) with a valid header check and no preset dictionary. Looser tests take text for zlib:
/// `80.12.3.4 …` passes RFC 1950's check alone.
pub fn magic(b: &[u8]) -> Compression {
    match b {
        [0x1f, 0x8b, 0x08, ..] => Compression::Gzip,
        [0x78, flg, ..] if flg & 0x20 == 0 && (0x7800 + u16::from(*flg)) % 31 == 0 => Compression::Zlib,
        _ => Compression::None,
    }
}

/// Inflate `data` if its magic says so and the stream's own first header agrees; text whose
/// first bytes match the magic by chance is taken as it is. A stream that starts right and
/// breaks later is corrupt, and an error.
fn inflate_or_plain(data: &[u8], limits: Limits) -> Result<(Vec<u8>, Compression), ContainerError> {
    let kind = magic(data);
    if !stream_header_ok(data, kind) {
        return Ok((data.to_vec(), Compression::None));
    }
    Ok((decompress(data, kind, limits)?, kind))
}

/// The header after the magic: zlib's first deflate block type (not the reserved `11`; a stored
/// block's length and its complement agree); gzip's reserved flag bits clear.
fn stream_header_ok(data: &[u8], kind: Compression) -> bool {
    match kind {
        Compression::None => true,
        Compression::Gzip => data.get(3).is_some_and(|flg| flg & 0xe0 == 0),
        Compression::Zlib => match data.get(2).map(|b| (b >> 1) & 3) {
            Some(0) => match data.get(3..7) {
                Some(&[l0, l1, n0, n1]) => u16::from_le_bytes([l0, l1]) == !u16::from_le_bytes([n0, n1]),
                _ => false,
            },
            Some(3) | None => false,
            Some(_) => true,
        },
    }
}

/// Inflate with a hard cap on the output.
pub fn decompress(data: &[u8], kind: Compression, limits: Limits) -> Result<Vec<u8>, ContainerError> {
    let cap = limits.max_decompressed_bytes;
    let mut out = Vec::with_capacity((data.len() * 4).min(cap).min(64 << 20));
    let (name, res) = match kind {
        Compression::None => return Ok(data.to_vec()),
        Compression::Zlib => (
            "zlib",
            flate2::read::ZlibDecoder::new(data)
                .take(cap as u64 + 1)
                .read_to_end(&mut out),
        ),
        Compression::Gzip => (
            "gzip",
            flate2::read::MultiGzDecoder::new(data)
                .take(cap as u64 + 1)
                .read_to_end(&mut out),
        ),
    };
    res.map_err(|e| ContainerError::Decompress {
        kind: name,
        reason: e.to_string(),
    })?;
    if out.len() > cap {
        return Err(ContainerError::TooLarge(cap));
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Lower-case hex MD5, as the container header writes it.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Where the private key for a `publicKeyId` lives: `<dir>/<id>/Private.key`.
pub fn key_path(dir: &Path, key_id: &str) -> PathBuf {
    dir.join(key_id).join("Private.key")
}

/// Small cache type shared with the crypto module.
pub(crate) type KeyCache = HashMap<String, rsa::RsaPrivateKey>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(magic(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(magic(&[0x78, 0x9c]), Compression::Zlib);
        assert_eq!(magic(&[0x78, 0x01]), Compression::Zlib);
        assert_eq!(magic(b"CEF:0"), Compression::None);
        assert_eq!(magic(b"x"), Compression::None);
    }

    #[test]
    fn plain_container_splits_at_first_separator_only() {
        let file = b"accountId:1\nformat:CEF\n|==|\nCEF:0|a|b|c|d|e|f|x=|==|\n\r\nCEF:0|a|b|c|d|e|f|y=2\r\n";
        let o = open(file, &KeyStore::none(), Limits::default()).unwrap();
        assert_eq!(o.header_value("format"), Some("CEF"));
        let lines: Vec<_> = o.lines().collect();
        assert_eq!(
            lines,
            vec![&b"CEF:0|a|b|c|d|e|f|x=|==|"[..], &b"CEF:0|a|b|c|d|e|f|y=2"[..]]
        );
        assert_eq!(o.checksum, Checksum::Absent);
        assert!(!o.encrypted);
    }

    #[test]
    fn no_separator_means_all_body() {
        let o = open(b"{\"a\":1}\n", &KeyStore::none(), Limits::default()).unwrap();
        assert!(o.header.is_empty());
        assert_eq!(o.body, b"{\"a\":1}\n");
    }

    #[test]
    fn detects_containers() {
        assert!(looks_like_container(b"accountId:1\n|==|\nCEF:0|"));
        assert!(!looks_like_container(b"CEF:0|a|b|c|d|e|f|x=1\n"));
        assert!(!looks_like_container(b"<14>CEF:0|a|b|c|d|e|f|x=1\n"));
        assert!(looks_like_container(&[0x1f, 0x8b, 8, 0]));
    }
}
