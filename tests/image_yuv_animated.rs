//! ImageRGBToYUV / ImageYUVToRGB against ComfyUI's nodes (kornia) bit for bit
//! (`tests/data/image_yuv_golden.safetensors`), MaskPreview, and SaveAnimatedPNG /
//! SaveAnimatedWEBP decoded frame by frame against the files ComfyUI (Pillow) writes for the
//! same batch (`tests/data/animated_save_golden.safetensors`): frames, durations, merged
//! identical frames, metadata; and the schemas against ComfyUI's `/object_info`.

use candle_core::{DType, Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::node::types::{Image, Mask};
use comfyrs::node::{Registry, Value};
use comfyrs::testing::NodeHarness;
use comfyrs::workflow::parse_workflow;
use image::AnimationDecoder;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let p = root().join("tests/data").join(name);
    let t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (t, meta.metadata().clone().unwrap_or_default())
}

fn harness() -> (tempfile::TempDir, NodeHarness) {
    let d = tempfile::tempdir().unwrap();
    let mut h = NodeHarness::with_registry(Registry::with_builtin_nodes());
    h.env = Environment::new(Paths::under(d.path()));
    (d, h)
}

fn img(t: &Tensor) -> Value {
    Value::object(Image(t.clone()))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn out_image(v: &Value) -> Tensor {
    v.downcast::<Image>().unwrap().0.clone()
}

#[test]
fn yuv_nodes_match_comfyui_bit_for_bit() {
    let (g, _) = load("image_yuv_golden.safetensors");
    let (_d, mut h) = harness();
    let out = h.run("ImageRGBToYUV", [("image", img(&g["rgb"]))]).unwrap();
    for (i, k) in ["y", "u", "v"].iter().enumerate() {
        let got = out_image(&out.values[i]);
        assert_eq!(got.dims(), g[*k].dims());
        assert_eq!(bits(&got), bits(&g[*k]), "{k}");
    }
    let back = h
        .run(
            "ImageYUVToRGB",
            [
                ("Y", img(&g["y"])),
                ("U", img(&g["u"])),
                ("V", img(&g["v"])),
            ],
        )
        .unwrap();
    assert_eq!(bits(&out_image(&back.values[0])), bits(&g["back"]), "back");
    let rgb3 = h
        .run(
            "ImageYUVToRGB",
            [
                ("Y", img(&g["y3"])),
                ("U", img(&g["u3"])),
                ("V", img(&g["v3"])),
            ],
        )
        .unwrap();
    assert_eq!(bits(&out_image(&rgb3.values[0])), bits(&g["rgb3"]), "rgb3");

    // kornia needs exactly 3 channels; mismatched planes are input errors
    let rgba = Tensor::zeros((1, 2, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let e = h
        .run("ImageRGBToYUV", [("image", img(&rgba))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("3"), "{e}");
    let small = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    let e = h
        .run(
            "ImageYUVToRGB",
            [("Y", img(&g["y"])), ("U", img(&small)), ("V", img(&g["v"]))],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("U"), "{e}");
}

#[test]
fn mask_preview_saves_a_grey_temp_image() {
    let (_d, mut h) = harness();
    let vals: Vec<f32> = (0..2 * 3 * 5).map(|i| i as f32 / 29.0).collect();
    let mask = Tensor::from_vec(vals.clone(), (2, 3, 5), &Device::Cpu).unwrap();
    let out = h
        .run("MaskPreview", [("mask", Value::object(Mask(mask)))])
        .unwrap();
    let ui = out.ui.unwrap();
    let images = ui["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (b, e) in images.iter().enumerate() {
        assert_eq!(e["type"], "temp");
        let name = e["filename"].as_str().unwrap();
        assert!(name.starts_with("ComfyUI_temp_"), "{name}");
        let im = image::open(h.env.paths.temp.join(name)).unwrap().to_rgb8();
        assert_eq!(im.dimensions(), (5, 3));
        for (i, px) in im.pixels().enumerate() {
            let want = (vals[b * 15 + i] * 255.0) as u8;
            assert_eq!(px.0, [want; 3]);
        }
    }
}

/// The composited RGB frames and durations of an animated WebP, with libwebp's own
/// animation decoder (the one Pillow uses).
fn webp_frames(bytes: &[u8]) -> Vec<(Vec<u8>, u32)> {
    use libwebp_sys as w;
    let mut out = Vec::new();
    // SAFETY: the decoder reads `bytes` (alive for the call) and hands out frame buffers
    // that stay valid until the next GetNext / Delete; each is copied at once.
    unsafe {
        let mut opts = std::mem::MaybeUninit::<w::WebPAnimDecoderOptions>::uninit();
        let abi = w::WEBP_DEMUX_ABI_VERSION as i32;
        assert!(w::WebPAnimDecoderOptionsInitInternal(opts.as_mut_ptr(), abi) != 0);
        let mut opts = opts.assume_init();
        opts.color_mode = w::WEBP_CSP_MODE::MODE_RGBA;
        let data = w::WebPData {
            bytes: bytes.as_ptr(),
            size: bytes.len(),
        };
        let dec = w::WebPAnimDecoderNewInternal(&data, &opts, abi);
        assert!(!dec.is_null(), "not an animated WebP");
        let mut info = std::mem::MaybeUninit::<w::WebPAnimInfo>::uninit();
        assert!(w::WebPAnimDecoderGetInfo(dec, info.as_mut_ptr()) != 0);
        let info = info.assume_init();
        let n = (info.canvas_width * info.canvas_height) as usize;
        let mut last = 0;
        while w::WebPAnimDecoderHasMoreFrames(dec) != 0 {
            let mut buf: *mut u8 = std::ptr::null_mut();
            let mut ts = 0;
            assert!(w::WebPAnimDecoderGetNext(dec, &mut buf, &mut ts) != 0);
            let rgba = std::slice::from_raw_parts(buf, n * 4);
            let rgb: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            out.push((rgb, (ts - last) as u32));
            last = ts;
        }
        w::WebPAnimDecoderDelete(dec);
    }
    out
}

fn frames_of(bytes: &[u8], webp: bool) -> Vec<(Vec<u8>, u32)> {
    if webp {
        return webp_frames(bytes);
    }
    let cursor = std::io::Cursor::new(bytes);
    let frames = {
        image::codecs::png::PngDecoder::new(cursor)
            .unwrap()
            .apng()
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap()
    };
    frames
        .into_iter()
        .map(|f| {
            let (n, d) = f.delay().numer_denom_ms();
            let rgb = image::DynamicImage::ImageRgba8(f.into_buffer())
                .to_rgb8()
                .into_raw();
            (rgb, n / d)
        })
        .collect()
}

/// The PNG's `comf` chunks as (keyword, text).
fn comf_chunks(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let ty = &bytes[i + 4..i + 8];
        let data = &bytes[i + 8..i + 8 + len];
        if ty == b"comf" {
            let z = data.iter().position(|b| *b == 0).unwrap();
            out.push((
                String::from_utf8(data[..z].to_vec()).unwrap(),
                String::from_utf8(data[z + 1..].to_vec()).unwrap(),
            ));
        }
        i += 12 + len;
    }
    out
}

#[test]
fn animated_savers_decode_to_what_comfyui_writes() {
    let (g, meta) = load("animated_save_golden.safetensors");
    let input = &g["input"];
    let prompt = r#"{"1": {"class_type": "SaveAnimatedPNG", "inputs": {"fps": 7.0}}}"#;
    for (case, class, fps, extra) in [
        (
            "png",
            "SaveAnimatedPNG",
            7.0,
            vec![("compress_level", Value::Int(4))],
        ),
        (
            "webp_lossless",
            "SaveAnimatedWEBP",
            7.0,
            vec![
                ("lossless", Value::Bool(true)),
                ("quality", Value::Int(80)),
                ("method", Value::String("default".into())),
            ],
        ),
        (
            "webp_lossy",
            "SaveAnimatedWEBP",
            2.5,
            vec![
                ("lossless", Value::Bool(false)),
                ("quality", Value::Int(90)),
                ("method", Value::String("fastest".into())),
            ],
        ),
    ] {
        let (_d, mut h) = harness();
        h.set_prompt(parse_workflow(prompt).unwrap());
        h.extra_pnginfo = Some(serde_json::json!({"workflow": {"nodes": []}, "note": "x"}));
        let mut inputs = vec![
            ("images", img(input)),
            ("filename_prefix", Value::String("anim".into())),
            ("fps", Value::Float(fps)),
        ];
        inputs.extend(extra);
        let out = h.run(class, inputs).unwrap();
        let want: Json = serde_json::from_str(&meta[case]).unwrap();
        assert_eq!(Json::Object(out.ui.unwrap()), want["ui"], "{case} ui");
        let name = want["ui"]["images"][0]["filename"].as_str().unwrap();
        let bytes = std::fs::read(h.env.paths.output.join(name)).unwrap();
        let webp = case != "png";
        let ours = frames_of(&bytes, webp);
        let frames = &g[&format!("{case}/frames")];
        let n = want["n"].as_u64().unwrap() as usize;
        assert_eq!(
            ours.len(),
            n,
            "{case}: frame count (identical frames merged)"
        );
        let durations: Vec<u32> = want["durations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap() as u32)
            .collect();
        for (k, (rgb, ms)) in ours.iter().enumerate() {
            assert_eq!(*ms, durations[k], "{case}: frame {k} duration");
            let theirs: Vec<u8> = frames
                .get(k)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| *v as u8)
                .collect();
            if case == "webp_lossy" {
                // lossy: both near the input, not equal to each other's encoder
                let max = rgb
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap();
                assert!(max <= 40, "{case}: frame {k} differs by {max}");
            } else {
                assert_eq!(rgb, &theirs, "{case}: frame {k} pixels");
            }
        }
        if case == "png" {
            let chunks = comf_chunks(&bytes);
            assert_eq!(
                chunks,
                vec![
                    (
                        "prompt".to_string(),
                        r#"{"1": {"inputs": {"fps": 7.0}, "class_type": "SaveAnimatedPNG"}}"#
                            .to_string()
                    ),
                    ("workflow".to_string(), r#"{"nodes": []}"#.to_string()),
                    ("note".to_string(), r#""x""#.to_string()),
                ]
            );
        } else {
            let exif = want["exif"].as_object().unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for v in exif.values() {
                assert!(text.contains(v.as_str().unwrap()), "{case}: EXIF lacks {v}");
            }
            // comfyrs' own reader (as the frontend does) finds the prompt in the EXIF block
            let found = comfyrs::workflow::source::detect(&bytes).unwrap();
            assert_eq!(
                found,
                comfyrs::workflow::source::Found::Api(serde_json::from_str(prompt).unwrap()),
                "{case}"
            );
        }
    }
}

#[test]
fn object_info_matches_comfyui() {
    let want: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/object_info_model_merge.json")).unwrap(),
    )
    .unwrap();
    let (_d, h) = harness();
    for class in [
        "ImageRGBToYUV",
        "ImageYUVToRGB",
        "MaskPreview",
        "SaveAnimatedPNG",
        "SaveAnimatedWEBP",
    ] {
        let ours = h
            .object_info(class)
            .unwrap_or_else(|| panic!("{class} not registered"));
        assert_eq!(ours, want[class], "{class}");
    }
}
