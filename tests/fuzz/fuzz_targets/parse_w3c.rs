//! W3C: the first line is the `#Fields:` directive, the rest data lines. No panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let Some(first) = lines.next() else { return };
    if let Some(cols) = wafstream::parse::W3cFields::from_directive(first) {
        for l in lines {
            let _ = wafstream::parse::w3c::parse(l, &cols);
        }
    }
});
