//! Timestamps: the zone-less layouts SecureSphere writes in `rt`, epoch milliseconds, RFC 3164
//! envelope times (no year), and the two output renderings (Elastic's millisecond ISO 8601 and
//! SEKOIA's Python-style `isoformat`). Civil-date arithmetic is done by hand: it is on the hot
//! path and needs no allocation.

use chrono::{NaiveDate, NaiveDateTime, Offset, TimeZone};

/// The zone applied to times that carry none (Elastic's `tz_offset`).
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    Utc,
    /// Fixed offset east of UTC, in seconds.
    Fixed(i32),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `UTC`, `Z`, `+0200`, `-05:30`, or an IANA name such as `Europe/Paris`.
    pub fn parse(s: &str) -> Option<Zone> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("gmt") || s == "Z" {
            return Some(Zone::Utc);
        }
        if let Some(off) = parse_offset(s) {
            return Some(Zone::Fixed(off));
        }
        s.parse::<chrono_tz::Tz>().ok().map(Zone::Named)
    }

    /// Milliseconds since the epoch of a local wall-clock time in this zone.
    pub fn local_to_epoch_ms(&self, local: NaiveDateTime) -> Option<i64> {
        let utc_ms = local.and_utc().timestamp_millis();
        match self {
            Zone::Utc => Some(utc_ms),
            Zone::Fixed(off) => Some(utc_ms - i64::from(*off) * 1000),
            Zone::Named(tz) => {
                let dt = tz.from_local_datetime(&local).earliest()?;
                let off = dt.offset().fix().local_minus_utc();
                Some(utc_ms - i64::from(off) * 1000)
            }
        }
    }
}

