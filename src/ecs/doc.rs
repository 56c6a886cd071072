//! A document as `(path slot, value)` pairs, written straight into a reused byte buffer as
//! nested JSON. Mappers set fields in any order; the slots are already in output order (see
//! [`paths`](super::paths)), so [`Doc::write`] streams the objects without sorting. No
//! `serde_json::Value` tree on the hot path.

use std::borrow::Cow;
use std::sync::Arc;

use super::paths::{P, PATHS};

/// A field value.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    /// A shared string (cached user-agent parts): cloning is a reference-count increment.
    Shared(Arc<str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A float written with at least one decimal (`2.0`), as Python writes floats.
    FloatDecimal(f64),
    Bool(bool),
    /// A list of strings.
    Strs(Vec<Cow<'a, str>>),
    /// A constant list of strings.
    StaticStrs(&'static [&'static str]),
    /// Already-serialised JSON, written verbatim (must be valid JSON on one line).
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

const NONE: u16 = u16::MAX;

/// Fields of one output document: static paths by slot (see [`paths`](super::paths)), run-time
/// keys (under a known object) in a side list.
pub struct Doc<'a> {
    /// Per slot, the index of its value in `vals` (`NONE` when unset).
    slot_val: [u16; PATHS.len()],
    vals: Vec<Val<'a>>,
    /// (full path, object node, leaf key, value), for keys only known at run time.
    dynamic: Vec<(String, u16, Val<'a>)>,
}

impl Default for Doc<'_> {
    fn default() -> Self {
        Doc::with_capacity(16)
    }
}

impl<'a> Doc<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Doc::with_storage(Vec::with_capacity(n))
    }

    /// A document storing its values in `vals` (cleared first); [`Doc::write`] hands it back.
    pub fn with_storage(mut vals: Vec<Val<'a>>) -> Self {
        vals.clear();
        Doc {
            slot_val: [NONE; PATHS.len()],
            vals,
            dynamic: Vec::new(),
        }
    }

    /// Set a field; a later set of the same path wins.
    pub fn put(&mut self, p: P, v: Val<'a>) {
        let slot = &mut self.slot_val[p.0 as usize];
        if *slot == NONE {
            *slot = self.vals.len() as u16;
            self.vals.push(v);
        } else {
            self.vals[*slot as usize] = v;
        }
    }

    /// Set `<object>.<key>` where only the key is known at run time (unknown extension keys).
    /// `object` must be an object of the static paths or one of [`EXTRA_OBJECTS`] (`""` is the
    /// document itself); `key` must not contain `.`.
    pub fn put_dynamic(&mut self, object: &str, key: &str, v: Val<'a>) {
        let tree = tree();
        let Some(&node) = tree.node_by_path.get(object) else {
            debug_assert!(false, "unknown object {object:?}");
            return;
        };
        let path = if object.is_empty() {
            key.to_string()
        } else {
            format!("{object}.{key}")
        };
        if let Some(e) = self.dynamic.iter_mut().find(|(p, _, _)| *p == path) {
            e.2 = v;
        } else {
            self.dynamic.push((path, node, v));
        }
    }

    /// Set a string field unless it is empty (both profiles drop empty values).
    pub fn str(&mut self, p: P, s: impl Into<Cow<'a, str>>) {
        let s = s.into();
        if !s.is_empty() {
            self.put(p, Val::Str(s));
        }
    }

    pub fn int(&mut self, p: P, v: i64) {
        self.put(p, Val::Int(v));
    }

    pub fn remove(&mut self, p: P) {
        self.slot_val[p.0 as usize] = NONE;
    }

    pub fn get(&self, p: P) -> Option<&Val<'a>> {
        match self.slot_val[p.0 as usize] {
            NONE => None,
            i => self.vals.get(i as usize),
        }
    }

    pub fn has(&self, p: P) -> bool {
        self.slot_val[p.0 as usize] != NONE
    }

    pub fn len(&self) -> usize {
        self.slot_val.iter().filter(|s| **s != NONE).count() + self.dynamic.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the document as one JSON object (no trailing newline). Returns the value storage,
    /// emptied, for reuse.
    pub fn write(mut self, out: &mut Vec<u8>) -> Vec<Val<'a>> {
        let t = tree();
        self.dynamic.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut w = Writer {
            t,
            cur: 0,
            has_member: [false; MAX_DEPTH],
        };
        // One reservation for a typical document instead of many small growth checks.
        out.reserve(4096);
        out.push(b'{');
        let mut dyn_iter = self.dynamic.iter().peekable();
        for (slot, &vi) in self.slot_val.iter().enumerate() {
            if vi == NONE {
                continue;
            }
            if dyn_iter.peek().is_some() {
                let path = PATHS[slot];
                while let Some((dp, node, v)) = dyn_iter.next_if(|(dp, _, _)| dp.as_bytes() < path.as_bytes()) {
                    let key = &dp[dp.len() - leaf_len(dp, *node, t)..];
                    w.field(out, *node, Key::Dynamic(key), v);
                }
            }
            w.field(
                out,
                t.slot_parent[slot],
                Key::Static(&t.slot_key[slot]),
                &self.vals[vi as usize],
            );
        }
        for (path, node, v) in dyn_iter {
            let key = &path[path.len() - leaf_len(path, *node, t)..];
            w.field(out, *node, Key::Dynamic(key), v);
        }
        w.close_to(out, 0);
        out.push(b'}');
        self.vals.clear();
        self.vals
    }
}

