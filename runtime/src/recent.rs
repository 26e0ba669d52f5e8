//! [`Recent`]: a map that keeps only its most recently inserted keys.
//!
//! Used wherever peers choose the keys (job IDs in metrics, batch identifiers for
//! attempt counts), so that memory stays bounded whatever they send.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `capacity` entries; inserting beyond it evicts the oldest.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    capacity: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Recent { capacity: capacity.max(1), map: HashMap::new(), order: VecDeque::new() }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key)
    }

    /// Inserts a new key (not present), returning the entry evicted to make room.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let evicted = if self.order.len() >= self.capacity {
            self.order.pop_front().and_then(|old| self.map.remove(&old).map(|v| (old, v)))
        } else {
            None
        };
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_key_goes_first() {
        let mut recent = Recent::new(2);
        assert_eq!(recent.insert("a", 1), None);
        assert_eq!(recent.insert("b", 2), None);
        *recent.get_mut("a").unwrap() += 10;
        assert_eq!(recent.insert("c", 3), Some(("a", 11)));
        assert!(recent.get_mut("a").is_none());
        assert_eq!(recent.get_mut("c"), Some(&mut 3));
    }
}