fn parse_offset(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = b[1..].iter().copied().filter(|c| *c != b':').collect();
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h = i32::from(digits[0] - b'0') * 10 + i32::from(digits[1] - b'0');
    let m = i32::from(digits[2] - b'0') * 10 + i32::from(digits[3] - b'0');
    if h > 18 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `Jan`..`Dec`, any case.
pub fn month_from_abbrev(s: &str) -> Option<u32> {
    if s.len() != 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| m[..3].eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

/// A month as an abbreviation or a full English name.
pub fn month_from_name(s: &str) -> Option<u32> {
    if s.len() == 3 {
        return month_from_abbrev(s);
    }
    MONTHS
        .iter()
        .position(|m| {
            m.eq_ignore_ascii_case(s) || (s.len() == 4 && s.eq_ignore_ascii_case("sept") && *m == "september")
        })
        .map(|i| i as u32 + 1)
}

/// Digits only, as epoch milliseconds.
pub fn parse_epoch_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `HH:mm:ss` or `HH:mm:ss.SSS` → (h, m, s, nanos).
fn parse_clock(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let mut it = hms.split(':');
    let h: u32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let sec: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let v: u32 = f.parse().ok()?;
            v * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Some((h, m, sec, nanos))
}

/// The device time layouts SecureSphere and other CEF senders use in `rt`:
/// epoch ms; `MMM dd yyyy HH:mm:ss[.SSS] [zone]`; `MMM dd HH:mm:ss[.SSS] [zone]` (no year:
/// the year of `now_ms`, or the previous one if that would be more than a day ahead);
/// `dd MMMM yyyy HH:mm:ss`; ISO 8601. Parentheses around the value are ignored.
/// Times without a zone are read in `zone`.
pub fn parse_device_time(s: &str, zone: &Zone, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    let s = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(s)
        .trim();
    if let Some(ms) = parse_epoch_ms(s) {
        return Some(ms);
    }
    if let Some(ms) = parse_iso8601(s, zone) {
        return Some(ms);
    }
    let tokens: Vec<&str> = s.split_ascii_whitespace().collect();
    if tokens.len() < 3 || tokens.len() > 5 {
        return None;
    }
    let (year, month, day, clock, rest) = if let Some(mo) = month_from_name(tokens[0]) {
        // MMM dd [yyyy] HH:mm:ss [zone]
        let day: u32 = tokens[1].parse().ok()?;
        if tokens[2].contains(':') {
            (None, mo, day, tokens[2], &tokens[3..])
        } else {
            let y: i32 = tokens[2].parse().ok()?;
            (Some(y), mo, day, *tokens.get(3)?, &tokens[4..])
        }
    } else {
        // dd MMMM yyyy HH:mm:ss [zone]
        let day: u32 = tokens[0].parse().ok()?;
        let mo = month_from_name(tokens[1])?;
        let y: i32 = tokens[2].parse().ok()?;
        (Some(y), mo, day, *tokens.get(3)?, &tokens[4..])
    };
    let (h, mi, sec, nanos) = parse_clock(clock)?;
    let explicit_zone = match rest {
        [] => None,
        [z] => Some(Zone::parse(z)?),
        _ => return None,
    };
    let zone = explicit_zone.as_ref().unwrap_or(zone);
    let build = |y: i32| -> Option<i64> {
        let date = NaiveDate::from_ymd_opt(y, month, day)?;
        let t = date.and_hms_nano_opt(h, mi, sec, nanos)?;
        zone.local_to_epoch_ms(t)
    };
    match year {
        Some(y) => build(y),
        None => resolve_year(now_ms, build),
    }
}

/// Pick the year for a year-less date: this year, unless that lands more than a day in the
/// future (a December line read in January), then last year.
pub fn resolve_year(now_ms: i64, build: impl Fn(i32) -> Option<i64>) -> Option<i64> {
    let (y, _, _) = civil_from_days(now_ms.div_euclid(86_400_000));
    let this = build(y as i32);
    match this {
        Some(ms) if ms > now_ms + 86_400_000 => build(y as i32 - 1).or(this),
        other => other,
    }
}

/// RFC 3164 `MMM dd HH:mm:ss` in `zone`, year resolved against `now_ms`.
pub fn parse_rfc3164(s: &str, zone: &Zone, now_ms: i64) -> Option<i64> {
    parse_device_time(s, zone, now_ms)
}

/// ISO 8601 / RFC 3339 (`2023-10-05T18:33:02Z`, with fraction or offset; no zone → `zone`).
pub fn parse_iso8601(s: &str, zone: &Zone) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    zone.local_to_epoch_ms(naive)
}

/// Days since 1970-01-01 → (year, month, day). Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn push_date_time(out: &mut Vec<u8>, ms: i64) -> u32 {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    if (0..=9999).contains(&y) {
        // The common case in one buffer and one copy.
        let y = y as u32;
        let secs = (in_day / 1000) as u32;
        let mut b = *b"0000-00-00T00:00:00";
        for (at, v) in [
            (0, y / 100),
            (2, y % 100),
            (5, m),
            (8, d),
            (11, secs / 3600),
            (14, secs / 60 % 60),
            (17, secs % 60),
        ] {
            b[at] = b'0' + (v / 10) as u8;
            b[at + 1] = b'0' + (v % 10) as u8;
        }
        out.extend_from_slice(&b);
        return (in_day % 1000) as u32;
    }
    out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
    out.push(b'T');
    let secs = (in_day / 1000) as u32;
    push2(out, secs / 3600);
    out.push(b':');
    push2(out, secs / 60 % 60);
    out.push(b':');
    push2(out, secs % 60);
    (in_day % 1000) as u32
}

/// `2023-10-05T18:33:02.000Z`: what Elasticsearch's date processors write.
pub fn write_millis(out: &mut Vec<u8>, ms: i64) {
    let frac = push_date_time(out, ms);
    out.push(b'.');
    out.push(b'0' + (frac / 100) as u8);
    push2(out, frac % 100);
    out.push(b'Z');
}

