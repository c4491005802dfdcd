//! SaveImage / PreviewImage / LoadImage / LoadImageMask: files, metadata, validation, runs.

use candle_core::{Device, Tensor};
use comfyrs::env::{Environment, Paths};
use comfyrs::exec::{Executor, ExecutorConfig, Interrupt, NoEvents, RunStatus};
use comfyrs::node::{Fingerprint, Inputs, LiteralInputs, Registry, Value};
use comfyrs::nodes::image_io::{
    decode_image, get_save_image_path, load_image_tensors, mask_from_channel, save_images,
    tensor_to_images8,
};
use comfyrs::prompt::prepare;
use comfyrs::workflow::{parse_workflow, Overrides};
use serde_json::{json, Value as Json};
use std::path::Path;
use std::sync::Arc;

fn setup() -> (tempfile::TempDir, Environment) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    for d in [&paths.input, &paths.output, &paths.temp] {
        std::fs::create_dir_all(d).unwrap();
    }
    (dir, Environment::new(paths))
}

/// Writes an RGBA PNG (w x h) with distinct pixel values; returns the raw RGBA bytes.
fn write_rgba_png(path: &Path, w: u32, h: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let i = i as u8;
            [
                i.wrapping_mul(7),
                i.wrapping_mul(13),
                255 - i,
                i.wrapping_mul(31),
            ]
        })
        .collect();
    image::save_buffer(path, &data, w, h, image::ColorType::Rgba8).unwrap();
    data
}

