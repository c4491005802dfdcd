//! `comfyrs parity` on the tiny fixture: a run compared with a reference made by an earlier
//! run passes (identical), and a reference one pixel off by 5 levels fails the bar (exit 1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn comfyrs(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comfyrs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs the binary")
}

#[test]
fn parity_passes_against_itself_and_fails_past_the_bar() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let ckpt = root.join("fixtures/models/checkpoints/tiny_sd15.safetensors");
    let wf = root.join("workflows/tiny_txt2img.json");
    let dir = tempfile::tempdir().unwrap();
    let refs = dir.path().join("refs");
    let out = dir.path().join("out");
    let args = |refs: &Path, out: &Path| -> Vec<String> {
        vec![
            "parity".into(),
            "--checkpoint".into(),
            ckpt.to_string_lossy().into(),
            "--workflow".into(),
            wf.to_string_lossy().into(),
            "--reference-dir".into(),
            refs.to_string_lossy().into(),
            "--output-dir".into(),
            out.to_string_lossy().into(),
        ]
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        comfyrs(&a, dir.path())
    };

    // No reference yet: the case cannot be compared, exit 1 with the file named.
    let o = run(args(&refs, &out));
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("tiny_txt2img"), "{stdout}");
    assert!(stdout.contains("ERROR"), "{stdout}");
    assert!(stdout.contains("refs/tiny_txt2img.png"), "{stdout}");

    // The image of that run becomes the reference: identical, PASS.
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::copy(
        out.join("tiny_txt2img_00001_.png"),
        refs.join("tiny_txt2img.png"),
    )
    .unwrap();
    let o = run(args(&refs, &out));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("64x64"), "{stdout}");
    assert!(stdout.contains("mean|Δ| 0.0000"), "{stdout}");
    assert!(stdout.contains("max|Δ|   0"), "{stdout}");
    assert!(stdout.contains("inf (identical)"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("1 of 1 case(s) passed"), "{stdout}");

    // One channel of one pixel 5 levels off: max |Δ| 5 > 4, FAIL, exit 1.
    let mut img = image::open(refs.join("tiny_txt2img.png"))
        .unwrap()
        .to_rgb8();
    let p = img.get_pixel_mut(3, 7);
    p[1] = if p[1] >= 5 { p[1] - 5 } else { p[1] + 5 };
    img.save(refs.join("tiny_txt2img.png")).unwrap();
    let o = run(args(&refs, &out));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("max|Δ|   5"), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("0 of 1 case(s) passed"), "{stdout}");
    // 5 levels over 64·64·3 values.
    let mean = 5.0 / (64.0 * 64.0 * 3.0);
    assert!(stdout.contains(&format!("mean|Δ| {mean:.4}")), "{stdout}");
}
