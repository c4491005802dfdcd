//! The hasher for maps keyed by user-supplied strings on the hot path (workflow node ids, class
//! names). SipHash, std's default, costs ~250 instructions per short key; foldhash costs a
//! fraction of that. Its seed comes from std's `RandomState` (the OS's randomness) once per
//! process, so ids chosen by a client cannot be aimed at collisions.

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// A randomly seeded foldhash [`BuildHasher`].
#[derive(Clone, Debug)]
pub struct FastRandomState(SeedableRandomState);

/// A random `u64` from std's OS-seeded SipHash keys.
fn os_random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0x0063_6f6d_6679_7273_u64)
}

impl Default for FastRandomState {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(os_random_u64()));
        FastRandomState(SeedableRandomState::with_seed(os_random_u64(), shared))
    }
}

impl BuildHasher for FastRandomState {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// An insertion-ordered map keyed by user-supplied strings.
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, FastRandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_with_separate_states_agree_on_contents_not_on_hashes() {
        let (a, b) = (FastRandomState::default(), FastRandomState::default());
        assert_eq!(a.hash_one("node"), a.hash_one("node"));
        assert_ne!(a.hash_one("node"), b.hash_one("node"));
        let mut m: FastIndexMap<String, u32> = FastIndexMap::default();
        m.insert("6".into(), 1);
        m.insert("3".into(), 2);
        assert_eq!(m.get("3"), Some(&2));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["6", "3"]);
    }
}