/// Length of the leaf key in a dynamic `path` under `node`.
fn leaf_len(path: &str, node: u16, t: &Tree) -> usize {
    let obj = t.node_path[node as usize];
    if obj.is_empty() {
        path.len()
    } else {
        path.len() - obj.len() - 1
    }
}

/// Re-type an emptied vector to another lifetime, keeping its allocation (the in-place
/// `collect` of an empty vector reuses the buffer; no element is ever converted).
pub fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("vector was cleared")).collect()
}

/// Objects that only run-time keys live in (no static path below them).
pub const EXTRA_OBJECTS: &[&str] = &["imperva.securesphere.extensions", "imperva_cloud_waf.event.extensions"];

const MAX_DEPTH: usize = 16;

/// The object tree of all static paths, built once: for every object node its parent, depth
/// and pre-quoted `"name":{`; for every slot its parent node and pre-quoted `"leaf":`.
struct Tree {
    node_parent: Vec<u16>,
    node_depth: Vec<u8>,
    node_open: Vec<Box<str>>,
    node_path: Vec<&'static str>,
    node_by_path: std::collections::HashMap<&'static str, u16>,
    slot_parent: Vec<u16>,
    slot_key: Vec<Box<str>>,
}

fn quoted(s: &str, tail: &str) -> Box<str> {
    let mut v = Vec::with_capacity(s.len() + 4);
    write_str(&mut v, s);
    v.extend_from_slice(tail.as_bytes());
    String::from_utf8(v).unwrap_or_default().into_boxed_str()
}

fn tree() -> &'static Tree {
    static T: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tree {
            node_parent: vec![0],
            node_depth: vec![0],
            node_open: vec!["".into()],
            node_path: vec![""],
            node_by_path: std::collections::HashMap::from([("", 0u16)]),
            slot_parent: Vec::with_capacity(PATHS.len()),
            slot_key: Vec::with_capacity(PATHS.len()),
        };
        fn node(t: &mut Tree, object: &'static str) -> u16 {
            if let Some(&n) = t.node_by_path.get(object) {
                return n;
            }
            let (parent, name) = match object.rfind('.') {
                Some(i) => (node(t, &object[..i]), &object[i + 1..]),
                None => (0, object),
            };
            let id = t.node_parent.len() as u16;
            t.node_parent.push(parent);
            t.node_depth.push(t.node_depth[parent as usize] + 1);
            t.node_open.push(quoted(name, ":{"));
            t.node_path.push(object);
            t.node_by_path.insert(object, id);
            id
        }
        for path in PATHS {
            let (parent, leaf) = match path.rfind('.') {
                Some(i) => (node(&mut t, &path[..i]), &path[i + 1..]),
                None => (0, *path),
            };
            t.slot_parent.push(parent);
            t.slot_key.push(quoted(leaf, ":"));
        }
        for object in EXTRA_OBJECTS {
            node(&mut t, object);
        }
        t
    })
}

