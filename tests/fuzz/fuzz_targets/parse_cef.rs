//! CEF header + extension scan and envelope split: no panic, and every field borrows from input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = wafstream::parse::syslog::split_envelope(&text);
    if let Ok(rec) = wafstream::parse::cef::parse(&text) {
        for f in &rec.fields {
            let _ = f.value();
            assert!(text.contains(f.key));
        }
        let _ = rec.index();
    }
});
