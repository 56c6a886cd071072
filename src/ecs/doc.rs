//! A document as `(path slot, value)` pairs, written straight into a reused byte buffer as
//! nested JSON. Mappers set fields in any order; the slots are already in output order (see
//! [`paths`](super::paths)), so [`Doc::write`] streams the objects without sorting. No
//! `serde_json::Value` tree on the hot path.

use std::borrow::Cow;
use std::sync::Arc;

use super::json;
pub use super::json::write_str;
use super::paths::{P, PATHS};

/// A dotted path resolved once (processors): its slot, its object's slots, or the object node
/// of a key known only at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Static(P),
    /// An object: the slots under it (contiguous, the paths being sorted) and the prefix
    /// (`"a.b."`) of the run-time keys under it.
    Object {
        prefix: String,
        slots: std::ops::Range<u16>,
    },
    /// A key only known at run time, under the object `node`.
    Dynamic {
        node: u16,
        path: String,
    },
}

impl Field {
    /// Resolve `path`: `None` when documents cannot have it (see [`Doc::writable_path`]).
    pub fn resolve(path: &str) -> Option<Field> {
        if let Some(p) = super::paths::lookup(path) {
            return Some(Field::Static(p));
        }
        if Doc::is_object(path) && !path.is_empty() {
            let prefix = format!("{path}.");
            let start = PATHS.partition_point(|p| p.as_bytes() < prefix.as_bytes());
            let end = start + PATHS[start..].iter().take_while(|p| p.starts_with(&prefix)).count();
            return Some(Field::Object {
                prefix,
                slots: start as u16..end as u16,
            });
        }
        // The nearest enclosing object holds the key (keys under a vendor-extension object may
        // themselves contain dots: they are matched whole).
        let t = tree();
        let mut object = path;
        while let Some((o, _)) = object.rsplit_once('.') {
            if let Some(&node) = t.node_by_path.get(o) {
                return Some(Field::Dynamic {
                    node,
                    path: path.to_string(),
                });
            }
            object = o;
        }
        (!path.is_empty()).then(|| Field::Dynamic {
            node: 0,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Static(p) => f.write_str(p.path()),
            Field::Object { prefix, .. } => f.write_str(prefix.trim_end_matches('.')),
            Field::Dynamic { path, .. } => f.write_str(path),
        }
    }
}

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

impl Val<'_> {
    /// Whether dropping the value frees memory (every other value can be forgotten).
    #[inline(always)]
    fn owns_heap(&self) -> bool {
        match self {
            Val::Str(Cow::Owned(_)) | Val::Json(Cow::Owned(_)) | Val::Shared(_) | Val::Strs(_) => true,
            Val::Str(Cow::Borrowed(_))
            | Val::Json(Cow::Borrowed(_))
            | Val::Int(_)
            | Val::UInt(_)
            | Val::Float(_)
            | Val::FloatDecimal(_)
            | Val::Bool(_)
            | Val::StaticStrs(_)
            | Val::Ts(..) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsStyle {
    /// `2023-10-05T18:33:02.000Z`
    Millis,
    /// `2022-04-12T14:09:58.763000Z` / `2009-02-13T23:31:30Z`
    Python,
}

/// Words of the present-slot bit set.
const WORDS: usize = PATHS.len().div_ceil(64);

/// Fields of one output document: static paths by slot (see [`paths`](super::paths)), run-time
/// keys (under a known object) in a side list.
pub struct Doc<'a> {
    /// One bit per slot that has a value; writing walks the set bits in slot (= output) order.
    present: [u64; WORDS],
    /// Per present slot, the index of its value in `vals`.
    slot_val: [u16; PATHS.len()],
    vals: Vec<Val<'a>>,
    /// (full path, object node, value), for keys only known at run time.
    dynamic: Vec<(String, u16, Val<'a>)>,
    /// Upper bound of the bytes the values and run-time keys set so far can take when
    /// written (a replaced value stays counted).
    bound: usize,
    /// One bit per entry of `vals` that owns heap memory: only those are dropped one by one
    /// when the storage is emptied.
    owning: [u64; WORDS],
    /// One bit per slot removed after it had a value: its cell in `vals` is reused when the
    /// slot is set again, so `vals` never outgrows one cell per slot.
    stale: [u64; WORDS],
    /// Emptied string lists, handed out by [`Doc::list`] (a list value's memory is kept when
    /// the document is written).
    lists: Vec<Vec<Cow<'a, str>>>,
}

/// Spare string lists a document keeps.
const SPARE_LISTS: usize = 8;

/// A document's reusable memory: its value cells and spare string lists.
#[derive(Default)]
pub struct Storage<'a> {
    pub vals: Vec<Val<'a>>,
    pub lists: Vec<Vec<Cow<'a, str>>>,
}

impl Storage<'_> {
    /// The same (empty) memory for a document of another lifetime.
    pub fn recycle<'b>(self) -> Storage<'b> {
        Storage {
            vals: recycle(self.vals),
            lists: self.lists.into_iter().map(recycle).collect(),
        }
    }
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
        // Each slot holds at most one entry, so this is all the room `put` can ever need.
        vals.reserve(PATHS.len());
        Doc {
            present: [0; WORDS],
            slot_val: [0; PATHS.len()],
            vals,
            dynamic: Vec::new(),
            bound: 0,
            owning: [0; WORDS],
            stale: [0; WORDS],
            lists: Vec::new(),
        }
    }

