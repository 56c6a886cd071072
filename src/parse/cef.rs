//! CEF: the seven-field header (`\|` and `\\` escapes) and the extension, whose pairs are found
//! by `key=` boundaries, never by splitting: Imperva values hold spaces, raw `|`, JSON, `\=`
//! and attack payloads. A key is a run of `[A-Za-z0-9_.,\[\]]` preceded by a space (or the
//! start of the extension) and followed by an unescaped `=`; a value runs to the space before
//! the next key. Everything is borrowed; values are unescaped only when a mapper asks.

use std::borrow::Cow;

use super::ParseError;
use super::record::{Escape, Field, Format, Header, Key, KeyIndex, Record, unescape_cef_header};

/// Cap on extension pairs per event: a frame full of `a=` cannot make us allocate without end.
pub const MAX_FIELDS: usize = 1024;

/// Parse a CEF payload. `text` may carry anything before `CEF:` (it is ignored here; the
/// syslog envelope is split off by the caller).
pub fn parse(text: &str) -> Result<Record<'_>, ParseError> {
    parse_into(text, Vec::with_capacity(64))
}

/// [`parse`] into a caller's (empty) field vector.
pub fn parse_into<'a>(text: &'a str, mut out: Vec<Field<'a>>) -> Result<Record<'a>, ParseError> {
    out.clear();
    let start = super::CEF_MARK.find(text.as_bytes()).ok_or(ParseError::NotCef)?;
    let body = &text[start + 4..];
    let (fields, ext) = split_header::<7>(body).ok_or_else(|| ParseError::Header {
        format: "CEF",
        found: count_unescaped_pipes(body),
        wanted: 7,
    })?;
    let header = Header {
        version: unescape_cef_header(fields[0]),
        vendor: unescape_cef_header(fields[1]),
        product: unescape_cef_header(fields[2]),
        device_version: unescape_cef_header(fields[3]),
        class_id: unescape_cef_header(fields[4]),
        name: unescape_cef_header(fields[5]),
        severity: unescape_cef_header(fields[6]),
    };
    let mut index = KeyIndex::default();
    scan_extension(ext, &mut out, Some((&mut index, Format::Cef)))?;
    Ok(Record {
        format: Format::Cef,
        syslog: None,
        header,
        fields: out,
        index: Some(index),
    })
}

/// Split the first `N` `|`-terminated header fields (honouring `\|` and `\\`) from the rest.
pub(crate) fn split_header<const N: usize>(s: &str) -> Option<([&str; N], &str)> {
    let b = s.as_bytes();
    let mut fields = [""; N];
    let mut n = 0;
    let mut field_start = 0;
    let mut i = 0;
    while i < b.len() && n < N {
        match b[i] {
            b'\\' => i += 2,
            b'|' => {
                fields[n] = &s[field_start..i];
                n += 1;
                i += 1;
                field_start = i;
            }
            _ => i += 1,
        }
    }
    if n < N {
        return None;
    }
    Some((fields, &s[field_start..]))
}

fn count_unescaped_pipes(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'|' => {
                n += 1;
                i += 1
            }
            _ => i += 1,
        }
    }
    n
}

/// Bytes allowed in an extension key: `[A-Za-z0-9_.,\[\]]`, as a lookup table.
static KEY_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b',' | b'[' | b']');
        i += 1;
    }
    t
};

#[inline]
pub(crate) fn is_key_byte(b: u8) -> bool {
    KEY_BYTES[b as usize]
}