fn text_chunks(path: &Path) -> Vec<(String, String)> {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    reader.finish().unwrap();
    reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn counter_with_gaps_and_subfolders() {
    let (_d, env) = setup();
    let out = &env.paths.output;
    for f in [
        "ComfyUI_00001_.png",
        "ComfyUI_00005_.png",
        "ComfyUI_00002_.png",
        "ComfyUI_extra.png",
        "ComfyUIx_00100_.png",
    ] {
        std::fs::write(out.join(f), b"x").unwrap();
    }
    let sp = get_save_image_path("ComfyUI", out, 8, 8).unwrap();
    assert_eq!(sp.counter, 6);
    assert_eq!(sp.subfolder, "");
    assert_eq!(sp.filename, "ComfyUI");

    // A subfolder that does not exist yet is created and starts at 1.
    let sp = get_save_image_path("portraits/2024/cat", out, 8, 8).unwrap();
    assert_eq!(sp.counter, 1);
    assert_eq!(sp.subfolder, "portraits/2024");
    assert_eq!(sp.filename, "cat");
    assert!(out.join("portraits/2024").is_dir());
    std::fs::write(out.join("portraits/2024/cat_00009_.png"), b"x").unwrap();
    let sp = get_save_image_path("portraits//2024/./cat", out, 8, 8).unwrap();
    assert_eq!(sp.counter, 10);
    assert_eq!(sp.subfolder, "portraits/2024");

    // Variables.
    let sp = get_save_image_path("img_%width%x%height%", out, 640, 480).unwrap();
    assert_eq!(sp.filename, "img_640x480");

    // Escapes are refused with ComfyUI's message.
    for bad in ["../evil", "/tmp/evil", "a/../../evil"] {
        let e = get_save_image_path(bad, out, 8, 8).unwrap_err().to_string();
        assert!(
            e.contains("Saving image outside the output folder is not allowed."),
            "{bad}: {e}"
        );
    }
    // Going up and back down inside the folder is fine.
    let sp = get_save_image_path("a/../b/c", out, 8, 8).unwrap();
    assert_eq!(sp.subfolder, "b");
}

#[test]
fn save_images_writes_files_metadata_and_ui() {
    let (_d, env) = setup();
    let img = Tensor::from_vec(
        vec![
            0.0f32, 0.5, 1.0, 0.999, 0.25, 2.0, -1.0, 0.1, 0.2, 0.3, 0.4, 0.6,
        ],
        (2, 1, 2, 3),
        &Device::Cpu,
    )
    .unwrap();
    let prompt =
        json!({"1": {"class_type": "X", "inputs": {"text": "café \"q\"", "f": 1.0, "n": 3}}});
    let extra = json!({"workflow": {"nodes": [], "é": true}, "custom": "v"});
    let ui = save_images(
        &img,
        "run/%batch_num%-pic",
        &env.paths.output,
        "output",
        4,
        Some(&prompt),
        Some(&extra),
    )
    .unwrap();
    assert_eq!(
        Json::Array(ui),
        json!([
            {"filename": "0-pic_00001_.png", "subfolder": "run", "type": "output"},
            {"filename": "1-pic_00002_.png", "subfolder": "run", "type": "output"}
        ])
    );
    let f = env.paths.output.join("run/0-pic_00001_.png");
    assert_eq!(
        text_chunks(&f),
        vec![
            (
                "prompt".to_string(),
                r#"{"1": {"class_type": "X", "inputs": {"text": "caf\u00e9 \"q\"", "f": 1.0, "n": 3}}}"#
                    .to_string()
            ),
            (
                "workflow".to_string(),
                r#"{"nodes": [], "\u00e9": true}"#.to_string()
            ),
            ("custom".to_string(), r#""v""#.to_string()),
        ]
    );
    // Pixels: truncation of 255*x, clipped.
    let decoded = image::open(&f).unwrap().to_rgb8();
    assert_eq!(decoded.as_raw(), &vec![0u8, 127, 255, 254, 63, 255]);
    let decoded = image::open(env.paths.output.join("run/1-pic_00002_.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.as_raw(), &vec![0u8, 25, 51, 76, 102, 153]);
}

#[test]
fn pixel_round_trip_and_alpha_mask() {
    let (_d, env) = setup();
    let raw = write_rgba_png(&env.paths.input.join("in.png"), 5, 3);
    let decoded = decode_image(&std::fs::read(env.paths.input.join("in.png")).unwrap()).unwrap();
    let (image, mask) = load_image_tensors(&decoded).unwrap();
    assert_eq!(image.dims(), &[1, 3, 5, 3]);
    assert_eq!(mask.dims(), &[1, 3, 5]);
    let px = image.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let m = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, p) in raw.chunks(4).enumerate() {
        for c in 0..3 {
            assert_eq!(px[i * 3 + c], p[c] as f32 / 255.0);
        }
        assert_eq!(m[i], 1.0 - p[3] as f32 / 255.0);
    }
    // Save (RGB) and load back: identical 8-bit values.
    let ui = save_images(&image, "rt", &env.paths.output, "output", 4, None, None).unwrap();
    assert_eq!(ui[0]["filename"], "rt_00001_.png");
    let back =
        decode_image(&std::fs::read(env.paths.output.join("rt_00001_.png")).unwrap()).unwrap();
    assert!(!back.mask_alpha);
    let (image2, mask2) = load_image_tensors(&back).unwrap();
    assert_eq!(image2.flatten_all().unwrap().to_vec1::<f32>().unwrap(), px);
    // No alpha: zeros [1, 64, 64].
    assert_eq!(mask2.dims(), &[1, 64, 64]);
    assert_eq!(mask2.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let again = tensor_to_images8(&image2).unwrap();
    let rgb: Vec<u8> = raw.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert_eq!(again[0].data, rgb);

    // LoadImageMask channels.
    let red = mask_from_channel(&decoded, "red").unwrap();
    let alpha = mask_from_channel(&decoded, "alpha").unwrap();
    let r = red.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let a = alpha.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(red.dims(), &[1, 3, 5]);
    for (i, p) in raw.chunks(4).enumerate() {
        assert_eq!(r[i], p[0] as f32 / 255.0);
        assert_eq!(a[i], 1.0 - p[3] as f32 / 255.0);
    }
}

#[test]
fn sixteen_bit_and_grayscale_sources() {
    let (_d, env) = setup();
    let p = env.paths.input.join("g16.png");
    let vals: [u16; 4] = [0, 0x1234, 0x80ff, 0xffff];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
    image::save_buffer(&p, &bytes, 2, 2, image::ColorType::L16).unwrap();
    let d = decode_image(&std::fs::read(&p).unwrap()).unwrap();
    let (img, _) = load_image_tensors(&d).unwrap();
    let px = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expect: Vec<f32> = vals
        .iter()
        .flat_map(|v| [((v >> 8) as f32) / 255.0; 3])
        .collect();
    assert_eq!(px, expect);
}

#[test]
fn is_changed_follows_file_bytes() {
    let (_d, env) = setup();
    let reg = Registry::with_builtin_nodes();
    let node = &reg.get("LoadImage").unwrap().node;
    let p = env.paths.input.join("a.png");
    write_rgba_png(&p, 2, 2);
    let mut raw = Inputs::default();
    raw.insert("image", Value::String("a.png".into()));
    let inputs = LiteralInputs::ready(raw);
    let f1 = node.fingerprint(&env, &inputs);
    let Fingerprint::Token(t1) = &f1 else {
        panic!("{f1:?}")
    };
    use sha2::Digest;
    let expect: String = sha2::Sha256::digest(std::fs::read(&p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(t1, &expect);
    assert_eq!(node.fingerprint(&env, &inputs), f1);
    write_rgba_png(&p, 3, 2);
    assert_ne!(node.fingerprint(&env, &inputs), f1);
    // Annotated names resolve in their own folder.
    std::fs::copy(&p, env.paths.output.join("o.png")).unwrap();
    let mut raw = Inputs::default();
    raw.insert("image", Value::String("o.png [output]".into()));
    let ann = LiteralInputs::ready(raw);
    assert_eq!(
        node.fingerprint(&env, &ann),
        node.fingerprint(&env, &inputs)
    );
}

fn load_save_prompt(image: &str) -> String {
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out/res"}}
    })
    .to_string()
}

fn invalid_image_error(env: &Environment, image: &str, details_tail: &str) {
    let reg = Registry::with_builtin_nodes();
    let wf = parse_workflow(&load_save_prompt(image)).unwrap();
    let Err(err) = prepare(wf, &Overrides::default(), &reg, env, None) else {
        panic!("{image}: validation passed");
    };
    let body = err.to_comfy_json();
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let errs = &body["node_errors"]["1"]["errors"];
    assert_eq!(errs.as_array().unwrap().len(), 1, "{body:#}");
    let e = &errs[0];
    assert_eq!(e["type"], "custom_validation_failed");
    assert_eq!(e["message"], "Custom validation failed for node");
    assert_eq!(
        e["details"],
        format!("image - Invalid image file: {image}{details_tail}")
    );
    assert_eq!(e["extra_info"], json!({"input_name": "image"}));
    assert_eq!(body["node_errors"]["1"]["class_type"], "LoadImage");
    assert_eq!(body["node_errors"]["1"]["dependent_outputs"], json!(["2"]));
}

const ESCAPE_TAIL: &str =
    " (the path leaves its folder; absolute paths, '..' and symlinks to outside are refused)";

#[test]
fn validation_missing_and_traversal() {
    let (d, env) = setup();
    invalid_image_error(&env, "nope.png", "");
    invalid_image_error(&env, "nope.png [output]", "");
    // A file that exists outside input/ is still refused.
    std::fs::write(d.path().join("secret.png"), b"x").unwrap();
    invalid_image_error(&env, "../secret.png", ESCAPE_TAIL);
    let abs = d.path().join("secret.png").to_string_lossy().into_owned();
    invalid_image_error(&env, &abs, ESCAPE_TAIL);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            d.path().join("secret.png"),
            env.paths.input.join("link.png"),
        )
        .unwrap();
        invalid_image_error(&env, "link.png", ESCAPE_TAIL);
    }
    // Combo membership is not checked: a file in a subfolder is accepted.
    std::fs::create_dir_all(env.paths.input.join("sub")).unwrap();
    write_rgba_png(&env.paths.input.join("sub/x.png"), 2, 2);
    let reg = Registry::with_builtin_nodes();
    let wf = parse_workflow(&load_save_prompt("sub/x.png")).unwrap();
    assert!(prepare(wf, &Overrides::default(), &reg, &env, None).is_ok());
}

#[test]
fn load_image_combo_lists_top_level_images() {
    let (_d, env) = setup();
    for f in ["b.png", "a.JPG", "notes.txt", "c.webp"] {
        std::fs::write(env.paths.input.join(f), b"x").unwrap();
    }
    std::fs::create_dir_all(env.paths.input.join("sub")).unwrap();
    std::fs::write(env.paths.input.join("sub/d.png"), b"x").unwrap();
    let reg = Registry::with_builtin_nodes();
    let info = reg.schema("LoadImage").unwrap().object_info(&env);
    assert_eq!(
        info["input"]["required"]["image"],
        json!([["a.JPG", "b.png", "c.webp"], {"image_upload": true}])
    );
    assert_eq!(info["output"], json!(["IMAGE", "MASK"]));
    let info = reg.schema("LoadImageMask").unwrap().object_info(&env);
    assert_eq!(
        info["input"]["required"]["image"],
        json!([["a.JPG", "b.png", "c.webp", "notes.txt"], {"image_upload": true}])
    );
    assert_eq!(
        info["input"]["required"]["channel"],
        json!([["alpha", "red", "green", "blue"]])
    );
    assert_eq!(info["category"], "mask");
    assert_eq!(info["display_name"], "Load Image (as Mask)");
}

#[test]
fn save_image_object_info() {
    let (_d, env) = setup();
    let reg = Registry::with_builtin_nodes();
    let info = reg.schema("SaveImage").unwrap().object_info(&env);
    assert_eq!(
        info,
        json!({
            "input": {
                "required": {
                    "images": ["IMAGE", {"tooltip": "The images to save."}],
                    "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}]
                },
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
            },
            "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
            "output": [],
            "output_is_list": [],
            "output_name": [],
            "name": "SaveImage",
            "display_name": "Save Image",
            "description": "Saves the input images to your ComfyUI output directory.",
            "python_module": "nodes",
            "category": "image",
            "output_node": true
        })
    );
    let info = reg.schema("PreviewImage").unwrap().object_info(&env);
    assert_eq!(info["input"]["required"], json!({"images": ["IMAGE"]}));
    assert_eq!(info["output_node"], true);
    assert_eq!(info["display_name"], "Preview Image");
}

#[test]
fn end_to_end_load_save_preview_and_cache() {
    let (_d, env) = setup();
    let raw = write_rgba_png(&env.paths.input.join("src.png"), 4, 4);
    let reg = Arc::new(Registry::with_builtin_nodes());
    let env = Arc::new(env);
    let exec = Executor::new(reg.clone(), env.clone(), ExecutorConfig::default());
    let text = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "e2e/res"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    })
    .to_string();
    let extra = json!({"workflow": {"id": "w"}});
    let run = |n: u32| {
        let wf = parse_workflow(&text).unwrap();
        let valid = prepare(wf, &Overrides::default(), &reg, &env, None).unwrap();
        let out = exec.run(
            &format!("p{n}"),
            &valid,
            Some(&extra),
            &Interrupt::new(),
            &NoEvents,
        );
        assert_eq!(out.status, RunStatus::Success, "{:?}", out.status);
        (out, valid.prompt.into_json())
    };
    let (out, prompt) = run(1);
    assert_eq!(
        out.outputs["2"],
        json!({"images": [{"filename": "res_00001_.png", "subfolder": "e2e", "type": "output"}]})
    );
    let saved = env.paths.output.join("e2e/res_00001_.png");
    let rgb = image::open(&saved).unwrap().to_rgb8().into_raw();
    let expect: Vec<u8> = raw.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    assert_eq!(rgb, expect);
    let chunks = text_chunks(&saved);
    assert_eq!(chunks[0].0, "prompt");
    assert_eq!(serde_json::from_str::<Json>(&chunks[0].1).unwrap(), prompt);
    assert_eq!(chunks[1], ("workflow".into(), r#"{"id": "w"}"#.into()));

    let preview = out.outputs["3"]["images"][0].clone();
    assert_eq!(preview["type"], "temp");
    assert_eq!(preview["subfolder"], "");
    let name = preview["filename"].as_str().unwrap().to_string();
    assert!(name.starts_with("ComfyUI_temp_") && name.ends_with("_00001_.png"));
    assert_eq!(name.len(), "ComfyUI_temp_abcde_00001_.png".len());
    assert!(env.paths.temp.join(&name).is_file());

    // Same file: everything cached. Changed bytes: LoadImage runs again, and the prefix
    // suffix of PreviewImage stays the same (instance state).
    let (out2, _) = run(2);
    assert!(out2.executed.is_empty(), "{:?}", out2.executed);
    write_rgba_png(&env.paths.input.join("src.png"), 4, 5);
    let (out3, _) = run(3);
    assert!(out3.executed.contains(&"1".to_string()));
    assert_eq!(out3.outputs["2"]["images"][0]["filename"], "res_00002_.png");
    let name3 = out3.outputs["3"]["images"][0]["filename"].as_str().unwrap();
    assert_eq!(&name3[..18], &name[..18]);
    assert!(name3.ends_with("_00002_.png"));
    assert_eq!(
        listing(&env.paths.output.join("e2e")),
        vec!["res_00001_.png", "res_00002_.png"]
    );
}

/// Writes an 8-bit RGB PNG with an optional raw eXIf chunk and optional extra APNG frames.
fn write_png_raw(path: &Path, w: u32, h: u32, frames: &[Vec<u8>], exif: Option<&[u8]>) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if frames.len() > 1 {
        enc.set_animated(frames.len() as u32, 0).unwrap();
    }
    let mut wr = enc.write_header().unwrap();
    if let Some(e) = exif {
        wr.write_chunk(png::chunk::ChunkType(*b"eXIf"), e).unwrap();
    }
    for f in frames {
        wr.write_image_data(f).unwrap();
    }
    wr.finish().unwrap();
}

#[test]
fn exif_orientation_is_applied() {
    let (_d, env) = setup();
    // Big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
    let exif: Vec<u8> = [
        b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
        &[0, 1],
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    // 3 x 2, pixel (x, y) has red = 10 * y + x.
    let px: Vec<u8> = (0..2)
        .flat_map(|y| (0..3).flat_map(move |x| [10 * y + x, 0, 0]))
        .collect();
    let p = env.paths.input.join("rot.png");
    write_png_raw(&p, 3, 2, &[px], Some(&exif));
    let d = decode_image(&std::fs::read(&p).unwrap()).unwrap();
    let (img, _) = load_image_tensors(&d).unwrap();
    // Orientation 6: rotate 90° clockwise -> 2 wide, 3 high; the old top-left is top-right.
    assert_eq!(img.dims(), &[1, 3, 2, 3]);
    let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let red = |x: usize, y: usize| (v[(y * 2 + x) * 3] * 255.0).round() as u8;
    assert_eq!(red(1, 0), 0);
    assert_eq!(red(0, 0), 10);
    assert_eq!(red(1, 2), 2);
    assert_eq!(red(0, 2), 12);
}

#[test]
fn apng_frames_become_a_batch() {
    let (_d, env) = setup();
    let f1 = vec![10u8; 2 * 2 * 3];
    let f2 = vec![200u8; 2 * 2 * 3];
    let p = env.paths.input.join("anim.png");
    write_png_raw(&p, 2, 2, &[f1, f2], None);
    let d = decode_image(&std::fs::read(&p).unwrap()).unwrap();
    let (img, mask) = load_image_tensors(&d).unwrap();
    assert_eq!(img.dims(), &[2, 2, 2, 3]);
    assert_eq!(mask.dims(), &[2, 64, 64]);
    let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v[0], 10.0 / 255.0);
    assert_eq!(v[12], 200.0 / 255.0);
}

#[test]
fn transparency_chunks_like_pillow() {
    let (_d, env) = setup();
    let write =
        |name: &str, color: png::ColorType, data: &[u8], plte: Option<&[u8]>, trns: &[u8]| {
            let p = env.paths.input.join(name);
            let file = std::fs::File::create(&p).unwrap();
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 2, 1);
            enc.set_color(color);
            enc.set_depth(png::BitDepth::Eight);
            if let Some(pl) = plte {
                enc.set_palette(pl.to_vec());
            }
            enc.set_trns(trns.to_vec());
            let mut w = enc.write_header().unwrap();
            w.write_image_data(data).unwrap();
            w.finish().unwrap();
            decode_image(&std::fs::read(&p).unwrap()).unwrap()
        };
    // Palette with tRNS: LoadImage's mask comes from it.
    let pal = write(
        "pal.png",
        png::ColorType::Indexed,
        &[0, 1],
        Some(&[255, 0, 0, 0, 255, 0]),
        &[0, 255],
    );
    let (img, mask) = load_image_tensors(&pal).unwrap();
    assert_eq!(
        img.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        mask.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 0.0]
    );
    // RGB with tRNS: Pillow keeps mode RGB, so LoadImage gives the empty 64x64 mask ...
    let rgb = write(
        "trns.png",
        png::ColorType::Rgb,
        &[1, 2, 3, 9, 9, 9],
        None,
        &[0, 1, 0, 2, 0, 3],
    );
    let (_, mask) = load_image_tensors(&rgb).unwrap();
    assert_eq!(mask.dims(), &[1, 64, 64]);
    // ... while LoadImageMask's convert("RGBA") honours it.
    let a = mask_from_channel(&rgb, "alpha").unwrap();
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0, 0.0]
    );
}