enum Key<'k> {
    /// Pre-quoted `"leaf":`.
    Static(&'k str),
    Dynamic(&'k str),
}

/// Streams fields in path order, opening and closing objects by walking the node tree.
struct Writer<'t> {
    t: &'t Tree,
    cur: u16,
    has_member: [bool; MAX_DEPTH],
}

impl Writer<'_> {
    fn sep(&mut self, out: &mut Vec<u8>) {
        let d = self.t.node_depth[self.cur as usize] as usize;
        if self.has_member[d] {
            out.push(b',');
        }
        self.has_member[d] = true;
    }

    /// Close objects until `target` (an ancestor of the current node) is current.
    fn close_to(&mut self, out: &mut Vec<u8>, target: u16) {
        while self.cur != target && self.cur != 0 {
            out.push(b'}');
            self.cur = self.t.node_parent[self.cur as usize];
        }
    }

    fn field(&mut self, out: &mut Vec<u8>, parent: u16, key: Key<'_>, v: &Val<'_>) {
        let t = self.t;
        if parent != self.cur {
            // Lowest common ancestor of the open node and the field's parent.
            let (mut a, mut b) = (self.cur, parent);
            let mut down = [0u16; MAX_DEPTH];
            let mut nd = 0;
            while t.node_depth[b as usize] > t.node_depth[a as usize] {
                down[nd] = b;
                nd += 1;
                b = t.node_parent[b as usize];
            }
            while t.node_depth[a as usize] > t.node_depth[b as usize] {
                a = t.node_parent[a as usize];
            }
            while a != b {
                a = t.node_parent[a as usize];
                down[nd] = b;
                nd += 1;
                b = t.node_parent[b as usize];
            }
            self.close_to(out, a);
            for &n in down[..nd].iter().rev() {
                self.sep(out);
                out.extend_from_slice(t.node_open[n as usize].as_bytes());
                self.cur = n;
                self.has_member[t.node_depth[n as usize] as usize] = false;
            }
        }
        self.sep(out);
        match key {
            Key::Static(q) => out.extend_from_slice(q.as_bytes()),
            Key::Dynamic(k) => {
                write_str(out, k);
                out.push(b':');
            }
        }
        write_val(out, v);
    }
}

fn write_list<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

fn write_val(out: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Str(s) => write_str(out, s),
        Val::Shared(s) => write_str(out, s),
        Val::StaticStrs(list) => write_list(out, list.iter().copied()),
        Val::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Val::UInt(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Val::Float(f) | Val::FloatDecimal(f) if !f.is_finite() => out.extend_from_slice(b"null"),
        Val::Float(f) | Val::FloatDecimal(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                out.extend_from_slice(itoa::Buffer::new().format(*f as i64).as_bytes());
                if matches!(v, Val::FloatDecimal(_)) {
                    out.extend_from_slice(b".0");
                }
            } else {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes());
            }
        }
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Strs(list) => write_list(out, list.iter().map(|s| s.as_ref())),
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

/// Length of the prefix of `b` that needs no JSON escaping (no `"`, `\\`, or byte < 0x20).
/// SSE2 (baseline on x86_64) checks 16 bytes per step; [`plain_prefix_scalar`] is the
/// reference, and a property test keeps the two equal.
#[inline]
pub fn plain_prefix(b: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        plain_prefix_sse2(b)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        plain_prefix_scalar(b)
    }
}

/// Reference implementation of [`plain_prefix`].
pub fn plain_prefix_scalar(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len())
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn plain_prefix_sse2(b: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut i = 0;
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always available;
    // every load reads 16 bytes at `i` with `i + 16 <= b.len()`, inside the slice.
    unsafe {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below = _mm_set1_epi8(0x1f);
        while i + 16 <= b.len() {
            let v = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
            // c < 0x20  <=>  max(c, 0x1f) == 0x1f (unsigned).
            let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, below), below);
            let hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                ctrl,
            );
            let mask = _mm_movemask_epi8(hit) as u32;
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    i + plain_prefix_scalar(&b[i..])
}

