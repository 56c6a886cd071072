//! A flat list of `(dotted.path, value)` pairs written straight into a reused byte buffer as
//! nested JSON. Mappers add fields in any order; [`Doc::write`] sorts by path segments so
//! siblings meet, then streams the objects. No `serde_json::Value` tree on the hot path.

use std::borrow::Cow;

/// A field value.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A float written with at least one decimal (`2.0`), as Python writes floats.
    FloatDecimal(f64),
    Bool(bool),
    /// A list of strings.
    Strs(Vec<Cow<'a, str>>),
    /// Already-serialised JSON, written verbatim (must be valid JSON).
    Json(Cow<'a, str>),
    /// Epoch milliseconds, rendered per [`TsStyle`].
    Ts(i64, TsStyle),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsStyle {
    /// `2023-10-05T18:33:02.000Z`
    Millis,
    /// `2022-04-12T14:09:58.763000Z` / `2009-02-13T23:31:30Z`
    Python,
}

/// Fields of one output document.
#[derive(Debug, Default)]
pub struct Doc<'a> {
    entries: Vec<(Cow<'static, str>, Val<'a>)>,
}

impl<'a> Doc<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Doc { entries: Vec::with_capacity(n) }
    }

    /// Set a field; a later set of the same path wins.
    pub fn put(&mut self, path: &'static str, v: Val<'a>) {
        self.entries.push((Cow::Borrowed(path), v));
    }

    pub fn put_owned(&mut self, path: String, v: Val<'a>) {
        self.entries.push((Cow::Owned(path), v));
    }

    /// Set a string field unless it is empty (both profiles drop empty values).
    pub fn str(&mut self, path: &'static str, s: impl Into<Cow<'a, str>>) {
        let s = s.into();
        if !s.is_empty() {
            self.put(path, Val::Str(s));
        }
    }

    pub fn int(&mut self, path: &'static str, v: i64) {
        self.put(path, Val::Int(v));
    }

    pub fn remove(&mut self, path: &str) {
        self.entries.retain(|(p, _)| p != path);
    }

    pub fn get(&self, path: &str) -> Option<&Val<'a>> {
        self.entries.iter().rev().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    pub fn has(&self, path: &str) -> bool {
        self.entries.iter().any(|(p, _)| p == path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the document as one JSON object (no trailing newline). `prefix` fields (e.g. `_id`)
    /// are written first, verbatim.
    pub fn write(mut self, out: &mut Vec<u8>, prefix: &[(&str, &str)]) {
        // Stable sort by segments keeps insertion order among equal paths: the last one wins.
        self.entries.sort_by(|a, b| cmp_segments(&a.0, &b.0));
        out.push(b'{');
        let mut first_top = true;
        for (k, v) in prefix {
            if !first_top {
                out.push(b',');
            }
            first_top = false;
            write_str(out, k);
            out.push(b':');
            write_str(out, v);
        }
        // Open object path and whether each open level already has a member.
        let mut open: Vec<&str> = Vec::with_capacity(8);
        let mut has_member: Vec<bool> = vec![!first_top];
        let n = self.entries.len();
        for i in 0..n {
            let path: &str = &self.entries[i].0;
            if i + 1 < n && self.entries[i + 1].0 == self.entries[i].0 {
                continue; // superseded by a later set
            }
            let segs: Vec<&str> = path.split('.').collect();
            let (parents, leaf) = segs.split_at(segs.len() - 1);
            let common = open.iter().zip(parents.iter()).take_while(|(a, b)| a == b).count();
            while open.len() > common {
                open.pop();
                has_member.pop();
                out.push(b'}');
            }
            for p in &parents[common..] {
                let level = has_member.last_mut().expect("root level");
                if *level {
                    out.push(b',');
                }
                *level = true;
                write_str(out, p);
                out.extend_from_slice(b":{");
                open.push(p);
                has_member.push(false);
            }
            let level = has_member.last_mut().expect("root level");
            if *level {
                out.push(b',');
            }
            *level = true;
            write_str(out, leaf[0]);
            out.push(b':');
            write_val(out, &self.entries[i].1);
        }
        for _ in 0..open.len() {
            out.push(b'}');
        }
        out.push(b'}');
    }
}

fn cmp_segments(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('.').cmp(b.split('.'))
}

fn write_val(out: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Str(s) => write_str(out, s),
        Val::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Val::UInt(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Val::Float(f) | Val::FloatDecimal(f) if !f.is_finite() => out.extend_from_slice(b"null"),
        Val::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                out.extend_from_slice(itoa::Buffer::new().format(*f as i64).as_bytes());
            } else {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes());
            }
        }
        Val::FloatDecimal(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                out.extend_from_slice(itoa::Buffer::new().format(*f as i64).as_bytes());
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes());
            }
        }
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Strs(list) => {
            out.push(b'[');
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s);
            }
            out.push(b']');
        }
        Val::Json(j) => out.extend_from_slice(j.as_bytes()),
        Val::Ts(ms, TsStyle::Millis) => {
            out.push(b'"');
            crate::parse::time::write_millis(out, *ms);
            out.push(b'"');
        }
        Val::Ts(ms, TsStyle::Python) => {
            out.push(b'"');
            crate::parse::time::write_python(out, *ms);
            out.push(b'"');
        }
    }
}

/// Write `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&b[start..i]);
                const H: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(H[(c >> 4) as usize]);
                out.push(H[(c & 15) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(doc: Doc<'_>) -> serde_json::Value {
        let mut out = vec![];
        doc.write(&mut out, &[]);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn nests_and_orders() {
        let mut d = Doc::default();
        d.str("source.ip", "1.2.3.4");
        d.int("source.port", 80);
        d.str("event.kind", "alert");
        d.str("source.geo.country_iso_code", "IL");
        d.put("event.type", Val::Strs(vec!["info".into()]));
        d.str("message", "he said \"hi\"\n\u{1}");
        d.str("empty", "");
        let v = render(d);
        assert_eq!(
            v,
            serde_json::json!({
                "source": {"ip": "1.2.3.4", "port": 80, "geo": {"country_iso_code": "IL"}},
                "event": {"kind": "alert", "type": ["info"]},
                "message": "he said \"hi\"\n\u{1}"
            })
        );
    }

    #[test]
    fn later_set_wins_and_prefix_comes_first() {
        let mut d = Doc::default();
        d.str("a.b", "1");
        d.str("a.b", "2");
        d.put("a.c", Val::Json("[{\"x\":1}]".into()));
        d.put("f", Val::FloatDecimal(2.0));
        d.put("g", Val::Float(31.8969));
        let mut out = vec![];
        d.write(&mut out, &[("_id", "abc")]);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("{\"_id\":\"abc\","), "{s}");
        assert!(s.contains("\"f\":2.0"), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"]["b"], "2");
        assert_eq!(v["a"]["c"][0]["x"], 1);
        assert_eq!(v["g"], 31.8969);
    }

    #[test]
    fn dotted_siblings_with_similar_prefixes() {
        let mut d = Doc::default();
        d.str("a.b", "1");
        d.str("a-x", "2");
        d.str("a.c", "3");
        d.str("ab.c", "4");
        let v = render(d);
        assert_eq!(v, serde_json::json!({"a": {"b": "1", "c": "3"}, "a-x": "2", "ab": {"c": "4"}}));
    }
}
