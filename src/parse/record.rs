//! The parsed shape every format (CEF, LEEF, W3C) is reduced to: a header and an ordered list of
//! borrowed `key=value` fields, plus an index from the keys the mappers know to their last
//! occurrence. Values stay raw (escaped) until a mapper asks for them, because the profiles
//! disagree: Elastic unescapes, SEKOIA keeps the backslashes.

use std::borrow::Cow;

use super::keytable;
use super::syslog::Syslog;

/// Which wire format a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cef,
    Leef,
    W3c,
}

/// How a field's raw text is unescaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Raw text has no backslash: the value is the raw text.
    None,
    /// CEF extension rules: `\=` `\\` `\n` `\r`; any other `\x` drops the backslash.
    Cef,
}

/// One `key=value` pair, borrowed from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub key: &'a str,
    pub raw: Cow<'a, str>,
    pub escape: Escape,
}

impl<'a> Field<'a> {
    /// The value with the format's escapes resolved. Borrows unless an escape was present.
    pub fn value(&self) -> Cow<'_, str> {
        match self.escape {
            Escape::None => Cow::Borrowed(&self.raw),
            Escape::Cef => unescape_cef_value(&self.raw),
        }
    }
}

/// Unescape a CEF extension value (CEF spec + Elastic's decoder: unknown `\x` keeps `x`).
pub fn unescape_cef_value(raw: &str) -> Cow<'_, str> {
    let b = raw.as_bytes();
    let Some(first) = memchr::memchr(b'\\', b) else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    let mut start = 0;
    let mut i = first;
    // Backslashes are ASCII, so every cut below is on a character boundary.
    loop {
        out.push_str(&raw[start..i]);
        match b.get(i + 1) {
            Some(b'n') => out.push('\n'),
            Some(b'r') => out.push('\r'),
            Some(_) => {
                // Keep the escaped character itself (one full UTF-8 character).
                let ch = raw[i + 1..].chars().next().unwrap_or('\\');
                out.push(ch);
                i += ch.len_utf8() - 1;
            }
            None => {
                out.push('\\');
                return Cow::Owned(out);
            }
        }
        start = i + 2;
        match memchr::memchr(b'\\', &b[start..]) {
            Some(n) => i = start + n,
            None => break,
        }
    }
    out.push_str(&raw[start..]);
    Cow::Owned(out)
}

/// Unescape a CEF header field (`\|` and `\\`; other backslashes stay).
pub fn unescape_cef_header(raw: &str) -> Cow<'_, str> {
    if !raw.as_bytes().contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('|') | Some('\\') => {
                    out.push(chars.next().unwrap_or('\\'));
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The CEF/LEEF header (W3C records get Imperva's Cloud WAF defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header<'a> {
    /// Format version (`0` for `CEF:0`, `1.0`/`2.0` for LEEF).
    pub version: Cow<'a, str>,
    pub vendor: Cow<'a, str>,
    pub product: Cow<'a, str>,
    pub device_version: Cow<'a, str>,
    /// CEF signature/class id, LEEF event id.
    pub class_id: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub severity: Cow<'a, str>,
}

/// A parsed event, borrowing from the frame's text.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub format: Format,
    pub syslog: Option<Syslog<'a>>,
    pub header: Header<'a>,
    pub fields: Vec<Field<'a>>,
    /// The key index, when the parser built it while scanning (CEF does).
    pub index: Option<KeyIndex>,
}

impl<'a> Record<'a> {
    /// Build the known-key index (last occurrence wins, as in Elastic's decoder).
    pub fn index(&self) -> KeyIndex {
        match &self.index {
            Some(idx) => idx.clone(),
            None => self.index_from_fields(),
        }
    }

    /// The key index computed from the fields (what a parser's own index must equal).
    pub fn index_from_fields(&self) -> KeyIndex {
        let mut idx = KeyIndex::default();
        for (i, f) in self.fields.iter().enumerate() {
            if let Some(k) = Key::lookup(self.format, f.key) {
                idx.set(k, i);
            }
        }
        idx
    }
}

/// The extension keys the mappers read, with CEF short and long names folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Key {
    Act,
    AdditionalReqHeaders,
    AdditionalResHeaders,
    App,
    Cat,
    Ccode,
    Cicode,
    Cpt,
    Customer,
    DeviceExternalId,
    DeviceFacility,
    Dhost,
    Dpt,
    Dproc,
    Dst,
    Duser,
    End,
    FileId,
    FilePermission,
    FileType,
    In,
    Msg,
    Postbody,
    Proto,
    Qstr,
    Ref,
    Request,
    RequestClientApplication,
    RequestMethod,
    Rt,
    Sip,
    SiteId,
    SiteTag,
    SourceServiceName,
    Spt,
    Src,
    Start,
    Suid,
    Suser,
    Tag,
    Ver,
    Xff,
    /// `csN` / `deviceCustomStringN`, N in 1..=MAX_CUSTOM.
    Cs(u8),
    /// `csNLabel` / `deviceCustomStringNLabel`.
    CsLabel(u8),
    /// `cnN` / `deviceCustomNumberN`.
    Cn(u8),
    CnLabel(u8),
}