/// `2022-04-12T14:09:58.763000Z`, or `2009-02-13T23:31:30Z` on a whole second: Python's
/// `isoformat()` as SEKOIA's intake renders dates.
pub fn write_python(out: &mut Vec<u8>, ms: i64) {
    let frac = push_date_time(out, ms);
    if frac != 0 {
        out.push(b'.');
        out.push(b'0' + (frac / 100) as u8);
        push2(out, frac % 100);
        out.extend_from_slice(b"000");
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(ms: i64) -> String {
        let mut v = vec![];
        write_millis(&mut v, ms);
        String::from_utf8(v).unwrap()
    }

    const NOW: i64 = 1_700_000_000_000; // 2023-11-14

    #[test]
    fn securesphere_layouts() {
        let z = Zone::Utc;
        assert_eq!(
            iso(parse_device_time("Oct 05 2023 18:33:02", &z, NOW).unwrap()),
            "2023-10-05T18:33:02.000Z"
        );
        assert_eq!(
            iso(parse_device_time("31 March 2016 13:04:55", &z, NOW).unwrap()),
            "2016-03-31T13:04:55.000Z"
        );
        assert_eq!(
            iso(parse_device_time("(Apr 26 2023 13:08:12)", &z, NOW).unwrap()),
            "2023-04-26T13:08:12.000Z"
        );
        assert_eq!(
            iso(parse_device_time("1396032820000", &z, NOW).unwrap()),
            "2014-03-28T18:53:40.000Z"
        );
        assert_eq!(
            iso(parse_device_time("Oct 05 2023 18:33:02.250 UTC", &z, NOW).unwrap()),
            "2023-10-05T18:33:02.250Z"
        );
        assert!(parse_device_time("yesterday", &z, NOW).is_none());
        assert!(parse_device_time("Foo 05 2023 18:33:02", &z, NOW).is_none());
        assert!(parse_device_time("Feb 30 2023 18:33:02", &z, NOW).is_none());
    }

    #[test]
    fn configured_zone_applies_to_zoneless_times() {
        let paris = Zone::parse("Europe/Paris").unwrap();
        assert_eq!(
            iso(parse_device_time("Oct 05 2023 18:33:02", &paris, NOW).unwrap()),
            "2023-10-05T16:33:02.000Z"
        );
        let fixed = Zone::parse("-0500").unwrap();
        assert_eq!(
            iso(parse_device_time("Oct 05 2023 18:33:02", &fixed, NOW).unwrap()),
            "2023-10-05T23:33:02.000Z"
        );
        // An explicit zone in the value wins over the configured one.
        assert_eq!(
            iso(parse_device_time("Oct 05 2023 18:33:02 UTC", &paris, NOW).unwrap()),
            "2023-10-05T18:33:02.000Z"
        );
    }

    #[test]
    fn yearless_times_take_the_current_year_or_the_previous() {
        let z = Zone::Utc;
        assert_eq!(
            iso(parse_device_time("Nov 14 01:00:00", &z, NOW).unwrap()),
            "2023-11-14T01:00:00.000Z"
        );
        // Dec 31 read on Jan 1st belongs to the year before.
        let jan1 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        assert_eq!(
            iso(parse_device_time("Dec 31 23:59:59", &z, jan1).unwrap()),
            "2023-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn renderings() {
        assert_eq!(iso(1_453_290_121_336), "2016-01-20T11:42:01.336Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
        let mut v = vec![];
        write_python(&mut v, 1_649_772_598_763);
        assert_eq!(String::from_utf8(v).unwrap(), "2022-04-12T14:09:58.763000Z");
        let mut v = vec![];
        write_python(&mut v, 1_234_567_890_000);
        assert_eq!(String::from_utf8(v).unwrap(), "2009-02-13T23:31:30Z");
    }

    #[test]
    fn civil_matches_chrono() {
        for days in [-800_000i64, -1, 0, 1, 59, 365, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            let c = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
            assert_eq!(
                (y as i32, m, d),
                (
                    chrono::Datelike::year(&c),
                    chrono::Datelike::month(&c),
                    chrono::Datelike::day(&c)
                )
            );
        }
    }
}
