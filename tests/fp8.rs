//! fp8 conversions against goldens made by torch 2.8 (scripts/goldens/gen_fp8_goldens.py).

use comfyrs::models::fp8::{decode, encode, encode_f16, Fp8Kind};
use serde_json::Value;

fn goldens() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fp8/fp8_goldens.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

const KINDS: [(&str, Fp8Kind); 2] = [("e4m3fn", Fp8Kind::E4m3fn), ("e5m2", Fp8Kind::E5m2)];

#[test]
fn decode_tables_match_torch_bit_for_bit() {
    let g = goldens();
    for (name, kind) in KINDS {
        let want = u64s(&g[name]["decode_f32_bits"]);
        assert_eq!(want.len(), 256);
        for (b, w) in want.iter().enumerate() {
            let got = decode(kind, b as u8);
            if got.is_nan() {
                assert!(f32::from_bits(*w as u32).is_nan(), "{name} byte {b:#04x}");
            } else {
                assert_eq!(got.to_bits() as u64, *w, "{name} byte {b:#04x}: {got}");
            }
        }
    }
}

#[test]
fn encode_f32_edges_and_random_match_torch() {
    let g = goldens();
    let inputs = u64s(&g["inputs_f32_bits"]);
    assert!(inputs.len() > 6000);
    for (name, kind) in KINDS {
        let want = u64s(&g[name]["encode_bytes"]);
        assert_eq!(want.len(), inputs.len());
        for (i, (x, w)) in inputs.iter().zip(&want).enumerate() {
            let f = f32::from_bits(*x as u32);
            assert_eq!(
                encode(kind, f) as u64,
                *w,
                "{name} input #{i} {f:e} ({x:#010x})"
            );
        }
    }
}

#[test]
fn encode_every_f16_matches_torch() {
    let g = goldens();
    for (name, kind) in KINDS {
        let want = u64s(&g[name]["encode_f16_all"]);
        assert_eq!(want.len(), 65536);
        for (bits, w) in want.iter().enumerate() {
            let h = half::f16::from_bits(bits as u16);
            assert_eq!(
                encode_f16(kind, h) as u64,
                *w,
                "{name} f16 {bits:#06x} ({h})"
            );
        }
    }
}

#[test]
fn e4m3fn_saturates_to_nan_not_448() {
    // the documented torch rule, spelled out (also covered by the goldens above)
    assert_eq!(encode(Fp8Kind::E4m3fn, 464.0), 0x7E); // tie → even (448)
    assert_eq!(encode(Fp8Kind::E4m3fn, 480.0), 0x7F);
    assert_eq!(encode(Fp8Kind::E4m3fn, -f32::INFINITY), 0xFF);
    assert_eq!(encode(Fp8Kind::E5m2, f32::INFINITY), 0x7C);
}

#[test]
fn fp8_safetensors_load_widens_exactly() {
    use safetensors::tensor::{serialize_to_file, Dtype, TensorView};
    let dir = std::env::temp_dir().join(format!("comfyrs_fp8_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let bytes: Vec<u8> = (0u8..=255).collect();
    let views = vec![
        (
            "a",
            TensorView::new(Dtype::F8_E4M3, vec![16, 16], &bytes).unwrap(),
        ),
        (
            "b",
            TensorView::new(Dtype::F8_E5M2, vec![256], &bytes).unwrap(),
        ),
    ];
    serialize_to_file(views, None, &path).unwrap();
    let g = goldens();
    for dtype in [
        candle_core::DType::F32,
        candle_core::DType::F16,
        candle_core::DType::BF16,
    ] {
        let w = comfyrs::models::checkpoint::load_safetensors_as(
            &path,
            &candle_core::Device::Cpu,
            &|_| dtype,
        )
        .unwrap();
        for (key, name) in [("a", "e4m3fn"), ("b", "e5m2")] {
            let t = &w[key];
            // Kept in memory as stored (widened per operation by the layers): e4m3fn as
            // candle's F8E4M3, e5m2 exactly as f16 (its top byte).
            let kept = if name == "e4m3fn" {
                candle_core::DType::F8E4M3
            } else {
                candle_core::DType::F16
            };
            assert_eq!(t.dtype(), kept, "{name} for compute {dtype:?}");
            let got: Vec<f32> = t
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want = u64s(&g[name]["decode_f32_bits"]);
            for (b, (x, wb)) in got.iter().zip(&want).enumerate() {
                let wf = f32::from_bits(*wb as u32);
                if wf.is_nan() {
                    assert!(x.is_nan(), "{name} {dtype:?} byte {b}");
                } else {
                    assert_eq!(x.to_bits(), wf.to_bits(), "{name} {dtype:?} byte {b}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