/// Highest `csN` index tracked (SecureSphere DAM audit goes up to cs21).
pub const MAX_CUSTOM: u8 = 30;
const SIMPLE_KEYS: usize = 42;

impl Key {
    /// Case-insensitive lookup of a known key. LEEF from Imperva uses other names for the same
    /// facts (`dst` is the origin server there, `srcPort` the client port), folded in here.
    ///
    /// One probe of a hash table built once from [`Key::lookup_reference`]'s names; keys the
    /// table does not hold (`cs01`) fall back to the reference.
    #[inline]
    pub fn lookup(format: Format, key: &str) -> Option<Key> {
        match keytable::tables().get(format, key.as_bytes()) {
            keytable::Hit::Found(k) => Some(k),
            keytable::Hit::Absent => None,
            keytable::Hit::Unsure => Key::lookup_reference(format, key),
        }
    }

    /// The reference lookup: lower-case the key and match it against every name.
    pub fn lookup_reference(format: Format, key: &str) -> Option<Key> {
        let bytes = key.as_bytes();
        if bytes.len() > 40 || bytes.is_empty() {
            return None;
        }
        let mut buf = [0u8; 40];
        let lower = &mut buf[..bytes.len()];
        for (d, s) in lower.iter_mut().zip(bytes) {
            *d = s.to_ascii_lowercase();
        }
        let lower: &[u8] = lower;
        if format == Format::Leef {
            let leef = match lower {
                b"dst" => Some(Key::Sip),
                b"dstport" => Some(Key::Spt),
                b"srcport" => Some(Key::Cpt),
                b"calcountryorregion" => Some(Key::Ccode),
                b"popname" => Some(Key::DeviceFacility),
                b"proto" => Some(Key::App),
                b"protover" => Some(Key::Ver),
                b"cat" => Some(Key::Act),
                b"url" => Some(Key::Request),
                _ => None,
            };
            if leef.is_some() {
                return leef;
            }
        }
        Some(match lower {
            b"act" | b"deviceaction" => Key::Act,
            b"additionalreqheaders" => Key::AdditionalReqHeaders,
            b"additionalresheaders" => Key::AdditionalResHeaders,
            b"app" | b"applicationprotocol" => Key::App,
            b"cat" | b"deviceeventcategory" => Key::Cat,
            b"ccode" => Key::Ccode,
            b"cicode" => Key::Cicode,
            b"cpt" => Key::Cpt,
            b"customer" => Key::Customer,
            b"deviceexternalid" => Key::DeviceExternalId,
            b"devicefacility" => Key::DeviceFacility,
            b"dhost" | b"destinationhostname" => Key::Dhost,
            b"dpt" | b"destinationport" => Key::Dpt,
            b"dproc" | b"destinationprocessname" => Key::Dproc,
            b"dst" | b"destinationaddress" => Key::Dst,
            b"duser" | b"destinationusername" => Key::Duser,
            b"end" | b"endtime" => Key::End,
            b"fileid" => Key::FileId,
            b"filepermission" => Key::FilePermission,
            b"filetype" => Key::FileType,
            b"in" | b"bytesin" => Key::In,
            b"msg" | b"message" => Key::Msg,
            b"postbody" => Key::Postbody,
            b"proto" | b"transportprotocol" => Key::Proto,
            b"qstr" => Key::Qstr,
            b"ref" => Key::Ref,
            b"request" | b"requesturl" => Key::Request,
            b"requestclientapplication" => Key::RequestClientApplication,
            b"requestmethod" => Key::RequestMethod,
            b"rt" | b"devicereceipttime" => Key::Rt,
            b"sip" => Key::Sip,
            b"siteid" => Key::SiteId,
            b"sitetag" => Key::SiteTag,
            b"sourceservicename" => Key::SourceServiceName,
            b"spt" | b"sourceport" => Key::Spt,
            b"src" | b"sourceaddress" => Key::Src,
            b"start" | b"starttime" => Key::Start,
            b"suid" | b"sourceuserid" => Key::Suid,
            b"suser" | b"sourceusername" => Key::Suser,
            b"tag" => Key::Tag,
            b"ver" => Key::Ver,
            b"xff" => Key::Xff,
            _ => return numbered(lower),
        })
    }