/// Find the `key=value` pairs of a CEF-style extension (space separated, `key=` boundaries).
/// With `index`, each known key's position is noted as it is found (last one wins), so the
/// record's key index needs no second pass.
pub(crate) fn scan_extension<'a>(
    ext: &'a str,
    out: &mut Vec<Field<'a>>,
    mut index: Option<(&mut KeyIndex, Format)>,
) -> Result<(), ParseError> {
    let mut note = |key: &str, at: usize| {
        if let Some((ix, format)) = index.as_mut() {
            if let Some(k) = Key::lookup(*format, key) {
                ix.set(k, at);
            }
        }
    };
    let b = ext.as_bytes();
    // Which values hold a backslash (and so need unescaping): the next backslash at or after
    // a value's start, found once per value at most and reused while it lies ahead.
    let mut escapes = Backslashes {
        b,
        next: memchr::memchr(b'\\', b).unwrap_or(usize::MAX),
    };
    // (key start, key end, value start) of the pair being read.
    let mut cur: Option<(usize, usize, usize)> = None;
    for eq in ByteHits::new(b, b'=') {
        // An odd run of backslashes before `=` escapes it.
        if eq > 0 && b[eq - 1] == b'\\' {
            let mut bs = 1;
            while eq > bs && b[eq - 1 - bs] == b'\\' {
                bs += 1;
            }
            if bs % 2 == 1 {
                continue;
            }
        }
        let ks = key_start(b, eq);
        if ks == eq {
            continue;
        }
        if ks > 0 && b[ks - 1] != b' ' {
            continue;
        }
        if let Some((pks, pke, pvs)) = cur {
            // The previous value ends at the space(s) before this key.
            let mut ve = ks;
            while ve > pvs && b[ve - 1] == b' ' {
                ve -= 1;
            }
            push(out, ext, pks, pke, pvs, ve.max(pvs), &mut escapes)?;
            note(ascii_cut(ext, pks, pke), out.len() - 1);
        } else if ext[..ks].trim() != "" {
            // Text before the first key is not a pair; keep it so nothing is lost.
            let t = ext[..ks].trim();
            push_raw(out, "", t, escape_of(t))?;
        }
        cur = Some((ks, eq, eq + 1));
    }
    match cur {
        Some((ks, ke, vs)) => {
            let mut ve = b.len();
            while ve > vs && matches!(b[ve - 1], b' ' | b'\t' | b'\r' | b'\n') {
                ve -= 1;
            }
            push(out, ext, ks, ke, vs, ve, &mut escapes)?;
            note(ascii_cut(ext, ks, ke), out.len() - 1);
        }
        None => {
            let t = ext.trim();
            if !t.is_empty() {
                push_raw(out, "", t, escape_of(t))?;
            }
        }
    }
    Ok(())
}

/// Start of the run of key bytes that ends at `eq` (`eq` itself when there is none).
#[inline]
pub(crate) fn key_start(b: &[u8], eq: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if eq >= 16 && eq <= b.len() {
        // SAFETY: reads `b[eq - 16..eq]`, inside `b` (checked just above).
        let not_key = unsafe { sse2_not_key_mask(b.as_ptr().add(eq - 16)) };
        if not_key != 0 {
            // The last byte that is not a key byte; the key starts after it.
            return eq - 16 + (31 - not_key.leading_zeros() as usize) + 1;
        }
        return key_start_scalar(b, eq - 16);
    }
    key_start_scalar(b, eq)
}

/// Reference for [`key_start`].
pub(crate) fn key_start_scalar(b: &[u8], eq: usize) -> usize {
    let mut ks = eq;
    while ks > 0 && is_key_byte(b[ks - 1]) {
        ks -= 1;
    }
    ks
}

/// Bit `i` set when byte `i` of the 16 at `p` is not in `[A-Za-z0-9_.,\[\]]`.
///
/// # Safety
/// `p` must be valid for 16 bytes of reads.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn sse2_not_key_mask(p: *const u8) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_sub_epi8, _mm_xor_si128,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline; the caller guarantees 16 readable bytes.
    unsafe {
        let v = _mm_loadu_si128(p as *const __m128i);
        // lo <= c <= hi, unsigned: (c - lo) ^ 0x80 <= (hi - lo) ^ 0x80, signed.
        let in_range = |x: __m128i, lo: u8, hi: u8| {
            let shifted = _mm_xor_si128(_mm_sub_epi8(x, _mm_set1_epi8(lo as i8)), _mm_set1_epi8(-128));
            let limit = _mm_set1_epi8(((hi - lo) ^ 0x80) as i8);
            // not (shifted > limit)
            _mm_xor_si128(_mm_cmpgt_epi8(shifted, limit), _mm_set1_epi8(-1))
        };
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        let lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let key = _mm_or_si128(
            _mm_or_si128(in_range(lower, b'a', b'z'), in_range(v, b'0', b'9')),
            _mm_or_si128(
                _mm_or_si128(eq(b'_'), eq(b'.')),
                _mm_or_si128(eq(b','), _mm_or_si128(eq(b'['), eq(b']'))),
            ),
        );
        !(_mm_movemask_epi8(key) as u32) & 0xFFFF
    }
}

