//! LEEF 1.0/2.0 (delimiter field, hex delimiters, space-separated fallback): no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let framed = format!("LEEF:2.0|Incapsula|SIEMintegration|0|x|{text}");
    let _ = wafstream::parse::leef::parse(&text);
    let _ = wafstream::parse::leef::parse(&framed);
});