/// Write `s` as a JSON string; runs of plain text are found [`plain_prefix`] at a time.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut b = s.as_bytes();
    loop {
        let n = plain_prefix(b);
        out.extend_from_slice(&b[..n]);
        let Some(&c) = b.get(n) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const H: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(H[(c >> 4) as usize]);
                out.push(H[(c & 15) as usize]);
            }
        }
        b = &b[n + 1..];
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p;

    fn render(doc: Doc<'_>) -> serde_json::Value {
        let mut out = vec![];
        doc.write(&mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn nests_and_orders() {
        let mut d = Doc::default();
        d.str(p!("source.ip"), "1.2.3.4");
        d.int(p!("source.port"), 80);
        d.str(p!("event.kind"), "alert");
        d.str(p!("source.geo.country_iso_code"), "IL");
        d.put(p!("event.type"), Val::StaticStrs(&["info"]));
        d.str(p!("message"), "he said \"hi\"\n\u{1}");
        d.str(p!("url.path"), "");
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
    fn later_set_wins_and_floats_render() {
        let mut d = Doc::default();
        d.str(p!("url.path"), "1");
        d.str(p!("url.path"), "2");
        d.put(p!("imperva.request.headers"), Val::Json("[{\"x\":1}]".into()));
        d.put(p!("event.duration"), Val::FloatDecimal(2.0));
        d.put(p!("source.geo.location.lat"), Val::Float(31.8969));
        d.str(p!("_id"), "abc");
        let mut out = vec![];
        d.write(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\"duration\":2.0"), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["url"]["path"], "2");
        assert_eq!(v["imperva"]["request"]["headers"][0]["x"], 1);
        assert_eq!(v["source"]["geo"]["location"]["lat"], 31.8969);
        assert_eq!(v["_id"], "abc");
    }

    #[test]
    fn dynamic_paths_merge_into_their_objects() {
        let mut d = Doc::default();
        d.str(p!("imperva.securesphere.severity"), "High");
        d.str(p!("imperva.securesphere.device.custom_string1.label"), "Policy");
        d.put_dynamic("imperva.securesphere.extensions", "zz", Val::Str("1".into()));
        d.put_dynamic("imperva.securesphere.extensions", "aa", Val::Str("2".into()));
        d.put_dynamic("imperva.securesphere.extensions", "aa", Val::Str("3".into()));
        d.put_dynamic("", "zzz_top", Val::Int(1));
        d.str(p!("message"), "m");
        let v = render(d);
        assert_eq!(
            v,
            serde_json::json!({
                "imperva": {"securesphere": {"severity": "High", "device": {"custom_string1": {"label": "Policy"}}, "extensions": {"aa": "3", "zz": "1"}}},
                "message": "m",
                "zzz_top": 1
            })
        );
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let samples = [
            "plain ascii text that is longer than eight bytes",
            "quote \" in the middle of a long enough string",
            "back\\slash",
            "ctrl \u{1}\u{1f} and \t tab\n\r",
            "unicode caf\u{e9} \u{6771}\u{4eac} \u{1F600} done",
            "",
            "\"\"\"\"\"\"\"\"\"",
        ];
        for s in samples {
            let mut out = vec![];
            write_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON string");
            assert_eq!(back, s);
        }
    }
}

#[cfg(test)]
mod recycle_tests {
    use super::*;

    #[test]
    fn recycle_keeps_the_allocation() {
        let mut v: Vec<Val<'static>> = Vec::with_capacity(100);
        v.push(Val::Int(1));
        let ptr = v.as_ptr() as usize;
        let w: Vec<Val<'_>> = recycle(v);
        assert!(w.is_empty());
        assert!(w.capacity() >= 100);
        assert_eq!(w.as_ptr() as usize, ptr);
    }
}
