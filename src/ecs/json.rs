//! JSON text written into a byte buffer whose room was reserved up front: the document writer
//! reserves a bound for a whole field once, then copies keys and values with no capacity check
//! per byte run, and JSON-escapes strings in the same pass that copies them (16 bytes per step
//! on x86_64).
//!
//! [`write_str_scalar`] is the reference; the property tests in `tests/properties.rs` keep the
//! fast writer equal to it.

/// Room [`write_str_unchecked`] may need for a string of `len` bytes: every byte could become a
/// six-byte `\u00XX`, plus the quotes, plus the tail of one 16-byte store past the text.
#[inline]
pub const fn str_bound(len: usize) -> usize {
    6 * len + 2 + 16
}

/// `true` for bytes a JSON string cannot hold as they are: `"`, `\` and controls below 0x20.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

/// The escape sequence for a byte that needs one, into `dst`; returns its length.
#[inline]
fn escape_seq(c: u8) -> ([u8; 6], usize) {
    const H: &[u8; 16] = b"0123456789abcdef";
    match c {
        b'"' => (*b"\\\"\0\0\0\0", 2),
        b'\\' => (*b"\\\\\0\0\0\0", 2),
        b'\n' => (*b"\\n\0\0\0\0", 2),
        b'\r' => (*b"\\r\0\0\0\0", 2),
        b'\t' => (*b"\\t\0\0\0\0", 2),
        _ => ([b'\\', b'u', b'0', b'0', H[(c >> 4) as usize], H[(c & 15) as usize]], 6),
    }
}

/// Whether any byte of a short `b` needs escaping, a word at a time. May say `true` only when
/// one does (the bit tricks are exact for "some byte is").
#[inline(always)]
fn has_special(b: &[u8]) -> bool {
    use crate::swar::{any_below, any_eq, ends4, ends8};
    let word = |x: u64| any_below(x, 0x20) || any_eq(x, b'"') || any_eq(x, b'\\');
    let n = b.len();
    if n >= 8 {
        let (h, t) = ends8(b);
        word(h) || word(t)
    } else if n >= 4 {
        let (h, t) = ends4(b);
        // Upper bytes padded with a plain `A`.
        const PAD: u64 = 0x4141_4141_0000_0000;
        word(u64::from(h) | PAD) || word(u64::from(t) | PAD)
    } else {
        b.iter().any(|&c| ESCAPE[c as usize])
    }
}

/// Reference: `s` as a JSON string, byte by byte.
pub fn write_str_scalar(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &c in s.as_bytes() {
        if ESCAPE[c as usize] {
            let (seq, n) = escape_seq(c);
            out.extend_from_slice(&seq[..n]);
        } else {
            out.push(c);
        }
    }
    out.push(b'"');
}

/// Write `s` as a JSON string.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(str_bound(s.len()));
    // SAFETY: room for `str_bound(s.len())` bytes was just reserved.
    unsafe { write_str_unchecked(out, s.as_bytes()) }
}

/// Append `b` with no capacity check.
///
/// # Safety
/// `out` must have at least `b.len()` bytes of spare capacity.
#[inline(always)]
pub unsafe fn put_unchecked(out: &mut Vec<u8>, b: &[u8]) {
    let len = out.len();
    debug_assert!(out.capacity() - len >= b.len());
    // SAFETY: the caller guarantees room for `b.len()` bytes after `len`; source and
    // destination are different allocations (`b` is never `out`'s own storage here).
    unsafe {
        copy_small(out.as_mut_ptr().add(len), b);
        out.set_len(len + b.len());
    }
}

/// Append the first `len` bytes of a fixed-size `padded` array with one fixed-size copy.
///
/// # Safety
/// `out` must have at least `N` bytes of spare capacity, and `len <= N`.
#[inline(always)]
pub unsafe fn put_padded<const N: usize>(out: &mut Vec<u8>, padded: &[u8; N], len: usize) {
    let at = out.len();
    debug_assert!(out.capacity() - at >= N && len <= N);
    // SAFETY: the caller guarantees `N` bytes of room after `at` and `len <= N`; the bytes
    // past `len` are written but not kept (the length moves by `len` only).
    unsafe {
        (out.as_mut_ptr().add(at) as *mut [u8; N]).write_unaligned(*padded);
        out.set_len(at + len);
    }
}

/// Whether `s` is a decimal that the document writer prints, once parsed as an `f64`, exactly
/// as `s` (so it can be written as it is, without parsing and printing): an optional `-`, one
/// to six integer digits without a leading zero (or a single `0` followed by at most three
/// zeros in the fraction), a `.`, and a fraction ending in a non-zero digit, fifteen
/// significant digits at most. Fifteen digits survive the trip through an `f64`, and the
/// shortest text that does (what the writer prints) is then this one.
pub fn plain_decimal(s: &str) -> bool {
    let b = s.as_bytes();
    let b = b.strip_prefix(b"-").unwrap_or(b);
    let Some(dot) = b.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (int, frac) = (&b[..dot], &b[dot + 1..]);
    let digits = |x: &[u8]| x.iter().all(u8::is_ascii_digit);
    if int.is_empty() || int.len() > 6 || frac.is_empty() || !digits(int) || !digits(frac) {
        return false;
    }
    if frac.last() == Some(&b'0') {
        return false;
    }
    let significant = if int == b"0" {
        let zeros = frac.iter().take_while(|&&c| c == b'0').count();
        if zeros > 3 {
            return false;
        }
        frac.len() - zeros
    } else {
        if int[0] == b'0' {
            return false;
        }
        int.len() + frac.len()
    };
    significant <= 15
}

