//! The stable fuzz runner: every target of `tests/fuzz/targets.rs` on mutations of a seed
//! corpus (deterministic, no coverage feedback), checking that no input panics and that no
//! input allocates beyond the stated bound for its size. `cargo test` runs a short round
//! (10,000 inputs a target); `COMFYRS_FUZZ_ITERS=N` a longer one; coverage-guided runs use
//! the cargo-fuzz crate in `fuzz/` on nightly (docs/security.md).

#[path = "fuzz/targets.rs"]
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes and their peak, so each input's allocation can be bounded.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the same pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The stated bounds: what one input may allocate at its peak, as a fixed part plus a part
/// per input byte (docs/security.md). Images: the decoder's fixed cap, whatever the size.
fn bound(target: &str, len: usize) -> usize {
    match target {
        "image" => (comfyrs::server::routes::files::DECODE_MAX_PIXELS * 8) as usize + 64 * len,
        "validate_plan" => (1 << 20) + 256 * len,
        _ => (1 << 20) + 64 * len,
    }
}

/// xorshift64*: deterministic, so a failure is reproduced by its iteration number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\"class_type\"",
    b"\"inputs\"",
    b"[\"1\", 0]",
    b"[\"1\", 99]",
    b"null",
    b"1e308",
    b"-1",
    b"\"NaN\"",
    b"\"inf\"",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\"ImageInvert\"",
    b"\"PreviewImage\"",
    b"\"KSampler\"",
    b"\"PrimitiveFloat\"",
    b"\"_meta\"",
    b"=",
    b".",
    b"\n",
    b"--B\r\n",
    b"--B--\r\n",
    b"Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n",
    b"Content-Disposition: form-data; name=\"subfolder\"\r\n\r\n",
    b"\r\n",
    b"IHDR",
    b"IDAT",
    b"tEXt",
    b"IEND",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    const MAX: usize = 64 * 1024;
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
            3 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                input.drain(a..b);
            }
            4 if len > 1 => {
                // Repeat a slice (deep nesting, long names, many nodes).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let piece = input[a..b].to_vec();
                let times = 1 + rng.below(32);
                let at = rng.below(len + 1);
                for _ in 0..times {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(512)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => {}
        }
    }
    input.truncate(MAX);
}

fn tiny_png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 3, 2);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[7u8; 24]).unwrap();
    drop(w);
    out
}

/// UI-format templates (under the mutator's 64 KiB) seeding the converter: subgraphs, groups,
/// primitives and custom widgets between them.
const UI_TEMPLATE_SEEDS: &[&str] = &[
    "inpaint_model_outpainting.json",
    "gligen_textbox_example.json",
    "api_openai_image_1_multi_inputs.json",
    "image_qwen_image_instantx_controlnet.json",
];

/// The files of `dir` whose names pass `keep`, in name order.
fn files_in(dir: &std::path::Path, keep: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seed files in {}", dir.display());
    paths
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workflows: Vec<Vec<u8>> = std::fs::read_dir(root.join("workflows"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    match target {
        "workflow" | "validate_plan" => {
            let mut v = workflows;
            v.push(br#"{"prompt": {"1": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}}"#.to_vec());
            v.push(br#"{"1": {"class_type": "PrimitiveFloat", "inputs": {"value": "NaN"}}, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}"#.to_vec());
            v
        }
        "overrides" => vec![
            br#"{"6": {"inputs": {"text": "a cat"}}, "3": {"inputs": {"seed": 5, "cfg": 7.5}}}"#
                .to_vec(),
            b"6.text=hello\n3.seed=5\n3.cfg=1e3\n4.ckpt_name=\"x.safetensors\"\n".to_vec(),
        ],
        "multipart" => {
            let png = tiny_png();
            let mut body = Vec::new();
            body.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n");
            body.extend_from_slice(&png);
            body.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"subfolder\"\r\n\r\nsub\r\n--B\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--B--\r\n");
            vec![body]
        }
        "image" => vec![tiny_png()],
        "ui_workflow" => {
            let mut v = files_in(&root.join("tests/data/ui_workflows/rules"), |n| {
                n.ends_with(".json") && !n.ends_with(".api.json")
            });
            v.extend(files_in(
                &root.join("tests/data/ui_workflows/templates"),
                |n| UI_TEMPLATE_SEEDS.contains(&n),
            ));
            v
        }
        "workflow_source" => {
            let mut v = files_in(&root.join("tests/data/ui_workflows/images"), |n| {
                !n.ends_with(".py")
            });
            v.extend(files_in(&root.join("tests/data/ui_workflows/rules"), |n| {
                n == "reroutes.json"
            }));
            v.push(
                br#"{"1": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}"#.to_vec(),
            );
            v
        }
        other => panic!("no seeds for {other}"),
    }
}

#[test]
fn fuzz_targets_short_run() {
    let iters: usize = std::env::var("COMFYRS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Built before measuring: registry, environment, runtime.
    targets::context();
    for &(name, target) in targets::TARGETS {
        let seeds = seeds(name);
        let mut rng = Rng(0x5EED_0000_0000_0001 ^ name.len() as u64);
        let mut worst = 0.0f64;
        for i in 0..iters {
            let mut input = seeds[i % seeds.len()].clone();
            mutate(&mut rng, &seeds, &mut input);
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let outcome = std::panic::catch_unwind(|| target(&input));
            let extra = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            if outcome.is_err() {
                let path = std::env::temp_dir().join(format!("comfyrs-fuzz-{name}-{i}"));
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "target {name} panicked on input {i} (saved to {})",
                    path.display()
                );
            }
            assert!(
                extra <= bound(name, input.len()),
                "target {name}, input {i}: {extra} bytes allocated for {} input bytes",
                input.len()
            );
            if input.len() > 256 {
                worst = worst.max(extra as f64 / input.len() as f64);
            }
        }
        eprintln!("fuzz {name}: {iters} inputs, worst {worst:.1} bytes allocated per input byte (inputs over 256 bytes)");
    }
}

/// Inputs libFuzzer found crashing a target (tests/data/fuzz_findings/TARGET-what): each runs
/// through its target again, without a panic.
#[test]
fn libfuzzer_findings_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz_findings");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        match name.split('-').next().unwrap() {
            "ui_workflow" => targets::ui_workflow(&data),
            "workflow_source" => targets::workflow_source(&data),
            "workflow" => targets::workflow(&data),
            "validate_plan" => targets::validate_plan(&data),
            "overrides" => targets::overrides(&data),
            "multipart" => targets::multipart(&data),
            "image" => targets::image(&data),
            other => panic!("{name}: unknown target {other}"),
        }
        n += 1;
    }
    assert!(n >= 2, "the findings are there");
}
