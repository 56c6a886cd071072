//! Word-at-a-time byte tricks shared by the CEF key table and the JSON writer: a short slice
//! read as its first and last 8 (or 4) bytes, overlapping when it is shorter than twice that,
//! and "some byte of this word is below `n` / equal to `c`".

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether some byte of `x` is below `n` (exact for `n <= 128`).
#[inline(always)]
pub(crate) fn any_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0
}

/// Whether some byte of `x` equals `c`.
#[inline(always)]
pub(crate) fn any_eq(x: u64, c: u8) -> bool {
    any_below(x ^ (ONES * u64::from(c)), 1)
}

/// First and last 8 bytes of `b` (at least 8 long), little-endian.
#[inline(always)]
pub(crate) fn ends8(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    let mut h = [0u8; 8];
    let mut t = [0u8; 8];
    h.copy_from_slice(&b[..8]);
    t.copy_from_slice(&b[n - 8..]);
    (u64::from_le_bytes(h), u64::from_le_bytes(t))
}

/// First and last 4 bytes of `b` (at least 4 long), little-endian.
#[inline(always)]
pub(crate) fn ends4(b: &[u8]) -> (u32, u32) {
    let n = b.len();
    let mut h = [0u8; 4];
    let mut t = [0u8; 4];
    h.copy_from_slice(&b[..4]);
    t.copy_from_slice(&b[n - 4..]);
    (u32::from_le_bytes(h), u32::from_le_bytes(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_checks_are_exact() {
        for c in 0u8..=255 {
            for pos in 0..8 {
                let mut b = [b'a'; 8];
                b[pos] = c;
                let x = u64::from_le_bytes(b);
                assert_eq!(any_below(x, 0x20), c < 0x20, "byte {c} at {pos}");
                assert_eq!(any_eq(x, b'"'), c == b'"', "byte {c} at {pos}");
            }
        }
        assert_eq!(
            ends8(b"0123456789"),
            (u64::from_le_bytes(*b"01234567"), u64::from_le_bytes(*b"23456789"))
        );
        assert_eq!(
            ends4(b"abcde"),
            (u32::from_le_bytes(*b"abcd"), u32::from_le_bytes(*b"bcde"))
        );
    }
}
