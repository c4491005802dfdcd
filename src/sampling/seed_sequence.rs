//! numpy's `SeedSequence` (entropy pool hashing), as torchsde uses it to derive
//! per-node seeds of its Brownian tree (numerics.md §2.4).

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// A non-negative Python int as numpy's little-endian u32 words (0 gives `[0]`).
pub fn int_to_words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(n as u32);
        n >>= 32;
    }
    out
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// `np.random.SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)`.
#[derive(Clone, Debug)]
pub struct SeedSequence {
    pool: Vec<u32>,
}

impl SeedSequence {
    /// `entropy` is a non-negative integer; `spawn_key` a tuple of non-negative integers.
    pub fn new(entropy: u128, spawn_key: &[u128], pool_size: usize) -> Self {
        let mut run = int_to_words(entropy);
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&k| int_to_words(k)).collect();
        if !spawn.is_empty() && run.len() < pool_size {
            run.resize(pool_size, 0);
        }
        run.extend_from_slice(&spawn);
        let entropy = run;

        let mut pool = vec![0u32; pool_size];
        let mut hc = INIT_A;
        for (i, p) in pool.iter_mut().enumerate() {
            *p = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hc);
        }
        for i_src in 0..pool_size {
            for i_dst in 0..pool_size {
                if i_src != i_dst {
                    let h = hashmix(pool[i_src], &mut hc);
                    pool[i_dst] = mix(pool[i_dst], h);
                }
            }
        }
        for &e in entropy.iter().skip(pool_size) {
            for p in pool.iter_mut() {
                let h = hashmix(e, &mut hc);
                *p = mix(*p, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n_words)` as uint32 words.
    pub fn generate_state(&self, n_words: usize) -> Vec<u32> {
        let mut hc = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut v = self.pool[i % self.pool.len()];
                v ^= hc;
                hc = hc.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hc);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }
}
