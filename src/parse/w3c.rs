//! W3C extended log lines from Cloud WAF. A `#Fields:` directive (in the pull-file header or in
//! the body) names the space-separated columns; values with spaces are double-quoted and `-`
//! means empty. Columns are mapped by name, never by position, onto the CEF keys the Cloud WAF
//! mapping already understands; unknown columns keep their W3C name.

use std::borrow::Cow;

use chrono::NaiveDateTime;

use super::ParseError;
use super::record::{Escape, Field, Format, Header, Record};

/// The columns of a W3C file, as the CEF keys they correspond to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cFields {
    /// W3C column names as sent.
    pub names: Vec<String>,
    /// The key each column is stored under in a [`Record`].
    pub keys: Vec<String>,
    date_col: Option<usize>,
    time_col: Option<usize>,
}

/// W3C column name → CEF key used by the Cloud WAF mapping.
const COLUMN_KEYS: &[(&str, &str)] = &[
    ("c-ip", "src"),
    ("c-port", "cpt"),
    ("s-ip", "sip"),
    ("s-port", "spt"),
    ("s-xff", "xff"),
    ("cs-countrycode", "ccode"),
    ("cs-city", "cicode"),
    ("cs-uri", "request"),
    ("cs-uri-query", "qstr"),
    ("cs-method", "requestMethod"),
    ("cs-version", "ver"),
    ("cs-protocol", "app"),
    ("sc-status", "cn1"),
    ("sc-action", "act"),
    ("s-rulename", "cs9"),
    ("s-attacktype", "fileType"),
    ("s-attackid", "filePermission"),
    ("cs(user-agent)", "requestClientApplication"),
    ("cs-useragent", "requestClientApplication"),
    ("cs(referer)", "ref"),
    ("cs-referrer", "ref"),
    ("cs-bytes", "in"),
    ("s-computername", "deviceFacility"),
    ("s-pop", "deviceFacility"),
    ("cs-host", "sourceServiceName"),
    ("s-sitename", "sourceServiceName"),
    ("s-siteid", "siteid"),
    ("s-accountname", "Customer"),
    ("cs-sessionid", "fileId"),
    ("s-requestid", "deviceExternalId"),
    ("cs-postbody", "postbody"),
    ("s-clientapp", "cs6"),
    ("s-visitorid", "cs4"),
    ("cs-lat", "cs7"),
    ("cs-long", "cs8"),
    ("cs-start", "start"),
    ("cs-end", "end"),
];

impl W3cFields {
    /// Read a `#Fields: a b c` directive (the `#Fields:` prefix is optional).
    pub fn from_directive(line: &str) -> Option<W3cFields> {
        let line = line.trim();
        let list = match line.get(..8) {
            Some(p) if p.eq_ignore_ascii_case("#fields:") => &line[8..],
            _ => line,
        };
        let names: Vec<String> = list.split_ascii_whitespace().map(str::to_string).collect();
        if names.is_empty() {
            return None;
        }
        let keys = names
            .iter()
            .map(|n| {
                let lower = n.to_ascii_lowercase();
                COLUMN_KEYS
                    .iter()
                    .find(|(c, _)| *c == lower)
                    .map(|(_, k)| k.to_string())
                    .unwrap_or_else(|| n.clone())
            })
            .collect();
        let date_col = names.iter().position(|n| n.eq_ignore_ascii_case("date"));
        let time_col = names.iter().position(|n| n.eq_ignore_ascii_case("time"));
        Some(W3cFields {
            names,
            keys,
            date_col,
            time_col,
        })
    }
}

/// Whether a line is a W3C directive (`#Fields:`, `#Version:` ...).
pub fn is_directive(line: &str) -> bool {
    line.starts_with('#')
}

/// Split a data line into tokens: spaces separate, `"..."` quotes (with `""` or `\"` inside).
fn tokens(line: &str) -> Vec<Cow<'_, str>> {
    let b = line.as_bytes();
    let mut out = Vec::with_capacity(32);
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            let mut owned: Option<String> = None;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'\\' && j + 1 < b.len() && b[j + 1] == b'"' {
                    owned.get_or_insert_with(|| line[start..j].to_string()).push('"');
                    j += 2;
                    continue;
                }
                if b[j] == b'"' {
                    if j + 1 < b.len() && b[j + 1] == b'"' {
                        owned.get_or_insert_with(|| line[start..j].to_string()).push('"');
                        j += 2;
                        continue;
                    }
                    break;
                }
                let ch_len = utf8_len(b[j]);
                if let Some(o) = owned.as_mut() {
                    o.push_str(&line[j..(j + ch_len).min(b.len())]);
                }
                j += ch_len;
            }
            let j = j.min(b.len());
            out.push(match owned {
                Some(o) => Cow::Owned(o),
                None => Cow::Borrowed(&line[start..j]),
            });
            i = j + 1;
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            out.push(Cow::Borrowed(&line[start..i]));
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Parse one W3C data line against its file's columns.
pub fn parse<'a>(line: &'a str, cols: &'a W3cFields) -> Result<Record<'a>, ParseError> {
    parse_into(line, cols, Vec::new())
}