    #[inline(always)]
    fn slot(self) -> usize {
        match self {
            Key::Cs(n) => SIMPLE_KEYS + n as usize,
            Key::CsLabel(n) => SIMPLE_KEYS + (MAX_CUSTOM as usize + 1) + n as usize,
            Key::Cn(n) => SIMPLE_KEYS + 2 * (MAX_CUSTOM as usize + 1) + n as usize,
            Key::CnLabel(n) => SIMPLE_KEYS + 2 * (MAX_CUSTOM as usize + 1) + 4 + n as usize,
            simple => simple.simple_index(),
        }
    }

    fn simple_index(self) -> usize {
        // SAFETY: `Key` is `#[repr(u8)]`, so (RFC 2195) every variant starts with its u8
        // discriminant; the simple variants are declared first, numbered 0..SIMPLE_KEYS.
        let tag = unsafe { *(&self as *const Key as *const u8) } as usize;
        debug_assert!(tag < SIMPLE_KEYS);
        tag
    }
}

/// Every (lower-case) name [`Key::lookup_reference`] knows for a format, for the fast table.
pub(crate) fn known_names(format: Format) -> Vec<(String, Key)> {
    const SIMPLE: &[&str] = &[
        "act",
        "deviceaction",
        "additionalreqheaders",
        "additionalresheaders",
        "app",
        "applicationprotocol",
        "cat",
        "deviceeventcategory",
        "ccode",
        "cicode",
        "cpt",
        "customer",
        "deviceexternalid",
        "devicefacility",
        "dhost",
        "destinationhostname",
        "dpt",
        "destinationport",
        "dproc",
        "destinationprocessname",
        "dst",
        "destinationaddress",
        "duser",
        "destinationusername",
        "end",
        "endtime",
        "fileid",
        "filepermission",
        "filetype",
        "in",
        "bytesin",
        "msg",
        "message",
        "postbody",
        "proto",
        "transportprotocol",
        "qstr",
        "ref",
        "request",
        "requesturl",
        "requestclientapplication",
        "requestmethod",
        "rt",
        "devicereceipttime",
        "sip",
        "siteid",
        "sitetag",
        "sourceservicename",
        "spt",
        "sourceport",
        "src",
        "sourceaddress",
        "start",
        "starttime",
        "suid",
        "sourceuserid",
        "suser",
        "sourceusername",
        "tag",
        "ver",
        "xff",
        "dstport",
        "srcport",
        "calcountryorregion",
        "popname",
        "protover",
        "url",
    ];
    let mut names: Vec<String> = SIMPLE.iter().map(|s| s.to_string()).collect();
    for (short, long, max) in [
        ("cs", "devicecustomstring", MAX_CUSTOM),
        ("cn", "devicecustomnumber", 3),
    ] {
        for n in 1..=max {
            for prefix in [short, long] {
                names.push(format!("{prefix}{n}"));
                names.push(format!("{prefix}{n}label"));
            }
        }
    }
    names
        .into_iter()
        .filter_map(|n| Key::lookup_reference(format, &n).map(|k| (n, k)))
        .collect()
}

