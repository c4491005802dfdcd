//! libFuzzer entry for the `ui_workflow` target (tests/fuzz/targets.rs).
#![no_main]

#[path = "../../tests/fuzz/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::ui_workflow(data));
