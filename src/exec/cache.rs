//! The output cache: node outputs by signature, kept across runs in one process.
//!
//! Policies follow ComfyUI's (spec §9.11): `classic` keeps only entries the newest prompt
//! uses; `lru` keeps entries across prompts up to an entry count and a byte budget, evicting
//! the least recently used; `none` keeps nothing between runs.

use crate::graph::Signature;
use crate::node::Value;
use lru::LruCache;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::sync::Arc;

/// The values of every output slot of one node (each slot a list, as in ComfyUI).
pub type NodeValues = Vec<Vec<Value>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    Classic,
    Lru {
        max_entries: usize,
        max_bytes: usize,
    },
    None,
}

impl CachePolicy {
    /// Parses `classic`, `none`, `lru`, `lru:N` or `lru:N:BYTES` (BYTES may end in K/M/G).
    pub fn parse(s: &str) -> Result<CachePolicy, String> {
        let mut parts = s.split(':');
        match parts.next() {
            Some("classic") if parts.next().is_none() => Ok(CachePolicy::Classic),
            Some("none") if parts.next().is_none() => Ok(CachePolicy::None),
            Some("lru") => {
                let entries = match parts.next() {
                    Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("cache policy {s:?}: entry count must be a positive integer")
                    })?,
                    None => 10_000,
                };
                let bytes = match parts.next() {
                    Some(b) => parse_bytes(b).ok_or_else(|| {
                        format!("cache policy {s:?}: byte budget must be a number with an optional K, M or G suffix")
                    })?,
                    None => 8 << 30,
                };
                if parts.next().is_some() {
                    return Err(format!(
                        "cache policy {s:?}: expected lru[:ENTRIES[:BYTES]]"
                    ));
                }
                Ok(CachePolicy::Lru {
                    max_entries: entries,
                    max_bytes: bytes,
                })
            }
            _ => Err(format!(
                "unknown cache policy {s:?}: expected classic, lru[:ENTRIES[:BYTES]] or none"
            )),
        }
    }
}

fn parse_bytes(s: &str) -> Option<usize> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1usize << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

/// One cached node result.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub values: Arc<NodeValues>,
    /// The UI dict the node produced (replayed as `executed` for cached output nodes).
    pub ui: Option<Json>,
    pub bytes: usize,
}

impl CacheEntry {
    pub fn new(values: NodeValues, ui: Option<Json>) -> Self {
        let bytes = values.iter().flatten().map(Value::byte_size).sum::<usize>()
            + ui.as_ref().map_or(0, |u| u.to_string().len());
        CacheEntry {
            values: Arc::new(values),
            ui,
            bytes,
        }
    }
}

pub struct OutputCache {
    policy: CachePolicy,
    entries: LruCache<Signature, CacheEntry>,
    bytes: usize,
}

impl OutputCache {
    pub fn new(policy: CachePolicy) -> Self {
        OutputCache {
            policy,
            entries: LruCache::unbounded(),
            bytes: 0,
        }
    }

    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, sig: &Signature) -> bool {
        self.entries.contains(sig)
    }

    /// The entry, marked as recently used.
    pub fn get(&mut self, sig: &Signature) -> Option<CacheEntry> {
        self.entries.get(sig).cloned()
    }

    /// Called when a prompt starts, with the signatures it uses.
    pub fn begin_prompt(&mut self, used: &HashSet<Signature>) {
        match self.policy {
            CachePolicy::Classic => {
                let stale: Vec<Signature> = self
                    .entries
                    .iter()
                    .filter(|(k, _)| !used.contains(*k))
                    .map(|(k, _)| *k)
                    .collect();
                for k in stale {
                    self.remove(&k);
                }
            }
            CachePolicy::None => self.clear(),
            CachePolicy::Lru { .. } => {}
        }
    }

    pub fn insert(&mut self, sig: Signature, entry: CacheEntry) {
        if self.policy == CachePolicy::None {
            return;
        }
        self.bytes += entry.bytes;
        if let Some(old) = self.entries.put(sig, entry) {
            self.bytes -= old.bytes;
        }
        if let CachePolicy::Lru {
            max_entries,
            max_bytes,
        } = self.policy
        {
            while self.entries.len() > max_entries
                || (self.bytes > max_bytes && self.entries.len() > 1)
            {
                match self.entries.pop_lru() {
                    Some((_, old)) => self.bytes -= old.bytes,
                    None => break,
                }
            }
        }
    }

    fn remove(&mut self, sig: &Signature) {
        if let Some(old) = self.entries.pop(sig) {
            self.bytes -= old.bytes;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> CacheEntry {
        CacheEntry::new(vec![vec![Value::String("x".repeat(bytes))]], None)
    }

    #[test]
    fn lru_evicts_by_count_and_bytes() {
        let mut c = OutputCache::new(CachePolicy::Lru {
            max_entries: 2,
            max_bytes: 100,
        });
        c.insert([1; 32], entry(10));
        c.insert([2; 32], entry(10));
        c.get(&[1; 32]);
        c.insert([3; 32], entry(10));
        assert!(c.contains(&[1; 32]) && c.contains(&[3; 32]) && !c.contains(&[2; 32]));
        c.insert([4; 32], entry(95));
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 95);
    }

    #[test]
    fn classic_keeps_only_used() {
        let mut c = OutputCache::new(CachePolicy::Classic);
        c.insert([1; 32], entry(1));
        c.insert([2; 32], entry(1));
        c.begin_prompt(&HashSet::from([[2; 32]]));
        assert!(!c.contains(&[1; 32]) && c.contains(&[2; 32]));
    }

    #[test]
    fn policy_parsing() {
        assert_eq!(CachePolicy::parse("classic"), Ok(CachePolicy::Classic));
        assert_eq!(
            CachePolicy::parse("lru:5:1M"),
            Ok(CachePolicy::Lru {
                max_entries: 5,
                max_bytes: 1 << 20
            })
        );
        assert!(CachePolicy::parse("lru:0").is_err());
        assert!(CachePolicy::parse("fifo").is_err());
    }
}