/// Positions of one byte value, in order, from 64-byte bit masks: dense hits (an extension has
/// an `=` every 20 bytes or so) cost a bit scan each instead of a search call each.
pub(crate) struct ByteHits<'b> {
    b: &'b [u8],
    needle: u8,
    /// Start of the block `mask` describes.
    base: usize,
    mask: u64,
}

impl<'b> ByteHits<'b> {
    pub(crate) fn new(b: &'b [u8], needle: u8) -> Self {
        ByteHits {
            b,
            needle,
            base: 0,
            mask: block_mask(b, needle),
        }
    }
}

impl Iterator for ByteHits<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 64;
            if self.base >= self.b.len() {
                return None;
            }
            self.mask = block_mask(&self.b[self.base..], self.needle);
        }
        let i = self.base + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(i)
    }
}

/// Bit `i` set when `b[i] == needle`, for the first 64 bytes of `b`.
#[inline]
fn block_mask(b: &[u8], needle: u8) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if b.len() >= 64 {
        use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        // SAFETY: SSE2 is part of the x86_64 baseline; the four 16-byte loads read
        // `b[0..64]`, inside `b` (checked just above).
        unsafe {
            let n = _mm_set1_epi8(needle as i8);
            let p = b.as_ptr();
            let m = |o: usize| {
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(p.add(o) as *const __m128i), n)) as u16 as u64
            };
            return m(0) | m(16) << 16 | m(32) << 32 | m(48) << 48;
        }
    }
    block_mask_scalar(b, needle)
}

/// Reference for [`block_mask`].
fn block_mask_scalar(b: &[u8], needle: u8) -> u64 {
    b.iter()
        .take(64)
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u64::from(c == needle) << i))
}

/// The next backslash of an extension at or after a position, searched forward only.
struct Backslashes<'b> {
    b: &'b [u8],
    /// Position of a backslash at or after the last query (`usize::MAX`: none left).
    next: usize,
}

impl Backslashes<'_> {
    /// Whether `b[start..end]` holds a backslash (queries come with non-decreasing `start`).
    #[inline]
    fn within(&mut self, start: usize, end: usize) -> bool {
        if self.next < start {
            self.next = memchr::memchr(b'\\', &self.b[start..]).map_or(usize::MAX, |n| start + n);
        }
        self.next < end
    }
}

fn escape_of(raw: &str) -> Escape {
    if raw.as_bytes().contains(&b'\\') {
        Escape::Cef
    } else {
        Escape::None
    }
}

#[inline]
fn push<'a>(
    out: &mut Vec<Field<'a>>,
    ext: &'a str,
    ks: usize,
    ke: usize,
    vs: usize,
    ve: usize,
    escapes: &mut Backslashes<'_>,
) -> Result<(), ParseError> {
    let escape = if escapes.within(vs, ve) {
        Escape::Cef
    } else {
        Escape::None
    };
    push_raw(out, ascii_cut(ext, ks, ke), ascii_cut(ext, vs, ve), escape)
}

/// `&s[a..b]` without the character-boundary checks, for cuts the scanner makes: each end is
/// the end of the text or next to an ASCII byte it found (` `, `=`, or the key bytes), so it is
/// always a boundary.
#[inline(always)]
fn ascii_cut(s: &str, a: usize, b: usize) -> &str {
    debug_assert!(s.is_char_boundary(a) && s.is_char_boundary(b));
    if a <= b && b <= s.len() {
        // SAFETY: in range (checked just above); both ends are character boundaries (see the
        // doc comment; asserted in debug builds, and the property tests run the scanner on
        // arbitrary UTF-8).
        unsafe { s.get_unchecked(a..b) }
    } else {
        ""
    }
}

