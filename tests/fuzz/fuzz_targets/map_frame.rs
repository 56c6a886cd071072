//! Whole frame → ECS document (both profiles): never a panic, always one valid JSON object.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wafstream::ecs::{FrameMeta, Mapper, Options, Profile};

fuzz_target!(|data: &[u8]| {
    for profile in [Profile::Elastic, Profile::Sekoia] {
        let m = Mapper::new(Options { profile, preserve_original_event: true, preserve_duplicate_custom_fields: true, ..Options::default() });
        let mut out = Vec::new();
        m.map(data, &FrameMeta { received_ms: 0, input: "fuzz", ..FrameMeta::default() }, None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("mapper wrote invalid JSON");
        assert!(v.is_object());
    }
});
