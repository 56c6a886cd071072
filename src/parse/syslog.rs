//! The syslog envelope in front of a CEF/LEEF/W3C payload: bare `<PRI>`, RFC 3164
//! (`<PRI>MMM dd HH:mm:ss host tag: `), RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD `),
//! or nothing. The envelope is kept as borrowed facts; the payload is what follows it.

use super::time;

/// Facts from the syslog envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Syslog<'a> {
    pub priority: Option<u8>,
    /// RFC 5424 version (`1`); `None` for RFC 3164 or a bare PRI.
    pub version: Option<u8>,
    /// The envelope's timestamp text, as sent.
    pub timestamp: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub proc_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
    pub structured_data: Option<&'a str>,
}

impl Syslog<'_> {
    pub fn facility(&self) -> Option<u8> {
        self.priority.map(|p| p >> 3)
    }
    pub fn severity(&self) -> Option<u8> {
        self.priority.map(|p| p & 7)
    }
}

/// Split `text` into its envelope (if any) and the payload after it.
///
/// Never fails: text that does not look like an envelope is all payload.
pub fn split_envelope(text: &str) -> (Option<Syslog<'_>>, &str) {
    let mut env = Syslog::default();
    let mut rest = text;
    let mut found = false;
    if let Some((pri, after)) = parse_pri(rest) {
        env.priority = Some(pri);
        rest = after;
        found = true;
    }
    // Payload right after the PRI (or at the start): bare `<14>CEF:...`.
    if starts_with_payload(rest) {
        return (found.then_some(env), rest);
    }
    if found && rest.starts_with("1 ") {
        if let Some(after) = rfc5424(&rest[2..], &mut env) {
            env.version = Some(1);
            return (Some(env), after);
        }
    }
    if let Some((ts_len, after_ts)) = rfc3164_timestamp(rest) {
        env.timestamp = Some(&rest[..ts_len]);
        let after_ts = after_ts.trim_start_matches(' ');
        // Hostname, unless the payload starts right away.
        if starts_with_payload(after_ts) {
            return (Some(env), after_ts);
        }
        let (host, after_host) = next_token(after_ts);
        env.hostname = Some(host);
        let after_host = after_host.trim_start_matches(' ');
        // Optional `tag[pid]:` before the payload.
        if !starts_with_payload(after_host) {
            let (tag, after_tag) = next_token(after_host);
            if let Some(t) = tag.strip_suffix(':') {
                let (app, pid) = match t.find('[') {
                    Some(i) if t.ends_with(']') => (&t[..i], Some(&t[i + 1..t.len() - 1])),
                    _ => (t, None),
                };
                env.app_name = Some(app);
                env.proc_id = pid;
                return (Some(env), after_tag.trim_start_matches(' '));
            }
        }
        return (Some(env), after_host);
    }
    (found.then_some(env), rest)
}

fn starts_with_payload(s: &str) -> bool {
    s.starts_with("CEF:") || s.starts_with("LEEF:")
}

fn parse_pri(s: &str) -> Option<(u8, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let close = b.iter().take(5).position(|&c| c == b'>')?;
    if close < 2 {
        return None;
    }
    let digits = &s[1..close];
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let pri: u16 = digits.parse().ok()?;
    if pri > 191 {
        return None;
    }
    Some((pri as u8, &s[close + 1..]))
}

