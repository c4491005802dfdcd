//! libFuzzer entry for the `workflow_source` target (tests/fuzz/targets.rs).
#![no_main]

#[path = "../../tests/fuzz/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::workflow_source(data));