/// Bytes [`put_blocks`] copies at a time.
pub const BLOCK: usize = 32;

/// Append `len` bytes from `src` in [`BLOCK`]-sized copies; the last copy may write bytes past
/// `len`, which are not kept.
///
/// # Safety
/// `src` must be readable, and `out` must have spare capacity, for `len` rounded up to a
/// multiple of [`BLOCK`] (at least one block); `src` must not point into `out`.
#[inline(always)]
pub unsafe fn put_blocks(out: &mut Vec<u8>, src: *const u8, len: usize) {
    let at = out.len();
    debug_assert!(out.capacity() - at >= len.max(1).next_multiple_of(BLOCK));
    // SAFETY: the caller guarantees the reads and writes of every whole block up to `len`
    // rounded up; the length moves by `len` only.
    unsafe {
        let dst = out.as_mut_ptr().add(at);
        let mut i = 0;
        loop {
            let b = (src.add(i) as *const [u8; BLOCK]).read_unaligned();
            (dst.add(i) as *mut [u8; BLOCK]).write_unaligned(b);
            i += BLOCK;
            if i >= len {
                break;
            }
        }
        out.set_len(at + len);
    }
}

/// Write `c` after the end and keep it only when `keep` (no branch).
///
/// # Safety
/// `out` must have at least one byte of spare capacity.
#[inline(always)]
pub unsafe fn byte_if(out: &mut Vec<u8>, c: u8, keep: bool) {
    let len = out.len();
    debug_assert!(out.capacity() > len);
    // SAFETY: the caller guarantees one byte of room after `len`; the length moves past it
    // only when it is kept.
    unsafe {
        *out.as_mut_ptr().add(len) = c;
        out.set_len(len + usize::from(keep));
    }
}

/// Append one byte with no capacity check.
///
/// # Safety
/// `out` must have at least one byte of spare capacity.
#[inline(always)]
pub unsafe fn byte_unchecked(out: &mut Vec<u8>, c: u8) {
    let len = out.len();
    debug_assert!(out.capacity() > len);
    // SAFETY: the caller guarantees one byte of room after `len`.
    unsafe {
        *out.as_mut_ptr().add(len) = c;
        out.set_len(len + 1);
    }
}

/// Copy `src` to `dst` inline for short runs (most keys and values), `memcpy` for long ones.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
unsafe fn copy_small(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read below is inside `src` (`n` bytes from `s`) and every write inside
    // `dst..dst + n`; overlapping head and tail copies of the same bytes write equal values.
    unsafe {
        if n >= 16 {
            if n <= 32 {
                let a = (s as *const [u8; 16]).read_unaligned();
                let b = (s.add(n - 16) as *const [u8; 16]).read_unaligned();
                (dst as *mut [u8; 16]).write_unaligned(a);
                (dst.add(n - 16) as *mut [u8; 16]).write_unaligned(b);
            } else {
                std::ptr::copy_nonoverlapping(s, dst, n);
            }
        } else if n >= 8 {
            let a = (s as *const u64).read_unaligned();
            let b = (s.add(n - 8) as *const u64).read_unaligned();
            (dst as *mut u64).write_unaligned(a);
            (dst.add(n - 8) as *mut u64).write_unaligned(b);
        } else if n >= 4 {
            let a = (s as *const u32).read_unaligned();
            let b = (s.add(n - 4) as *const u32).read_unaligned();
            (dst as *mut u32).write_unaligned(a);
            (dst.add(n - 4) as *mut u32).write_unaligned(b);
        } else if n > 0 {
            *dst = *s;
            *dst.add(n / 2) = *s.add(n / 2);
            *dst.add(n - 1) = *s.add(n - 1);
        }
    }
}

