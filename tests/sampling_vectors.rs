//! Extra vectors made with the Python references in /work/shared/parity:
//! torch CPU randn (several seeds and sizes: <16, =16, tails), numpy SeedSequence,
//! the torchsde Brownian tree, and prepare_noise with batch_index.

use comfyrs::sampling::brownian::BrownianTree;
use comfyrs::sampling::noise::prepare_noise;
use comfyrs::sampling::rng::{torch_randn, TorchGenerator};
use comfyrs::sampling::seed_sequence::SeedSequence;
use serde_json::Value;

fn load(name: &str) -> Value {
    let p = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn hexes(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| u32::from_str_radix(h.as_str().unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn randn_vectors() {
    let cases = load("randn_vectors.json");
    for c in cases.as_array().unwrap() {
        let seed = c["seed"].as_u64().unwrap();
        let n = c["n"].as_u64().unwrap() as usize;
        let got: Vec<u32> = torch_randn(seed, &[n])
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, hexes(&c["hex"]), "seed {seed} n {n}");
    }
}

#[test]
fn seed_sequence_vectors() {
    for c in load("seed_sequence_vectors.json").as_array().unwrap() {
        let ent: u128 = c["entropy"].as_str().unwrap().parse().unwrap();
        let sk: Vec<u128> = c["spawn_key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
        let pool = c["pool"].as_u64().unwrap() as usize;
        let n = c["n"].as_u64().unwrap() as usize;
        let want: Vec<u32> = c["state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            SeedSequence::new(ent, &sk, pool).generate_state(n),
            want,
            "{c}"
        );
    }
}

#[test]
fn brownian_tree_vectors() {
    let cases = load("brownian_vectors.json");
    let mut tree: Option<(String, BrownianTree)> = None;
    for c in cases.as_array().unwrap() {
        let key = format!("{}{}{}{}", c["t0"], c["t1"], c["seed"], c["shape"]);
        if tree.as_ref().map(|t| &t.0) != Some(&key) {
            let numel = c["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .product();
            let seed: u128 = c["seed"].as_str().unwrap().parse().unwrap();
            tree = Some((
                key.clone(),
                BrownianTree::new(
                    c["t0"].as_f64().unwrap(),
                    c["t1"].as_f64().unwrap(),
                    numel,
                    seed,
                ),
            ));
        }
        let t = &mut tree.as_mut().unwrap().1;
        let got: Vec<u32> = t
            .increment(c["ta"].as_f64().unwrap(), c["tb"].as_f64().unwrap())
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, hexes(&c["hex"]), "query {} {}", c["ta"], c["tb"]);
    }
}

#[test]
fn prepare_noise_batch_index() {
    let shape = [2usize, 4, 3, 3]; // 36 per sample: tail rule per draw
    let plain = prepare_noise(&shape, 7, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(plain, torch_randn(7, &shape));
    let mut g = TorchGenerator::new(7);
    let n0 = g.randn(&[1, 4, 3, 3]);
    let _n1 = g.randn(&[1, 4, 3, 3]);
    let n2 = g.randn(&[1, 4, 3, 3]);
    let got = prepare_noise(&shape, 7, Some(&[2, 0, 2])).unwrap();
    assert_eq!(got.dims(), &[3, 4, 3, 3]);
    let v = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&v[..36], &n2[..]);
    assert_eq!(&v[36..72], &n0[..]);
    assert_eq!(&v[72..], &n2[..]);
    assert_ne!(&plain[36..], &n2[..36]);
}