/// `csN`, `csNLabel`, `cnN`, `cnNLabel` and their long forms (already lower-cased).
fn numbered(lower: &[u8]) -> Option<Key> {
    let (rest, string) = if let Some(r) = lower.strip_prefix(b"devicecustomstring") {
        (r, true)
    } else if let Some(r) = lower.strip_prefix(b"devicecustomnumber") {
        (r, false)
    } else if let Some(r) = lower.strip_prefix(b"cs") {
        (r, true)
    } else if let Some(r) = lower.strip_prefix(b"cn") {
        (r, false)
    } else {
        return None;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 2 {
        return None;
    }
    let n: u8 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let label = match &rest[digits..] {
        b"" => false,
        b"label" => true,
        _ => return None,
    };
    let max = if string { MAX_CUSTOM } else { 3 };
    if n == 0 || n > max {
        return None;
    }
    Some(match (string, label) {
        (true, false) => Key::Cs(n),
        (true, true) => Key::CsLabel(n),
        (false, false) => Key::Cn(n),
        (false, true) => Key::CnLabel(n),
    })
}

const SLOTS: usize = SIMPLE_KEYS + 2 * (MAX_CUSTOM as usize + 1) + 8;

/// Position (+1) of the last field for each known key; 0 means absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    slots: [u16; SLOTS],
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex { slots: [0; SLOTS] }
    }
}

impl KeyIndex {
    #[inline]
    pub(crate) fn set(&mut self, k: Key, i: usize) {
        if let Ok(v) = u16::try_from(i + 1) {
            self.slots[k.slot()] = v;
        }
    }

    /// Field position of `k`, if present.
    #[inline]
    pub fn pos(&self, k: Key) -> Option<usize> {
        match self.slots[k.slot()] {
            0 => None,
            v => Some(v as usize - 1),
        }
    }

    pub fn has(&self, k: Key) -> bool {
        self.pos(k).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_fold_case_and_long_names() {
        assert_eq!(Key::lookup(Format::Cef, "fileid"), Some(Key::FileId));
        assert_eq!(Key::lookup(Format::Cef, "fileId"), Some(Key::FileId));
        assert_eq!(
            Key::lookup(Format::Cef, "deviceExternalID"),
            Some(Key::DeviceExternalId)
        );
        assert_eq!(Key::lookup(Format::Cef, "sourceAddress"), Some(Key::Src));
        assert_eq!(Key::lookup(Format::Cef, "cs21Label"), Some(Key::CsLabel(21)));
        assert_eq!(Key::lookup(Format::Cef, "deviceCustomString3"), Some(Key::Cs(3)));
        assert_eq!(Key::lookup(Format::Cef, "cn1"), Some(Key::Cn(1)));
        assert_eq!(Key::lookup(Format::Cef, "cs0"), None);
        assert_eq!(Key::lookup(Format::Cef, "csx"), None);
        assert_eq!(Key::lookup(Format::Leef, "dst"), Some(Key::Sip));
        assert_eq!(Key::lookup(Format::Cef, "dst"), Some(Key::Dst));
    }

    #[test]
    fn every_slot_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        let mut keys = vec![];
        for n in 1..=MAX_CUSTOM {
            keys.push(Key::Cs(n));
            keys.push(Key::CsLabel(n));
        }
        for n in 1..=3 {
            keys.push(Key::Cn(n));
            keys.push(Key::CnLabel(n));
        }
        for k in keys {
            assert!(seen.insert(k.slot()), "{k:?}");
            assert!(k.slot() < SLOTS);
        }
        assert_eq!(Key::Xff.slot(), SIMPLE_KEYS - 1);
    }

    #[test]
    fn cef_value_unescape() {
        assert_eq!(unescape_cef_value(r"a\=b\\c\nd\re\x"), "a=b\\c\nd\rex");
        assert_eq!(unescape_cef_value("trailing\\"), "trailing\\");
        assert_eq!(unescape_cef_value("caf\\\u{e9} \\\u{6771}x"), "caf\u{e9} \u{6771}x");
        assert_eq!(unescape_cef_value("\\\\\\="), "\\=");
        assert_eq!(unescape_cef_header(r"a\|b\\c\d"), r"a|b\c\d");
    }
}