fn next_token(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `MMM dd HH:mm:ss` (day may be space-padded). Returns its length and the rest.
fn rfc3164_timestamp(s: &str) -> Option<(usize, &str)> {
    let b = s.as_bytes();
    if b.len() < 15 {
        return None;
    }
    time::month_from_abbrev(s.get(..3)?)?;
    if b[3] != b' ' {
        return None;
    }
    let day = &b[4..6];
    let day_ok = (day[0] == b' ' || day[0].is_ascii_digit()) && day[1].is_ascii_digit();
    if !day_ok || b[6] != b' ' {
        return None;
    }
    let t = &b[7..15];
    let time_ok = t[0].is_ascii_digit()
        && t[1].is_ascii_digit()
        && t[2] == b':'
        && t[3].is_ascii_digit()
        && t[4].is_ascii_digit()
        && t[5] == b':'
        && t[6].is_ascii_digit()
        && t[7].is_ascii_digit();
    if !time_ok {
        return None;
    }
    Some((15, &s[15..]))
}

/// RFC 5424 after `1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG].
fn rfc5424<'a>(s: &'a str, env: &mut Syslog<'a>) -> Option<&'a str> {
    let nil = |t: &'a str| if t == "-" { None } else { Some(t) };
    let (ts, s) = next_token(s);
    let (host, s) = next_token(s);
    let (app, s) = next_token(s);
    let (pid, s) = next_token(s);
    let (msgid, s) = next_token(s);
    if ts.is_empty() || host.is_empty() || app.is_empty() || pid.is_empty() || msgid.is_empty() {
        return None;
    }
    let (sd, rest) = structured_data(s)?;
    env.timestamp = nil(ts);
    env.hostname = nil(host);
    env.app_name = nil(app);
    env.proc_id = nil(pid);
    env.msg_id = nil(msgid);
    env.structured_data = nil(sd);
    // A UTF-8 BOM may open the message.
    Some(rest.strip_prefix('\u{feff}').unwrap_or(rest))
}

/// `-` or one or more `[id k="v" ...]` elements (values may hold escaped `]` and `"`).
fn structured_data(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some(("-", rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        let mut in_quotes = false;
        i += 1;
        loop {
            let c = *b.get(i)?;
            match c {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b']' if !in_quotes => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let rest = &s[i..];
    Some((&s[..i], rest.strip_prefix(' ').unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_pri_then_cef() {
        let (env, rest) = split_envelope("<14>CEF:0|a|b|c|d|e|f|");
        let env = env.expect("envelope");
        assert_eq!(env.priority, Some(14));
        assert_eq!(env.facility(), Some(1));
        assert_eq!(env.severity(), Some(6));
        assert_eq!(rest, "CEF:0|a|b|c|d|e|f|");
    }

    #[test]
    fn no_envelope() {
        let (env, rest) = split_envelope("CEF:0|x");
        assert!(env.is_none());
        assert_eq!(rest, "CEF:0|x");
    }

    #[test]
    fn rfc3164_without_pri() {
        let (env, rest) = split_envelope("Nov 15 23:57:28 3.3.3.3 CEF:0|Imperva Inc.|");
        let env = env.expect("envelope");
        assert_eq!(env.timestamp, Some("Nov 15 23:57:28"));
        assert_eq!(env.hostname, Some("3.3.3.3"));
        assert_eq!(rest, "CEF:0|Imperva Inc.|");
    }

    #[test]
    fn rfc3164_with_tag_and_pid() {
        let (env, rest) = split_envelope("<13>Jan  5 01:02:03 gw1 imperva[42]: CEF:0|v|");
        let env = env.expect("envelope");
        assert_eq!(env.timestamp, Some("Jan  5 01:02:03"));
        assert_eq!(env.hostname, Some("gw1"));
        assert_eq!(env.app_name, Some("imperva"));
        assert_eq!(env.proc_id, Some("42"));
        assert_eq!(rest, "CEF:0|v|");
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let line = r#"<134>1 2023-10-05T18:33:02.123Z waf01 SecureSphere 77 ID47 [ex@1 a="x\]y" b="2"][z@2] CEF:0|v|"#;
        let (env, rest) = split_envelope(line);
        let env = env.expect("envelope");
        assert_eq!(env.version, Some(1));
        assert_eq!(env.timestamp, Some("2023-10-05T18:33:02.123Z"));
        assert_eq!(env.hostname, Some("waf01"));
        assert_eq!(env.app_name, Some("SecureSphere"));
        assert_eq!(env.proc_id, Some("77"));
        assert_eq!(env.msg_id, Some("ID47"));
        assert_eq!(env.structured_data, Some(r#"[ex@1 a="x\]y" b="2"][z@2]"#));
        assert_eq!(rest, "CEF:0|v|");
    }

    #[test]
    fn rfc5424_nil_fields() {
        let (env, rest) = split_envelope("<14>1 - - - - - - CEF:0|v|");
        let env = env.expect("envelope");
        assert_eq!(env.hostname, None);
        assert_eq!(env.structured_data, None);
        assert_eq!(rest, "CEF:0|v|");
    }

    #[test]
    fn multibyte_text_after_pri_is_payload() {
        // Found by proptest: a month check must not slice inside a character.
        let (env, rest) = split_envelope("<14>|\u{fffd}qRe 12 00:00:00 h x");
        assert_eq!(env.and_then(|e| e.priority), Some(14));
        assert_eq!(rest, "|\u{fffd}qRe 12 00:00:00 h x");
        let (_, rest) = split_envelope("\u{e9}t\u{e9} 12 00:00:00 h x");
        assert_eq!(rest, "\u{e9}t\u{e9} 12 00:00:00 h x");
    }

    #[test]
    fn garbage_is_payload() {
        let (env, rest) = split_envelope("<999>hello");
        assert!(env.is_none());
        assert_eq!(rest, "<999>hello");
    }
}
