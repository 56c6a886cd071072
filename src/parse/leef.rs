//! LEEF 1.0 and 2.0: `LEEF:1.0|Vendor|Product|Version|EventID|attrs` and
//! `LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attrs`, where the delimiter is one
//! character or its hex form (`x5E`, `0x5E`). Attributes are split on the delimiter (tab by
//! default). Imperva's Cloud WAF also sends "CEF-like" LEEF whose attributes are separated by
//! spaces; when the delimiter never occurs, the CEF `key=` boundary scan is used instead.

use std::borrow::Cow;

use super::ParseError;
use super::cef::{MAX_FIELDS, scan_extension, split_header};
use super::record::{Escape, Field, Format, Header, Record};

pub fn parse(text: &str) -> Result<Record<'_>, ParseError> {
    parse_into(text, Vec::with_capacity(48))
}

/// [`parse`] into a caller's (empty) field vector.
pub fn parse_into<'a>(text: &'a str, mut fields: Vec<Field<'a>>) -> Result<Record<'a>, ParseError> {
    fields.clear();
    let start = super::LEEF_MARK.find(text.as_bytes()).ok_or(ParseError::NotLeef)?;
    let body = &text[start + 5..];
    let (h, rest) = split_header::<5>(body).ok_or(ParseError::Header {
        format: "LEEF",
        found: body.matches('|').count(),
        wanted: 5,
    })?;
    let version = h[0];
    let mut delim: Option<char> = None;
    let mut attrs = rest;
    if version.starts_with('2') {
        // The delimiter field is present in 2.0 when the next `|` closes a short token.
        if let Some(i) = rest.find('|') {
            if let Some(d) = parse_delimiter(&rest[..i]) {
                delim = Some(d);
                attrs = &rest[i + 1..];
            } else if i == 0 {
                attrs = &rest[1..];
            }
        }
    }
    let delim = delim.unwrap_or('\t');
    let header = Header {
        version: Cow::Borrowed(version),
        vendor: Cow::Borrowed(h[1]),
        product: Cow::Borrowed(h[2]),
        device_version: Cow::Borrowed(h[3]),
        class_id: Cow::Borrowed(h[4]),
        name: Cow::Borrowed(h[4]),
        severity: Cow::Borrowed(""),
    };
    if attrs.contains(delim) {
        for item in attrs.split(delim) {
            let item = item.trim_matches(|c| c == '\r' || c == '\n');
            if item.is_empty() {
                continue;
            }
            if fields.len() >= MAX_FIELDS {
                return Err(ParseError::TooManyFields(MAX_FIELDS));
            }
            let (key, raw) = item.split_once('=').unwrap_or(("", item));
            fields.push(Field {
                key: key.trim(),
                raw: Cow::Borrowed(raw),
                escape: Escape::None,
            });
        }
    } else {
        scan_extension(attrs, &mut fields, None)?;
    }
    // LEEF's `sev` attribute is the event severity.
    if let Some(sev) = fields.iter().rev().find(|f| f.key == "sev") {
        let sev = sev.raw.clone();
        let mut r = Record {
            format: Format::Leef,
            syslog: None,
            header,
            fields,
            index: None,
        };
        r.header.severity = sev;
        return Ok(r);
    }
    Ok(Record {
        format: Format::Leef,
        syslog: None,
        header,
        fields,
        index: None,
    })
}

/// `^`, `x5E`, `0x5E`, `\t`-as-text are all accepted forms of the LEEF 2.0 delimiter field.
fn parse_delimiter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => return Some(c),
        (None, _) => return None,
        _ => {}
    }
    if s == "\\t" {
        return Some('\t');
    }
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .or_else(|| s.strip_prefix('x'))
        .or_else(|| s.strip_prefix('X'))?;
    if hex.is_empty() || hex.len() > 4 {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    char::from_u32(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(r: &Record<'_>) -> Vec<(String, String)> {
        r.fields
            .iter()
            .map(|f| (f.key.to_string(), f.value().into_owned()))
            .collect()
    }

    #[test]
    fn leef1_tab_separated() {
        let r =
            parse("LEEF:1.0|Incapsula|SIEMintegration|0|SQL Injection|src=1.2.3.4\tcpt=443\trequest=a b/c").unwrap();
        assert_eq!(r.header.vendor, "Incapsula");
        assert_eq!(r.header.name, "SQL Injection");
        assert_eq!(
            pairs(&r),
            vec![
                ("src".into(), "1.2.3.4".into()),
                ("cpt".into(), "443".into()),
                ("request".into(), "a b/c".into())
            ]
        );
    }

    #[test]
    fn leef2_with_custom_delimiter() {
        let r = parse("LEEF:2.0|Incapsula|SIEMintegration|0|Normal|^|src=1.2.3.4^qstr=a=b^ua=Mozilla 5").unwrap();
        assert_eq!(
            pairs(&r),
            vec![
                ("src".into(), "1.2.3.4".into()),
                ("qstr".into(), "a=b".into()),
                ("ua".into(), "Mozilla 5".into())
            ]
        );
    }

    #[test]
    fn leef2_with_hex_delimiter() {
        let r = parse("LEEF:2.0|Incapsula|SIEMintegration|0|Normal|x5E|src=1.2.3.4^cpt=1").unwrap();
        assert_eq!(
            pairs(&r),
            vec![("src".into(), "1.2.3.4".into()), ("cpt".into(), "1".into())]
        );
        let r = parse("LEEF:2.0|V|P|1|E|0x7C|a=1|b=2").unwrap();
        assert_eq!(pairs(&r), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn leef_space_separated_like_cef() {
        let r = parse(r"LEEF:0|Incapsula|SIEMintegration|0|SQL Injection| fileId=34 qstr=keywords\=3 cs9=,High Risk, cs9Label=Rule name").unwrap();
        assert_eq!(
            pairs(&r),
            vec![
                ("fileId".into(), "34".into()),
                ("qstr".into(), "keywords=3".into()),
                ("cs9".into(), ",High Risk,".into()),
                ("cs9Label".into(), "Rule name".into())
            ]
        );
    }

    #[test]
    fn leef_severity_attribute() {
        let r = parse("LEEF:1.0|V|P|1|E|sev=7\tsrc=1.1.1.1").unwrap();
        assert_eq!(r.header.severity, "7");
    }

    #[test]
    fn leef_short_header() {
        assert!(parse("LEEF:1.0|V|P").is_err());
    }
}
