//! The known extension keys as an open-addressing hash table, so finding a key's [`Key`] is one
//! hash of at most two 8-byte loads and one or two compares instead of a chain of string
//! matches.
//!
//! Case folding is `byte | 0x20`: on the CEF key alphabet (`[A-Za-z0-9_.,\[\]]`) it maps each
//! upper-case letter to its lower case and is otherwise one-to-one, so a folded key equals a
//! (lower-case) name exactly when the key matches the name ignoring ASCII case.

use std::sync::OnceLock;

use super::record::{Format, Key, known_names};

const BITS: u32 = 9;
const SIZE: usize = 1 << BITS;
/// Keys longer than this are compared byte by byte (the first and last 8 bytes hash).
const SHORT: usize = 16;

/// One slot: 24 bytes, so the whole table (12 KiB) stays small next to the line being parsed.
#[derive(Clone, Copy)]
struct Entry {
    head: u64,
    tail: u64,
    key: Key,
    /// Name length; 0 marks an empty slot.
    len: u8,
    /// Index of the full lower-case name in [`Table::names`], checked for names longer than
    /// [`SHORT`].
    name: u16,
}

const EMPTY: Entry = Entry {
    head: 0,
    tail: 0,
    key: Key::Act,
    len: 0,
    name: 0,
};

pub(crate) struct Table {
    slots: Box<[Entry; SIZE]>,
    names: Vec<&'static [u8]>,
}

pub(crate) enum Hit {
    Found(Key),
    /// Not a known key.
    Absent,
    /// Not in the table, but a form the reference accepts may exist (`cs01`).
    Unsure,
}

pub(crate) struct Tables {
    cef: Table,
    leef: Table,
}

impl Tables {
    #[inline]
    pub(crate) fn get(&self, format: Format, key: &[u8]) -> Hit {
        if format == Format::Leef {
            self.leef.get(key)
        } else {
            self.cef.get(key)
        }
    }
}

pub(crate) fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| Tables {
        cef: Table::build(Format::Cef),
        leef: Table::build(Format::Leef),
    })
}

/// First and last (up to) 8 bytes of `b`, folded (bytes past a short key are zero), and whether
/// `b` holds a control byte, which folding could confuse with a digit or `.`.
#[inline(always)]
fn words(b: &[u8]) -> (u64, u64, bool) {
    use crate::swar::{any_below, ends4, ends8};
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let n = b.len();
    if n >= 8 {
        let (h, t) = ends8(b);
        (h | FOLD, t | FOLD, any_below(h, 0x20) || any_below(t, 0x20))
    } else if n >= 4 {
        let (h, t) = ends4(b);
        // Both words repeated into 8 bytes so the check sees only key bytes.
        let ctrl = any_below(u64::from(h) * 0x1_0000_0001, 0x20) || any_below(u64::from(t) * 0x1_0000_0001, 0x20);
        let fold = FOLD as u32;
        (u64::from(h | fold), u64::from(t | fold), ctrl)
    } else {
        let mut x = 0u64;
        let mut ctrl = false;
        for (i, &c) in b.iter().enumerate() {
            x |= u64::from(c | 0x20) << (8 * i);
            ctrl |= c < 0x20;
        }
        (x, 0, ctrl)
    }
}

#[inline(always)]
fn hash(len: usize, head: u64, tail: u64) -> usize {
    let h = (head ^ tail.rotate_left(23) ^ (len as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - BITS)) as usize
}

/// `b` case-folded equals the lower-case `name`.
fn folded_eq(b: &[u8], name: &[u8]) -> bool {
    b.len() == name.len() && b.iter().zip(name).all(|(&c, &n)| c | 0x20 == n)
}

impl Table {
    fn build(format: Format) -> Table {
        let mut slots: Box<[Entry; SIZE]> = Box::new([EMPTY; SIZE]);
        let mut names = Vec::new();
        for (name, key) in known_names(format) {
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.'),
                "{name:?} would not survive case folding"
            );
            assert!((1..=40).contains(&name.len()), "{name:?}: length out of range");
            let b: &'static [u8] = Box::leak(name.into_bytes().into_boxed_slice());
            let (head, tail, _) = words(b);
            let mut i = hash(b.len(), head, tail);
            while slots[i].len != 0 {
                i = (i + 1) & (SIZE - 1);
            }
            slots[i] = Entry {
                head,
                tail,
                key,
                len: b.len() as u8,
                name: names.len() as u16,
            };
            names.push(b);
        }
        Table { slots, names }
    }

    #[inline]
    fn get(&self, b: &[u8]) -> Hit {
        if b.is_empty() || b.len() > 40 {
            return Hit::Absent;
        }
        let (head, tail, ctrl) = words(b);
        if ctrl {
            return Hit::Unsure;
        }
        let mut i = hash(b.len(), head, tail);
        loop {
            let e = &self.slots[i];
            if e.len == 0 {
                break;
            }
            if e.len as usize == b.len()
                && e.head == head
                && e.tail == tail
                && (b.len() <= SHORT || folded_eq(b, self.names[e.name as usize]))
            {
                return Hit::Found(e.key);
            }
            i = (i + 1) & (SIZE - 1);
        }
        let numbered = b.len() > 2 && matches!(b[0] | 0x20, b'c' | b'd') && matches!(b[1] | 0x20, b's' | b'n' | b'e');
        if numbered { Hit::Unsure } else { Hit::Absent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_agrees_with_reference_on_names_and_case_variants() {
        for format in [Format::Cef, Format::Leef] {
            let names = known_names(format);
            assert!(names.len() > 150, "{}", names.len());
            for (name, key) in names {
                let upper = name.to_ascii_uppercase();
                let camel: String = name
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i % 3 == 0 { c.to_ascii_uppercase() } else { c })
                    .collect();
                for k in [name.as_str(), &upper, &camel] {
                    assert_eq!(Key::lookup(format, k), Some(key), "{k}");
                }
                // One byte off is another key or none, as the reference says.
                let mut near = name.clone().into_bytes();
                let last = near.len() - 1;
                near[last] = b'_';
                let near = String::from_utf8(near).unwrap();
                assert_eq!(
                    Key::lookup(format, &near),
                    Key::lookup_reference(format, &near),
                    "{near}"
                );
            }
            for odd in [
                "cs\u{11}",
                "CS\u{11}label",
                "act\u{e}",
                "",
                "cs01",
                "CS07label",
                "cn03",
                "deviceCustomString01",
                "x",
                "a_b",
                "[]",
                "cs",
                "cs0",
            ] {
                assert_eq!(Key::lookup(format, odd), Key::lookup_reference(format, odd), "{odd}");
            }
        }
    }
}