#[inline]
fn push_raw<'a>(out: &mut Vec<Field<'a>>, key: &'a str, raw: &'a str, escape: Escape) -> Result<(), ParseError> {
    if out.len() >= MAX_FIELDS {
        return Err(ParseError::TooManyFields(MAX_FIELDS));
    }
    // Room first, then the field written in place: a `push` with its growth call in between
    // stages the field on the stack and copies it back with wider loads, which stalls.
    if out.len() == out.capacity() {
        out.reserve(64);
    }
    let at = out.spare_capacity_mut();
    if let Some(cell) = at.first_mut() {
        cell.write(Field {
            key,
            raw: Cow::Borrowed(raw),
            escape,
        });
        // SAFETY: the cell just written is the first spare one, now initialised.
        unsafe { out.set_len(out.len() + 1) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(line: &str) -> Vec<(String, String)> {
        parse(line)
            .unwrap()
            .fields
            .iter()
            .map(|f| (f.key.to_string(), f.value().into_owned()))
            .collect()
    }

    #[test]
    fn index_built_while_scanning_equals_the_one_from_fields() {
        for line in [
            "CEF:0|v|p|1|c|n|3|ccode=IL ccode=FR cs1=a cs1Label=b junk=1 deviceCustomString1=c",
            "CEF:0|v|p|1|c|n|3|lead text src=1.2.3.4 SRC=5.6.7.8 x=\\= y=2",
            "CEF:0|v|p|1|c|n|3|",
            "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| fileId=1 sourceServiceName=a requestClientApplication=Mozilla/5.0 (X11) start=1 end=2 cn1=200 cs7=1.5 cs7Label=latitude",
        ] {
            let r = parse(line).unwrap();
            assert!(r.index.is_some());
            assert_eq!(r.index(), r.index_from_fields(), "{line}");
        }
    }

    #[test]
    fn key_start_equals_the_byte_loop() {
        // Every byte value at every position of a window, around runs of key bytes.
        let mut b: Vec<u8> = b"x aBcD_.,[]09zZ=".repeat(4);
        for at in 0..40 {
            for c in 0u8..=255 {
                let keep = b[at];
                b[at] = c;
                for eq in [16, 20, 31, 32, 40, 47, 48, 63, 64] {
                    assert_eq!(key_start(&b, eq), key_start_scalar(&b, eq), "byte {c} at {at}, eq {eq}");
                }
                b[at] = keep;
            }
        }
        let long = format!("a {}=1", "k".repeat(40));
        assert_eq!(key_start(long.as_bytes(), 42), 2);
    }

    #[test]
    fn byte_hits_equal_a_plain_search() {
        let mut line = Vec::new();
        for i in 0..300usize {
            line.push(if i % 7 == 0 || i % 64 == 63 || i % 64 == 0 {
                b'='
            } else {
                b'a' + (i % 26) as u8
            });
        }
        for start in 0..70 {
            for len in [0, 1, 15, 63, 64, 65, 127, 128, 129, 200] {
                let b = &line[start..(start + len).min(line.len())];
                let want: Vec<usize> = b
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'=')
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(
                    ByteHits::new(b, b'=').collect::<Vec<_>>(),
                    want,
                    "start {start} len {len}"
                );
                assert_eq!(block_mask(b, b'='), block_mask_scalar(b, b'='));
            }
        }
    }

    #[test]
    fn header_fields() {
        let r = parse("CEF:0|Imperva Inc.|SecureSphere|15.1.0|User logged in|User admin logged in.|High|suser=admin")
            .unwrap();
        assert_eq!(r.header.version, "0");
        assert_eq!(r.header.vendor, "Imperva Inc.");
        assert_eq!(r.header.class_id, "User logged in");
        assert_eq!(r.header.severity, "High");
        assert_eq!(r.fields.len(), 1);
    }

    #[test]
    fn cef_header_with_escaped_pipe_and_backslash() {
        let r = parse(r"CEF:0|Imp\|erva|Secure\\Sphere|1|c|na\|me|Low|a=b").unwrap();
        assert_eq!(r.header.vendor, "Imp|erva");
        assert_eq!(r.header.product, r"Secure\Sphere");
        assert_eq!(r.header.name, "na|me");
        assert_eq!(
            pairs(r"CEF:0|Imp\|erva|Secure\\Sphere|1|c|na\|me|Low|a=b"),
            vec![("a".into(), "b".into())]
        );
    }

    #[test]
    fn cef_value_with_spaces_pipes_and_escaped_equals() {
        let p = pairs(r"CEF:0|v|p|1|c|n|3| request=site/a.htm?Sip\=1.1.1.1 | cat /etc/passwd requestMethod=GET");
        assert_eq!(
            p[0],
            ("request".into(), "site/a.htm?Sip=1.1.1.1 | cat /etc/passwd".into())
        );
        assert_eq!(p[1], ("requestMethod".into(), "GET".into()));
    }

    #[test]
    fn cef_value_with_double_backslash_before_equals() {
        // `\\=` is an escaped backslash followed by a real `=`... inside a value (no key before it).
        let p = pairs(r"CEF:0|v|p|1|c|n|3|a=x\\ b=y\\\=z");
        assert_eq!(p, vec![("a".into(), r"x\".into()), ("b".into(), r"y\=z".into())]);
    }

    #[test]
    fn cef_empty_values_and_duplicate_keys() {
        let p = pairs("CEF:0|v|p|1|c|n|3|cs7= cs7Label=UserGroup ccode=IL ccode=FR x=");
        assert_eq!(
            p,
            vec![
                ("cs7".into(), "".into()),
                ("cs7Label".into(), "UserGroup".into()),
                ("ccode".into(), "IL".into()),
                ("ccode".into(), "FR".into()),
                ("x".into(), "".into())
            ]
        );
        let r = parse("CEF:0|v|p|1|c|n|3|ccode=IL ccode=FR").unwrap();
        let idx = r.index();
        assert_eq!(r.fields[idx.pos(crate::parse::Key::Ccode).unwrap()].raw, "FR");
    }

    #[test]
    fn cef_json_value_and_raw_equals_inside_value() {
        let p = pairs(
            r#"CEF:0|v|p|1|c|n|3|additionalResHeaders=[{"Content-Type":"text/html; charset\=UTF-8"}] cs5Label=clappsigdproc=Browser"#,
        );
        assert_eq!(p[0].1, r#"[{"Content-Type":"text/html; charset=UTF-8"}]"#);
        assert_eq!(p[1], ("cs5Label".into(), "clappsigdproc=Browser".into()));
    }

    #[test]
    fn cef_empty_extension() {
        assert!(parse("CEF:0|v|p|1|c|n|3|").unwrap().fields.is_empty());
        assert!(parse("CEF:0|v|p|1|c|n|3|   ").unwrap().fields.is_empty());
    }

    #[test]
    fn cef_keys_with_dots_and_brackets() {
        let p = pairs("CEF:0|v|p|1|c|n|3|ad.user.name=bob flex[0]=1 a,b=2");
        assert_eq!(p[0], ("ad.user.name".into(), "bob".into()));
        assert_eq!(p[1], ("flex[0]".into(), "1".into()));
        assert_eq!(p[2], ("a,b".into(), "2".into()));
    }

    #[test]
    fn cef_short_header_is_an_error() {
        let e = parse("CEF:0|v|p|1").unwrap_err();
        assert!(e.to_string().contains("3 of 7"), "{e}");
        assert!(matches!(parse("hello"), Err(ParseError::NotCef)));
    }

    #[test]
    fn text_before_first_key_is_kept() {
        let p = pairs("CEF:0|v|p|1|c|n|3|junk here a=1");
        assert_eq!(p[0], ("".into(), "junk here".into()));
        assert_eq!(p[1], ("a".into(), "1".into()));
    }

    #[test]
    fn too_many_fields_is_an_error() {
        let line = format!("CEF:0|v|p|1|c|n|3|{}", "a=1 ".repeat(MAX_FIELDS + 1));
        assert!(matches!(parse(&line), Err(ParseError::TooManyFields(_))));
    }
}