/// [`parse`] into a caller's (empty) field vector.
pub fn parse_into<'a>(
    line: &'a str,
    cols: &'a W3cFields,
    mut fields: Vec<Field<'a>>,
) -> Result<Record<'a>, ParseError> {
    fields.clear();
    let line = line.trim_end_matches(['\r', '\n']);
    let toks = tokens(line);
    if toks.len() != cols.names.len() {
        return Err(ParseError::W3cColumns {
            found: toks.len(),
            wanted: cols.names.len(),
        });
    }
    let mut date: Option<&str> = None;
    let mut time: Option<&str> = None;
    for (i, tok) in toks.into_iter().enumerate() {
        if tok == "-" {
            continue;
        }
        if Some(i) == cols.date_col {
            if let Cow::Borrowed(s) = tok {
                date = Some(s);
            }
            continue;
        }
        if Some(i) == cols.time_col {
            if let Cow::Borrowed(s) = tok {
                time = Some(s);
            }
            continue;
        }
        fields.push(Field {
            key: cols.keys[i].as_str(),
            raw: tok,
            escape: Escape::None,
        });
    }
    if let (Some(d), Some(t)) = (date, time) {
        let ts = NaiveDateTime::parse_from_str(&format!("{d} {t}"), "%Y-%m-%d %H:%M:%S%.f").map_err(|_| {
            ParseError::BadValue {
                key: "date/time",
                value: format!("{d} {t}"),
            }
        })?;
        fields.push(Field {
            key: "start",
            raw: Cow::Owned(ts.and_utc().timestamp_millis().to_string()),
            escape: Escape::None,
        });
    }
    let rule = fields.iter().find(|f| f.key == "cs9").map(|f| f.raw.clone());
    let header = Header {
        version: Cow::Borrowed("0"),
        vendor: Cow::Borrowed("Incapsula"),
        product: Cow::Borrowed("SIEMintegration"),
        device_version: Cow::Borrowed("1"),
        class_id: Cow::Borrowed("1"),
        name: rule
            .filter(|r| !r.trim_matches(',').is_empty())
            .unwrap_or(Cow::Borrowed("Normal")),
        severity: Cow::Borrowed(""),
    };
    Ok(Record {
        format: Format::W3c,
        syslog: None,
        header,
        fields,
        index: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c_maps_columns_by_name_and_skips_dashes() {
        let cols = W3cFields::from_directive(
            "#Fields: date time c-ip c-port cs-method cs-uri sc-status s-xff cs(User-Agent) s-custom",
        )
        .unwrap();
        let r = parse(
            r#"2024-01-20 10:00:01.5 1.2.3.4 5555 GET site.com/a - 10.0.0.1 "Mozilla/5.0 (X11; Linux) ""q""" x"#,
            &cols,
        )
        .unwrap();
        let get = |k: &str| r.fields.iter().find(|f| f.key == k).map(|f| f.raw.to_string());
        assert_eq!(get("src").as_deref(), Some("1.2.3.4"));
        assert_eq!(get("cpt").as_deref(), Some("5555"));
        assert_eq!(get("requestMethod").as_deref(), Some("GET"));
        assert_eq!(get("request").as_deref(), Some("site.com/a"));
        assert_eq!(get("cn1"), None, "`-` is empty");
        assert_eq!(
            get("requestClientApplication").as_deref(),
            Some(r#"Mozilla/5.0 (X11; Linux) "q""#)
        );
        assert_eq!(get("s-custom").as_deref(), Some("x"));
        assert_eq!(get("start").as_deref(), Some("1705744801500"));
        assert_eq!(r.header.name, "Normal");
    }

    #[test]
    fn w3c_column_count_mismatch_is_an_error() {
        let cols = W3cFields::from_directive("#Fields: c-ip c-port").unwrap();
        assert!(matches!(
            parse("1.2.3.4", &cols),
            Err(ParseError::W3cColumns { found: 1, wanted: 2 })
        ));
    }
}
