//! Parsers: pure, synchronous functions from one frame's text to a borrowed [`Record`].
//! No I/O here, so they can be fuzzed and benchmarked alone.
//!
//! Order of work for a frame: [`syslog::split_envelope`] cuts off the envelope, then the
//! payload is CEF ([`cef`]), LEEF ([`leef`]) or, with the file's `#Fields:`, W3C ([`w3c`]).

pub mod cef;
mod keytable;
pub mod leef;
pub mod record;
pub mod syslog;
pub mod time;
pub mod w3c;

pub use record::{Escape, Field, Format, Header, Key, KeyIndex, Record};
pub use w3c::W3cFields;

/// Why a frame could not be parsed. Small and cheap: this is on the hot path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no CEF:, LEEF: or W3C payload found")]
    Unrecognized,
    #[error("no CEF: marker")]
    NotCef,
    #[error("no LEEF: marker")]
    NotLeef,
    #[error("{format} header has {found} of {wanted} '|'-terminated fields")]
    Header {
        format: &'static str,
        found: usize,
        wanted: usize,
    },
    #[error("more than {0} key=value pairs")]
    TooManyFields(usize),
    #[error("W3C line has {found} columns, #Fields names {wanted}")]
    W3cColumns { found: usize, wanted: usize },
    #[error("bad value for {key}: {value:?}")]
    BadValue { key: &'static str, value: String },
    #[error("empty frame")]
    Empty,
}

pub(crate) static CEF_MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"CEF:"));
pub(crate) static LEEF_MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"LEEF:"));

/// Parse one event: envelope, then CEF / LEEF / W3C (when `w3c` columns are known).
pub fn parse_event<'a>(text: &'a str, w3c: Option<&'a W3cFields>) -> Result<Record<'a>, ParseError> {
    parse_event_into(text, w3c, Vec::new())
}

/// [`parse_event`] filling a caller's (empty) field vector, so hot loops can reuse it.
pub fn parse_event_into<'a>(
    text: &'a str,
    w3c: Option<&'a W3cFields>,
    fields: Vec<Field<'a>>,
) -> Result<Record<'a>, ParseError> {
    let trimmed = text.trim_end_matches(['\r', '\n', '\0']);
    if trimmed.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let (env, payload) = syslog::split_envelope(trimmed);
    let b = payload.as_bytes();
    let cef_at = CEF_MARK.find(b);
    // Only a LEEF marker before the CEF one matters: no need to scan the whole payload.
    let leef_at = LEEF_MARK.find(&b[..cef_at.unwrap_or(b.len())]);
    let mut rec = match (cef_at, leef_at) {
        (Some(c), Some(l)) if l < c => leef::parse_into(payload, fields)?,
        (Some(_), _) => cef::parse_into(payload, fields)?,
        (None, Some(_)) => leef::parse_into(payload, fields)?,
        (None, None) => match w3c {
            Some(cols) if !w3c::is_directive(payload) => w3c::parse_into(payload, cols, fields)?,
            _ => return Err(ParseError::Unrecognized),
        },
    };
    rec.syslog = env;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_on_payload() {
        assert_eq!(
            parse_event("<14>CEF:0|a|b|c|d|e|f|x=1", None).unwrap().format,
            Format::Cef
        );
        assert_eq!(
            parse_event("Jan  1 00:00:00 h LEEF:1.0|a|b|c|d|x=1", None)
                .unwrap()
                .format,
            Format::Leef
        );
        let cols = W3cFields::from_directive("#Fields: c-ip").unwrap();
        assert_eq!(parse_event("1.2.3.4", Some(&cols)).unwrap().format, Format::W3c);
        assert_eq!(parse_event("1.2.3.4", None).unwrap_err(), ParseError::Unrecognized);
        assert_eq!(parse_event("\r\n", None).unwrap_err(), ParseError::Empty);
    }
}