    /// A document using `storage` (emptied first).
    pub fn from_storage(storage: Storage<'a>) -> Self {
        let mut d = Doc::with_storage(storage.vals);
        d.lists = storage.lists;
        d.lists.iter_mut().for_each(Vec::clear);
        d
    }

    /// Give back a list [`Doc::list`] handed out that did not become a value.
    pub fn spare(&mut self, mut list: Vec<Cow<'a, str>>) {
        if self.lists.len() < SPARE_LISTS && list.capacity() > 0 {
            list.clear();
            self.lists.push(list);
        }
    }

    /// An empty string list for a list value, reusing the memory of an earlier one.
    pub fn list(&mut self) -> Vec<Cow<'a, str>> {
        self.lists.pop().unwrap_or_default()
    }

    #[inline]
    fn bit(p: P) -> (usize, u64) {
        (p.0 as usize / 64, 1u64 << (p.0 % 64))
    }

    /// Set a field; a later set of the same path wins.
    #[inline(always)]
    pub fn put(&mut self, p: P, v: Val<'a>) {
        let (bound, owns) = (val_bound(&v), v.owns_heap());
        self.put_with(p, bound, owns, move || v);
    }

    /// [`Doc::put`] with the value made by `make` only once its cell is known, so it is built
    /// in place (an enum staged on the stack first is copied back with wider loads than the
    /// stores that made it, which stalls). `bound` and `owns` are `val_bound` and
    /// `Val::owns_heap` of the value.
    #[inline(always)]
    fn put_with(&mut self, p: P, bound: usize, owns: bool, make: impl FnOnce() -> Val<'a>) {
        let (w, bit) = Self::bit(p);
        self.bound += bound;
        let i = if self.present[w] & bit == 0 && self.stale[w] & bit != 0 {
            self.present[w] |= bit;
            self.stale[w] &= !bit;
            self.slot_val[p.0 as usize] as usize
        } else if self.present[w] & bit == 0 {
            self.present[w] |= bit;
            let i = self.vals.len();
            self.slot_val[p.0 as usize] = i as u16;
            assert!(i < self.vals.capacity());
            i
        } else {
            self.slot_val[p.0 as usize] as usize
        };
        // SAFETY: a new entry's index is the length and below the capacity (checked; it always
        // is, see `with_storage`), so it is the first spare cell and the length grows to
        // cover it once written; an existing entry's index is below the length, and its old
        // value is moved out before the cell is overwritten.
        unsafe {
            let cell = self.vals.as_mut_ptr().add(i);
            let len = self.vals.len();
            // The old value moves out first and is dropped after the write: no call comes
            // between the value's making and its store.
            let old = if i < len { Some(cell.read()) } else { None };
            cell.write(make());
            self.vals.set_len(len.max(i + 1));
            drop(old);
        }
        let (ow, obit) = (i / 64, 1u64 << (i % 64));
        if owns {
            self.owning[ow] |= obit;
        } else {
            self.owning[ow] &= !obit;
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
        self.bound += json::str_bound(key.len()) + 1 + val_bound(&v);
        if let Some(e) = self.dynamic.iter_mut().find(|(p, _, _)| *p == path) {
            e.2 = v;
        } else {
            self.dynamic.push((path, node, v));
        }
    }

    /// Set a string field unless it is empty (both profiles drop empty values).
    #[inline(always)]
    pub fn str(&mut self, p: P, s: impl Into<Cow<'a, str>>) {
        let s = s.into();
        if !s.is_empty() {
            self.string(p, s);
        }
    }

    #[inline(always)]
    pub fn int(&mut self, p: P, v: i64) {
        self.put_with(p, NUMBER_BOUND, false, move || Val::Int(v));
    }

    /// Set a string field, even an empty one.
    #[inline(always)]
    pub fn string(&mut self, p: P, s: Cow<'a, str>) {
        let (bound, owns) = (json::str_bound(s.len()), matches!(s, Cow::Owned(_)));
        self.put_with(p, bound, owns, move || Val::Str(s));
    }

    #[inline(always)]
    pub fn ts(&mut self, p: P, ms: i64, style: TsStyle) {
        self.put_with(p, TS_BOUND, false, move || Val::Ts(ms, style));
    }

    #[inline(always)]
    pub fn bool(&mut self, p: P, b: bool) {
        self.put_with(p, BOOL_BOUND, false, move || Val::Bool(b));
    }

    #[inline(always)]
    pub fn statics(&mut self, p: P, list: &'static [&'static str]) {
        self.put_with(p, list_bound(list.iter().copied()), false, move || {
            Val::StaticStrs(list)
        });
    }

    #[inline(always)]
    pub fn float(&mut self, p: P, f: f64) {
        self.put_with(p, FLOAT_BOUND, false, move || Val::Float(f));
    }

    /// Set a list of strings.
    #[inline(always)]
    pub fn strs(&mut self, p: P, list: Vec<Cow<'a, str>>) {
        let bound = list_bound(list.iter().map(|s| s.as_ref()));
        self.put_with(p, bound, true, move || Val::Strs(list));
    }

    /// Set a field to already-serialised JSON (valid, on one line), written as it is.
    #[inline(always)]
    pub fn json(&mut self, p: P, text: Cow<'a, str>) {
        let (bound, owns) = (text.len(), matches!(text, Cow::Owned(_)));
        self.put_with(p, bound, owns, move || Val::Json(text));
    }

    /// Set a number field to decimal text written as it is (see [`json::plain_decimal`]: the
    /// caller checks that the text is one).
    #[inline(always)]
    pub fn decimal_text(&mut self, p: P, text: Cow<'a, str>) {
        debug_assert!(json::plain_decimal(&text));
        let (bound, owns) = (text.len(), matches!(text, Cow::Owned(_)));
        self.put_with(p, bound, owns, move || Val::Json(text));
    }

    pub fn remove(&mut self, p: P) {
        let (w, bit) = Self::bit(p);
        if self.present[w] & bit != 0 {
            self.present[w] &= !bit;
            self.stale[w] |= bit;
        }
    }

    pub fn get(&self, p: P) -> Option<&Val<'a>> {
        if self.has(p) {
            self.vals.get(self.slot_val[p.0 as usize] as usize)
        } else {
            None
        }
    }

    pub fn has(&self, p: P) -> bool {
        let (w, bit) = Self::bit(p);
        self.present[w] & bit != 0
    }

    /// The value of a resolved field.
    #[inline]
    pub fn get_field(&self, f: &Field) -> Option<&Val<'a>> {
        match f {
            Field::Static(p) => self.get(*p),
            Field::Dynamic { path, .. } => self.dynamic.iter().find(|(k, _, _)| k == path).map(|(_, _, v)| v),
            Field::Object { .. } => None,
        }
    }

    /// Whether a resolved field (or any field under a resolved object) is set.
    pub fn has_field(&self, f: &Field) -> bool {
        match f {
            Field::Object { prefix, slots } => {
                slots.clone().any(|i| self.has(P(i)))
                    || self.dynamic.iter().any(|(k, _, _)| k.starts_with(prefix.as_str()))
            }
            other => self.get_field(other).is_some(),
        }
    }

    /// Set a resolved field (not an object).
    pub fn put_field(&mut self, f: &Field, v: Val<'a>) -> Result<(), String> {
        match f {
            Field::Static(p) => {
                self.put(*p, v);
                Ok(())
            }
            Field::Dynamic { node, path } => {
                self.bound += json::str_bound(path.len()) + 1 + val_bound(&v);
                if let Some(e) = self.dynamic.iter_mut().find(|(p, _, _)| p == path) {
                    e.2 = v;
                } else {
                    self.dynamic.push((path.clone(), *node, v));
                }
                Ok(())
            }
            Field::Object { prefix, .. } => Err(format!("{} is an object, not a field", prefix.trim_end_matches('.'))),
        }
    }

    /// Remove a resolved field, or every field under a resolved object. Returns whether
    /// anything was there.
    pub fn remove_field(&mut self, f: &Field) -> bool {
        match f {
            Field::Static(p) => {
                let had = self.has(*p);
                self.remove(*p);
                had
            }
            Field::Dynamic { path, .. } => {
                let before = self.dynamic.len();
                self.dynamic.retain(|(k, _, _)| k != path);
                self.dynamic.len() != before
            }
            Field::Object { prefix, slots } => {
                let mut had = false;
                for i in slots.clone() {
                    had |= self.has(P(i));
                    self.remove(P(i));
                }
                let before = self.dynamic.len();
                self.dynamic.retain(|(k, _, _)| !k.starts_with(prefix.as_str()));
                had || self.dynamic.len() != before
            }
        }
    }

    /// The value at a dotted path, static or set at run time.
    pub fn get_path(&self, path: &str) -> Option<&Val<'a>> {
        match super::paths::lookup(path) {
            Some(p) => self.get(p),
            None => self.dynamic.iter().find(|(k, _, _)| k == path).map(|(_, _, v)| v),
        }
    }

    /// Set the value at a dotted path: a static path, or a key under an object of the static
    /// paths or of [`EXTRA_OBJECTS`]. `Err` names why not.
    pub fn put_path(&mut self, path: &str, v: Val<'a>) -> Result<(), String> {
        if let Some(p) = super::paths::lookup(path) {
            self.put(p, v);
            return Ok(());
        }
        let (object, key) = path.rsplit_once('.').unwrap_or(("", path));
        if !Self::is_object(object) {
            return Err(format!("{path}: {object:?} is not an object of the documents"));
        }
        if Self::is_object(path) {
            return Err(format!("{path} is an object, not a field"));
        }
        self.put_dynamic(object, key, v);
        Ok(())
    }

    /// Whether `path` is an object of the documents (or `""`, the document itself).
    pub fn is_object(path: &str) -> bool {
        tree().node_by_path.contains_key(path)
    }

    /// Whether documents can have a field (or object) at `path` to read or remove: a static
    /// path, an object, or any key under an object whose keys come from the input (the
    /// vendor extensions) or from processors (`labels`, `fields`).
    pub fn readable_path(path: &str) -> bool {
        super::paths::lookup(path).is_some()
            || Self::is_object(path)
            || EXTRA_OBJECTS
                .iter()
                .any(|o| path.len() > o.len() && path.starts_with(o) && path.as_bytes()[o.len()] == b'.')
    }

    /// Whether a field can be set at `path`: a readable path, or a new key right under an
    /// object (or at the top of the document).
    pub fn writable_path(path: &str) -> bool {
        Self::readable_path(path)
            || match path.rsplit_once('.') {
                Some((o, k)) => Self::is_object(o) && !k.is_empty(),
                None => !path.is_empty(),
            }
    }

    /// Remove the field at `path`, or every field under it when it is an object. Returns
    /// whether anything was there.
    pub fn remove_path(&mut self, path: &str) -> bool {
        if let Some(p) = super::paths::lookup(path) {
            let had = self.has(p);
            self.remove(p);
            return had;
        }
        let prefix = format!("{path}.");
        let mut had = false;
        for (i, full) in PATHS.iter().enumerate() {
            if full.starts_with(&prefix) {
                let p = P(i as u16);
                had |= self.has(p);
                self.remove(p);
            }
        }
        let before = self.dynamic.len();
        self.dynamic.retain(|(k, _, _)| k != path && !k.starts_with(&prefix));
        had || self.dynamic.len() != before
    }

    /// Forget the document without writing it (processors dropped it); hands back the storage.
    pub fn discard(mut self) -> Storage<'a> {
        self.clear_vals();
        Storage {
            vals: self.vals,
            lists: self.lists,
        }
    }

    /// Whether any field under the object `object` is set.
    pub fn has_under(&self, object: &str) -> bool {
        let prefix = format!("{object}.");
        PATHS
            .iter()
            .enumerate()
            .any(|(i, full)| full.starts_with(&prefix) && self.has(P(i as u16)))
            || self.dynamic.iter().any(|(k, _, _)| k.starts_with(&prefix))
    }

    /// Keep only the fields for which `keep(path)` holds.
    pub fn retain_paths(&mut self, keep: impl Fn(&str) -> bool) {
        for (i, full) in PATHS.iter().enumerate() {
            let p = P(i as u16);
            if self.has(p) && !keep(full) {
                self.remove(p);
            }
        }
        self.dynamic.retain(|(k, _, _)| keep(k));
    }

    pub fn len(&self) -> usize {
        self.present.iter().map(|w| w.count_ones() as usize).sum::<usize>() + self.dynamic.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the document as one JSON object (no trailing newline). Returns the value storage,
    /// emptied, for reuse.
    pub fn write(mut self, out: &mut Vec<u8>) -> Storage<'a> {
        let t = tree();
        self.dynamic.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut w = Writer {
            t,
            cur: 0,
            has_member: false,
        };
        // One reservation for the whole document: per field at most a transition, a comma and
        // the longest static key (run-time keys are in `bound`), plus the values' bound, plus
        // the outer braces and the final closing of open objects.
        let fields = self.vals.len() + self.dynamic.len();
        out.reserve(self.bound + fields * (t.transition_bound + 1 + t.longest_key) + MAX_DEPTH + 2);
        // SAFETY (here and in every `Writer::field` below): room for everything written until
        // the end of this function was reserved just above; `write_val` writes at most
        // `val_bound` bytes for each value, so its checked pushes never move the buffer.
        unsafe { json::byte_unchecked(out, b'{') };
        let mut dyn_iter = self.dynamic.iter().peekable();
        for slot in set_bits(&self.present) {
            if dyn_iter.peek().is_some() {
                let path = PATHS[slot];
                while let Some((dp, node, v)) = dyn_iter.next_if(|(dp, _, _)| dp.as_bytes() < path.as_bytes()) {
                    let key = &dp[dp.len() - leaf_len(dp, *node, t)..];
                    w.field(out, *node, Key::Dynamic(key), v);
                }
            }
            let info = &t.slots[slot];
            w.field(
                out,
                info.parent,
                Key::Static(&info.key, info.len),
                &self.vals[self.slot_val[slot] as usize],
            );
        }
        for (path, node, v) in dyn_iter {
            let key = &path[path.len() - leaf_len(path, *node, t)..];
            w.field(out, *node, Key::Dynamic(key), v);
        }
        w.close_to(out, 0);
        // SAFETY: counted in the reservation above.
        unsafe { json::byte_unchecked(out, b'}') };
        self.clear_vals();
        Storage {
            vals: self.vals,
            lists: self.lists,
        }
    }

    /// [`Doc::write`] with the bytes around the values taken from `shapes`: documents with
    /// the same fields (most events of one kind) share every byte but their values, so those
    /// bytes are worked out once per set of fields and then copied in blocks. Same output as
    /// [`Doc::write`]; documents with run-time keys are written by it.
    pub fn write_shaped(self, out: &mut Vec<u8>, shapes: &mut Shapes) -> Storage<'a> {
        let mut me = self;
        if !me.dynamic.is_empty() {
            me.dynamic.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        }
        let shape = shapes.get(&me.present, &me.dynamic);
        // Room for the values, and for the fixed bytes with the padding block the last copy
        // may run into (each copy runs at most one block past what it keeps).
        out.reserve(me.bound + shape.fixed.len());
        let src = shape.fixed.as_ptr();
        let mut start = 0usize;
        let mut ends = shape.ends.iter();
        // Static and run-time fields merged in path order, as the shape was built.
        let mut dyn_at = 0;
        let mut put = |out: &mut Vec<u8>, v: &Val<'_>| {
            // One end per field: the shape was built from this very set of fields.
            let end = ends.next().map_or(start, |&e| e as usize);
            // SAFETY: `start..end` lies in `fixed`, which has a whole block of padding
            // after its last byte, so the rounded-up read stays inside it; the room
            // reserved above covers every fixed byte plus that one block, and the values'
            // bounds: at no point does a write run past it.
            unsafe { json::put_blocks(out, src.add(start), end - start) };
            start = end;
            // SAFETY: the value's bound is part of `bound`, reserved above.
            unsafe { write_val_unchecked(out, v) };
        };
        for slot in set_bits(&me.present) {
            while me
                .dynamic
                .get(dyn_at)
                .is_some_and(|(dp, _, _)| dp.as_bytes() < PATHS[slot].as_bytes())
            {
                put(out, &me.dynamic[dyn_at].2);
                dyn_at += 1;
            }
            put(out, &me.vals[me.slot_val[slot] as usize]);
        }
        for (_, _, v) in &me.dynamic[dyn_at..] {
            put(out, v);
        }
        // SAFETY: as above; the tail (closing braces) ends where the padding starts.
        unsafe { json::put_blocks(out, src.add(start), shape.end - start) };
        me.clear_vals();
        Storage {
            vals: me.vals,
            lists: me.lists,
        }
    }

    /// Empty `vals`, dropping only the entries that own heap memory (string lists are emptied
    /// and kept for [`Doc::list`]).
    fn clear_vals(&mut self) {
        let n = self.vals.len();
        // SAFETY: the length is set to 0 first, so a panicking drop cannot lead to a double
        // drop; every index visited is below the old length (a bit is set only for an index
        // that was pushed) and is moved out (then dropped or kept) once; the entries not visited own nothing (see
        // `Val::owns_heap`), so forgetting them leaks nothing.
        unsafe {
            self.vals.set_len(0);
            let base = self.vals.as_mut_ptr();
            for (wi, word) in self.owning.iter_mut().enumerate() {
                let mut bits = std::mem::take(word);
                while bits != 0 {
                    let i = wi * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    debug_assert!(i < n);
                    if i < n {
                        match base.add(i).read() {
                            Val::Strs(mut list) if self.lists.len() < SPARE_LISTS => {
                                list.clear();
                                self.lists.push(list);
                            }
                            other => drop(other),
                        }
                    }
                }
            }
        }
    }
}