/// Write `s` as a JSON string (quotes included), escaping as it copies.
///
/// # Safety
/// `out` must have at least [`str_bound`]`(s.len())` bytes of spare capacity.
#[inline]
pub unsafe fn write_str_unchecked(out: &mut Vec<u8>, s: &[u8]) {
    debug_assert!(out.capacity() - out.len() >= str_bound(s.len()));
    let start = out.len();
    // SAFETY: all writes stay within `str_bound(s.len())` bytes after `start`: each source
    // byte produces at most six bytes, the quotes two, and a 16-byte store that runs past the
    // bytes it keeps writes at most 16 bytes beyond them (the bound's slack); all reads are
    // inside `s`.
    unsafe {
        let base = out.as_mut_ptr().add(start);
        let mut d = base;
        *d = b'"';
        d = d.add(1);
        let mut i = 0;
        #[cfg(target_arch = "x86_64")]
        while i + 16 <= s.len() {
            let p = s.as_ptr().add(i);
            // Store first: on a hit the bytes before it are already in place.
            (d as *mut [u8; 16]).write_unaligned((p as *const [u8; 16]).read_unaligned());
            let mask = sse2::special_mask(p);
            if mask == 0 {
                i += 16;
                d = d.add(16);
                continue;
            }
            let k = mask.trailing_zeros() as usize;
            d = d.add(k);
            let (seq, n) = escape_seq(s[i + k]);
            (d as *mut [u8; 6]).write_unaligned(seq);
            d = d.add(n);
            i += k + 1;
        }
        // The tail of a long string with nothing escaped so far (output offset = input offset
        // + 1): the last 16 input bytes, checked and stored over bytes already written with
        // the same values.
        #[cfg(target_arch = "x86_64")]
        if s.len() >= 16 && i < s.len() && d == base.add(1 + i) {
            let back = i - (s.len() - 16);
            let mask = sse2::special_mask(s.as_ptr().add(s.len() - 16)) >> back;
            if mask == 0 {
                let p = s.as_ptr().add(s.len() - 16);
                (d.sub(back) as *mut [u8; 16]).write_unaligned((p as *const [u8; 16]).read_unaligned());
                d = d.add(s.len() - i);
                i = s.len();
            }
        }
        // A short tail: copied whole when a word-at-a-time check finds nothing to escape,
        // byte by byte otherwise.
        let tail = &s[i..];
        if !tail.is_empty() && !has_special(tail) {
            copy_small(d, tail);
            d = d.add(tail.len());
            i = s.len();
        }
        while i < s.len() {
            let c = s[i];
            if ESCAPE[c as usize] {
                let (seq, n) = escape_seq(c);
                (d as *mut [u8; 6]).write_unaligned(seq);
                d = d.add(n);
            } else {
                *d = c;
                d = d.add(1);
            }
            i += 1;
        }
        *d = b'"';
        d = d.add(1);
        out.set_len(start + d.offset_from(base) as usize);
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Bit `i` set when byte `i` of the 16 at `p` needs escaping.
    ///
    /// # Safety
    /// `p` must be valid for 16 bytes of reads.
    #[inline(always)]
    pub(super) unsafe fn special_mask(p: *const u8) -> u32 {
        // SAFETY: SSE2 is part of the x86_64 baseline; the caller guarantees 16 readable bytes.
        unsafe {
            let v = _mm_loadu_si128(p as *const __m128i);
            let below = _mm_set1_epi8(0x1f);
            // c < 0x20  <=>  max(c, 0x1f) == 0x1f (unsigned).
            let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, below), below);
            let hit = _mm_or_si128(
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                ),
                ctrl,
            );
            _mm_movemask_epi8(hit) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_string_writer_matches_scalar_and_serde_json() {
        let mut samples: Vec<String> = vec![
            "".into(),
            "a".into(),
            "ab".into(),
            "abc".into(),
            "quote \" in the middle of a long enough string".into(),
            "back\\slash".into(),
            "ctrl \u{1}\u{1f} and \t tab\n\r".into(),
            "unicode caf\u{e9} \u{6771}\u{4eac} \u{1F600} done".into(),
            "\"".repeat(40),
        ];
        for n in 0..70 {
            samples.push("x".repeat(n));
            samples.push(format!("{}\"{}", "y".repeat(n), "z".repeat(n / 2)));
        }
        for s in &samples {
            let mut fast = vec![0xAA; 3];
            write_str(&mut fast, s);
            let mut slow = vec![0xAA; 3];
            write_str_scalar(&mut slow, s);
            assert_eq!(fast, slow, "{s:?}");
            let back: String = serde_json::from_slice(&fast[3..]).expect("valid JSON string");
            assert_eq!(&back, s);
        }
    }

    #[test]
    fn word_check_finds_exactly_the_specials() {
        for n in 0..16usize {
            for pos in 0..n {
                for c in 0u8..=255 {
                    let mut b = vec![b'a'; n];
                    b[pos] = c;
                    assert_eq!(has_special(&b), ESCAPE[c as usize], "n {n} pos {pos} byte {c}");
                }
            }
        }
    }

    #[test]
    fn padded_copies_keep_only_len_bytes() {
        let mut padded = [b' '; 32];
        padded[..9].copy_from_slice(b"\"source\":");
        for len in [0, 1, 9, 32] {
            let mut out = b"{".to_vec();
            out.reserve(32);
            // SAFETY: 32 bytes reserved just above; `len <= 32`.
            unsafe { put_padded(&mut out, &padded, len) };
            assert_eq!(&out[1..], &padded[..len]);
        }
    }

    #[test]
    fn small_copies_copy_exactly() {
        for n in 0..80 {
            let src: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(7).wrapping_add(1)).collect();
            let mut out = vec![9u8; 5];
            out.reserve(n);
            // SAFETY: `n` bytes reserved just above.
            unsafe { put_unchecked(&mut out, &src) };
            assert_eq!(&out[..5], &[9; 5]);
            assert_eq!(&out[5..], &src[..]);
        }
    }
}
