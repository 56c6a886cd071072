//! Container reader on arbitrary bytes (with and without a header): errors, never panics,
//! and the decompression cap holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wafstream::container::{self, KeyStore, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decompressed_bytes: 1 << 20 };
    let keys = KeyStore::none();
    if let Ok(o) = container::open(data, &keys, limits) {
        assert!(o.body.len() <= 1 << 20);
        for l in o.lines() {
            assert!(!l.is_empty());
        }
    }
    let mut framed = b"checksum:abc\nformat:CEF\n|==|\n".to_vec();
    framed.extend_from_slice(data);
    let _ = container::open(&framed, &keys, limits);
});