/// How many field sets [`Shapes`] remembers.
const SHAPE_SETS: usize = 32;

/// The fixed bytes (object openings and closings, commas, keys) of documents by their set of
/// fields, for [`Doc::write_shaped`]. A small cache: each set has two possible entries, and a
/// new set replaces the one of them used less recently.
pub struct Shapes {
    sets: Vec<Shape>,
    /// Counts lookups; each entry remembers when it was last used.
    clock: u64,
}

impl Default for Shapes {
    fn default() -> Self {
        Shapes {
            sets: (0..SHAPE_SETS).map(|_| Shape::default()).collect(),
            clock: 0,
        }
    }
}

impl Shapes {
    fn get(&mut self, present: &[u64; WORDS], dynamic: &[(String, u16, Val<'_>)]) -> &Shape {
        let mut h = present
            .iter()
            .fold(0u64, |h, &w| (h.rotate_left(5) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for (path, _, _) in dynamic {
            h = (h.rotate_left(5) ^ xxhash_rust::xxh3::xxh3_64(path.as_bytes())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        // MurmurHash3's finaliser: every input bit reaches both halves used as indexes.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        self.clock += 1;
        // Two places a set can live; a new set replaces the one used less recently.
        let (a, b) = (h as usize % SHAPE_SETS, (h >> 32) as usize % SHAPE_SETS);
        let i = if self.sets[a].holds(present, dynamic) {
            a
        } else if self.sets[b].holds(present, dynamic) {
            b
        } else {
            let i = if self.sets[a].used <= self.sets[b].used { a } else { b };
            self.sets[i].build(present, dynamic);
            i
        };
        let s = &mut self.sets[i];
        s.used = self.clock;
        s
    }
}

#[derive(Default)]
struct Shape {
    present: [u64; WORDS],
    /// The run-time keys (path, object node), sorted, merged with the static ones by path.
    dynamic: Vec<(String, u16)>,
    /// `{`, then per field what precedes its value, then the closing braces, then one block
    /// of padding.
    fixed: Vec<u8>,
    /// Per field, where its prefix in `fixed` ends (the next one starts there).
    ends: Vec<u32>,
    /// Where the closing braces end (the padding starts).
    end: usize,
    /// [`Shapes::clock`] when last used (0: never built).
    used: u64,
}

impl Shape {
    fn holds(&self, present: &[u64; WORDS], dynamic: &[(String, u16, Val<'_>)]) -> bool {
        self.used != 0
            && self.present == *present
            && self.dynamic.len() == dynamic.len()
            && self
                .dynamic
                .iter()
                .zip(dynamic)
                .all(|((p, n), (dp, dn, _))| n == dn && p == dp)
    }

    fn build(&mut self, present: &[u64; WORDS], dynamic: &[(String, u16, Val<'_>)]) {
        let t = tree();
        let n: usize = present.iter().map(|w| w.count_ones() as usize).sum::<usize>() + dynamic.len();
        let dyn_keys: usize = dynamic.iter().map(|(p, _, _)| json::str_bound(p.len())).sum();
        self.present = *present;
        self.dynamic.clear();
        self.dynamic.extend(dynamic.iter().map(|(p, n, _)| (p.clone(), *n)));
        self.fixed.clear();
        self.ends.clear();
        self.fixed
            .reserve(1 + n * (t.transition_bound + 1 + t.longest_key) + dyn_keys + MAX_DEPTH + 1 + json::BLOCK);
        let mut w = Writer {
            t,
            cur: 0,
            has_member: false,
        };
        // SAFETY (this write and `prefix` below): reserved just above, per field at most a
        // transition, a comma and the padded key.
        unsafe { json::byte_unchecked(&mut self.fixed, b'{') };
        let mut dyn_at = 0;
        for slot in set_bits(present) {
            while let Some((dp, node, _)) = dynamic
                .get(dyn_at)
                .filter(|(dp, _, _)| dp.as_bytes() < PATHS[slot].as_bytes())
            {
                let key = &dp[dp.len() - leaf_len(dp, *node, t)..];
                w.prefix(&mut self.fixed, *node, Key::Dynamic(key));
                self.ends.push(self.fixed.len() as u32);
                dyn_at += 1;
            }
            let info = &t.slots[slot];
            w.prefix(&mut self.fixed, info.parent, Key::Static(&info.key, info.len));
            self.ends.push(self.fixed.len() as u32);
        }
        for (dp, node, _) in &dynamic[dyn_at..] {
            let key = &dp[dp.len() - leaf_len(dp, *node, t)..];
            w.prefix(&mut self.fixed, *node, Key::Dynamic(key));
            self.ends.push(self.fixed.len() as u32);
        }
        w.close_to(&mut self.fixed, 0);
        self.fixed.push(b'}');
        self.end = self.fixed.len();
        self.fixed.resize(self.end + json::BLOCK, 0);
    }
}

/// The indexes of the set bits of `words`, in order (the present slots of a document).
fn set_bits(words: &[u64; WORDS]) -> SetBits<'_> {
    SetBits {
        words,
        at: 0,
        bits: words[0],
    }
}

struct SetBits<'w> {
    words: &'w [u64; WORDS],
    /// The word `bits` holds what is left of.
    at: usize,
    bits: u64,
}

impl Iterator for SetBits<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.at += 1;
            self.bits = *self.words.get(self.at)?;
        }
        let bit = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(self.at * 64 + bit)
    }
}

/// Length of the leaf key in a dynamic `path` under `node`.
fn leaf_len(path: &str, node: u16, t: &Tree) -> usize {
    let obj = t.nodes[node as usize].path;
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
pub const EXTRA_OBJECTS: &[&str] = &[
    "fields",
    "imperva.securesphere.extensions",
    "imperva.siem",
    "imperva_cloud_waf.event.extensions",
    "labels",
];

const MAX_DEPTH: usize = 8;

/// An object of the static paths.
struct Node {
    parent: u16,
    depth: u8,
    /// Pre-quoted `"name":{`.
    open: &'static [u8],
    path: &'static str,
    /// The nodes from the document (index 0) down to this one (index `depth`).
    chain: [u16; MAX_DEPTH],
}

/// A static path: its object and pre-quoted `"leaf":`.
struct Slot {
    parent: u16,
    len: u8,
    /// The key, padded: written as one fixed-size copy, of which `len` bytes are kept.
    key: [u8; KEY_ROOM],
}

/// Room for a pre-quoted static key (the longest is checked when the tree is built).
const KEY_ROOM: usize = 32;

/// The object tree of all static paths, built once.
struct Tree {
    nodes: Vec<Node>,
    node_by_path: std::collections::HashMap<&'static str, u16>,
    slots: Vec<Slot>,
    /// Most bytes moving from one open object to another can write (closing braces, then
    /// openings with their commas).
    transition_bound: usize,
    /// Room a static key takes while written ([`KEY_ROOM`]).
    longest_key: usize,
}

fn quoted(s: &str, tail: &str) -> &'static [u8] {
    let mut v = Vec::with_capacity(s.len() + 4);
    write_str(&mut v, s);
    v.extend_from_slice(tail.as_bytes());
    // Built once per process for the fixed set of paths.
    Box::leak(v.into_boxed_slice())
}

fn tree() -> &'static Tree {
    static T: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tree {
            nodes: vec![Node {
                parent: 0,
                depth: 0,
                open: b"",
                path: "",
                chain: [0; MAX_DEPTH],
            }],
            node_by_path: std::collections::HashMap::from([("", 0u16)]),
            slots: Vec::with_capacity(PATHS.len()),
            transition_bound: 0,
            longest_key: 0,
        };
        fn node(t: &mut Tree, object: &'static str) -> u16 {
            if let Some(&n) = t.node_by_path.get(object) {
                return n;
            }
            let (parent, name) = match object.rfind('.') {
                Some(i) => (node(t, &object[..i]), &object[i + 1..]),
                None => (0, object),
            };
            let id = t.nodes.len() as u16;
            let p = &t.nodes[parent as usize];
            let depth = p.depth + 1;
            assert!((depth as usize) < MAX_DEPTH, "object {object:?} nested too deep");
            let mut chain = p.chain;
            chain[depth as usize] = id;
            t.nodes.push(Node {
                parent,
                depth,
                open: quoted(name, ":{"),
                path: object,
                chain,
            });
            t.node_by_path.insert(object, id);
            id
        }
        for path in PATHS {
            let (parent, leaf) = match path.rfind('.') {
                Some(i) => (node(&mut t, &path[..i]), &path[i + 1..]),
                None => (0, *path),
            };
            let q = quoted(leaf, ":");
            assert!(q.len() <= KEY_ROOM, "key of {path:?} longer than KEY_ROOM");
            let mut key = [b' '; KEY_ROOM];
            key[..q.len()].copy_from_slice(q);
            t.slots.push(Slot {
                parent,
                len: q.len() as u8,
                key,
            });
        }
        for object in EXTRA_OBJECTS {
            node(&mut t, object);
        }
        let longest_open = t
            .nodes
            .iter()
            .map(|n| {
                n.chain[1..=n.depth as usize]
                    .iter()
                    .map(|&c| t.nodes[c as usize].open.len() + 1)
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        t.transition_bound = MAX_DEPTH + longest_open;
        t.longest_key = KEY_ROOM;
        t
    })
}

enum Key<'k> {
    /// Pre-quoted `"leaf":`.
    Static(&'k [u8; KEY_ROOM], u8),
    Dynamic(&'k str),
}

/// Streams fields in path order, opening and closing objects by walking the node tree.
struct Writer<'t> {
    t: &'t Tree,
    cur: u16,
    /// Whether the open object already has a member (the next one needs a comma).
    has_member: bool,
}

impl Writer<'_> {
    /// Close objects until `target` (an ancestor of the current node) is current.
    fn close_to(&mut self, out: &mut Vec<u8>, target: u16) {
        while self.cur != target && self.cur != 0 {
            out.push(b'}');
            self.cur = self.t.nodes[self.cur as usize].parent;
            // The object closed was a member of its parent.
            self.has_member = true;
        }
    }

    #[inline]
    fn field(&mut self, out: &mut Vec<u8>, parent: u16, key: Key<'_>, v: &Val<'_>) {
        self.prefix(out, parent, key);
        // SAFETY: the caller reserved `val_bound(v)` bytes for the value, see `prefix`.
        unsafe { write_val_unchecked(out, v) };
    }

    /// What comes before a field's value: the move to its object, a comma if needed, the key.
    #[inline]
    fn prefix(&mut self, out: &mut Vec<u8>, parent: u16, key: Key<'_>) {
        // SAFETY (every `*_unchecked` call below and in `transition`): the caller
        // ([`Doc::write`], [`Shape::build`]) reserved room for the transition (at most
        // `transition_bound` bytes of closing braces, commas and pre-quoted object openings),
        // the comma, the key and (for `field`) the value's `val_bound`.
        if parent != self.cur {
            self.transition(out, parent);
        }
        // The comma is written always and kept only after a member: no branch.
        unsafe { json::byte_if(out, b',', self.has_member) };
        self.has_member = true;
        match key {
            Key::Static(q, len) => unsafe { json::put_padded(out, q, len as usize) },
            Key::Dynamic(k) => {
                unsafe { json::write_str_unchecked(out, k.as_bytes()) };
                unsafe { json::byte_unchecked(out, b':') };
            }
        }
    }

    /// Close objects up to the lowest common ancestor of the open object and `parent`, then
    /// open the objects down to `parent`.
    #[inline(never)]
    fn transition(&mut self, out: &mut Vec<u8>, parent: u16) {
        let t = self.t;
        let (a, b) = (&t.nodes[self.cur as usize], &t.nodes[parent as usize]);
        // Depth of the lowest common ancestor: the length of the shared ancestor chain.
        let mut lca = 0;
        let top = a.depth.min(b.depth) as usize;
        while lca < top && a.chain[lca + 1] == b.chain[lca + 1] {
            lca += 1;
        }
        // SAFETY: see `field`; this is the transition part of the room reserved.
        for _ in lca..a.depth as usize {
            unsafe { json::byte_unchecked(out, b'}') };
            self.has_member = true;
        }
        for &n in &b.chain[lca + 1..=b.depth as usize] {
            unsafe { json::byte_if(out, b',', self.has_member) };
            unsafe { json::put_unchecked(out, t.nodes[n as usize].open) };
            self.has_member = false;
        }
        self.cur = parent;
    }
}

/// Write a value; strings with no capacity check.
///
/// # Safety
/// `out` must have at least `val_bound(v)` bytes of spare capacity.
#[inline(always)]
unsafe fn write_val_unchecked(out: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        // SAFETY: `val_bound` of a string is its `str_bound`, which the caller guarantees.
        Val::Str(s) => unsafe { json::write_str_unchecked(out, s.as_bytes()) },
        Val::Shared(s) => unsafe { json::write_str_unchecked(out, s.as_bytes()) },
        other => write_val(out, other),
    }
}

/// `i64::MIN` is 20 characters.
const NUMBER_BOUND: usize = 20;
/// A float is at most 24 characters (ryu), plus `.0`.
const FLOAT_BOUND: usize = 32;
const BOOL_BOUND: usize = 5;
/// `"-262143-12-31T23:59:59.999000Z"` and the like: well under 40.
const TS_BOUND: usize = 40;

/// Most bytes a list of strings can take when written.
fn list_bound<'s>(items: impl Iterator<Item = &'s str>) -> usize {
    2 + items.map(|s| json::str_bound(s.len()) + 1).sum::<usize>()
}

/// Most bytes a value can take when written (strings at their worst escaping).
#[inline]
fn val_bound(v: &Val<'_>) -> usize {
    match v {
        Val::Str(s) => json::str_bound(s.len()),
        Val::Shared(s) => json::str_bound(s.len()),
        Val::Int(_) | Val::UInt(_) => NUMBER_BOUND,
        Val::Float(_) | Val::FloatDecimal(_) => FLOAT_BOUND,
        Val::Bool(_) => BOOL_BOUND,
        Val::Strs(list) => list_bound(list.iter().map(|s| s.as_ref())),
        Val::StaticStrs(list) => list_bound(list.iter().copied()),
        Val::Json(j) => j.len(),
        Val::Ts(..) => TS_BOUND,
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

pub(crate) fn write_val(out: &mut Vec<u8>, v: &Val<'_>) {
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
    fn owned_values_are_dropped_when_written() {
        let shared: Arc<str> = Arc::from("ua");
        let mut d = Doc::default();
        d.put(crate::p!("user_agent.name"), Val::Shared(shared.clone()));
        d.put(crate::p!("user_agent.name"), Val::Shared(shared.clone()));
        d.put(crate::p!("user_agent.os.name"), Val::Shared(shared.clone()));
        d.put(crate::p!("user_agent.os.name"), Val::Str("replaced".into()));
        d.put(crate::p!("url.path"), Val::Str(Cow::Owned("p".repeat(100))));
        assert_eq!(Arc::strong_count(&shared), 2);
        let mut out = vec![];
        let storage = d.write(&mut out);
        assert!(storage.vals.is_empty());
        assert_eq!(Arc::strong_count(&shared), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"]["os"]["name"], "replaced");
        assert_eq!(v["user_agent"]["name"], "ua");
    }

    #[test]
    fn list_values_keep_their_memory_for_the_next_document() {
        let mut d = Doc::default();
        let mut l = d.list();
        l.push("10.0.0.1".into());
        l.push(Cow::Owned("10.0.0.2".to_string()));
        let ptr = l.as_ptr() as usize;
        d.strs(crate::p!("related.ip"), l);
        let mut out = vec![];
        let storage = d.write(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["related"]["ip"], serde_json::json!(["10.0.0.1", "10.0.0.2"]));
        let mut next = Doc::from_storage(storage.recycle());
        let again = next.list();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr() as usize, ptr);
        // A list given back unused is handed out again too.
        next.spare(again);
        let third = next.list();
        assert_eq!(third.as_ptr() as usize, ptr);
    }

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
