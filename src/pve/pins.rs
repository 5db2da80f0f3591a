//! Pinned clusters' certificate fingerprints: the configured ones (the trust anchors) and those learned from
//! `GET /nodes` while an anchored connection answers — and the book that keeps the learned ones across reloads
//! and, through the state directory, restarts.
//!
//! A learned pin is never trusted beyond the anchors that vouched for it: it is kept only while the cluster's
//! configured fingerprints are exactly those it was learned under, and a node's learned pin changes only when
//! `GET /nodes` (over a verified connection) reports another one — a certificate a node serves on its own is
//! never learned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::tls::format_fingerprint;
use crate::time::Timestamp;

/// A SHA-256 leaf-certificate fingerprint.
pub type Fingerprint = [u8; 32];

/// What a pinned cluster's client accepts; shared by the client's TLS verifier and its book.
pub type Pins = Arc<RwLock<PinSet>>;

/// The anchors and the learned pins of one cluster.
#[derive(Debug, Default)]
pub struct PinSet {
    anchors: BTreeSet<Fingerprint>,
    learned: BTreeMap<String, Learned>,
    /// Bumped on every change, shared with the book (which saves only when it moved).
    changes: Arc<AtomicU64>,
}

/// A node's fingerprint as learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    #[serde(with = "hex_fingerprint")]
    pub fingerprint: Fingerprint,
    pub learned_at: Timestamp,
    /// The endpoint whose `GET /nodes` reported it.
    pub via: String,
}

impl PinSet {
    /// Whether a served leaf certificate is accepted: an anchor, or a node's learned pin.
    pub fn accepts(&self, fingerprint: &Fingerprint) -> bool {
        self.anchors.contains(fingerprint) || self.learned.values().any(|l| l.fingerprint == *fingerprint)
    }

    /// Takes what `GET /nodes` reported (node → fingerprint, over a verified connection to `via`): a node's pin
    /// is added or replaced, a node no longer listed is forgotten, an anchored node needs none. Returns how many
    /// pins were added or replaced.
    pub fn learn(&mut self, reported: &[(String, Fingerprint)], via: &str, at: Timestamp) -> usize {
        let before = self.learned.len();
        self.learned.retain(|node, _| reported.iter().any(|(n, _)| n == node));
        let mut changed = usize::from(self.learned.len() != before);
        let mut added = 0;
        for (node, fp) in reported {
            if self.anchors.contains(fp) {
                changed += usize::from(self.learned.remove(node).is_some());
                continue;
            }
            if self.learned.get(node).is_some_and(|l| l.fingerprint == *fp) {
                continue;
            }
            if let Some(old) = self.learned.get(node) {
                tracing::info!(%node, old = %format_fingerprint(&old.fingerprint), new = %format_fingerprint(fp), %via, "a node's certificate changed; learned its new fingerprint through a verified connection");
            }
            self.learned.insert(node.clone(), Learned { fingerprint: *fp, learned_at: at, via: via.to_string() });
            added += 1;
        }
        if added + changed > 0 {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    /// How many pins were learned.
    pub fn learned_count(&self) -> usize {
        self.learned.len()
    }
}

/// The learned pins of every pinned cluster, kept across reloads; what the state directory saves.
#[derive(Debug, Default)]
pub struct PinBook {
    clusters: Mutex<HashMap<String, Pins>>,
    /// Restored from the state directory and not yet claimed by a cluster's client.
    restored: Mutex<HashMap<String, SavedCluster>>,
    changes: Arc<AtomicU64>,
}

/// What the state directory keeps of the book (the `data` of `pins.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPins {
    pub clusters: BTreeMap<String, SavedCluster>,
}

/// One cluster's learned pins and the anchors they were learned under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCluster {
    #[serde(with = "hex_fingerprints")]
    pub anchors: BTreeSet<Fingerprint>,
    pub learned: BTreeMap<String, Learned>,
}

impl PinBook {
    /// The pins of a pinned cluster whose anchors are `anchors`: the set it had (learned pins kept) when its
    /// anchors are the same, else a fresh one (learned pins dropped, with a log line saying why).
    pub fn pins_for(&self, cluster: &str, anchors: &[Fingerprint]) -> Pins {
        let anchors: BTreeSet<Fingerprint> = anchors.iter().copied().collect();
        let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pins) = clusters.get(cluster) {
            let same = pins.read().unwrap_or_else(PoisonError::into_inner).anchors == anchors;
            if same {
                return Arc::clone(pins);
            }
        }
        let restored = self.restored.lock().unwrap_or_else(PoisonError::into_inner).remove(cluster);
        let previous = clusters.get(cluster).map(|p| {
            let set = p.read().unwrap_or_else(PoisonError::into_inner);
            (set.anchors.clone(), set.learned.clone())
        });
        let previous = previous.or_else(|| restored.map(|s| (s.anchors, s.learned)));
        let learned = match previous {
            Some((before, learned)) if before == anchors => learned,
            Some((_, learned)) => {
                if !learned.is_empty() {
                    tracing::warn!(%cluster, dropped = learned.len(), "the cluster's pinned fingerprints changed: the node fingerprints learned under the old ones are no longer trusted, and are learned again through the new ones");
                }
                self.changes.fetch_add(1, Ordering::Relaxed);
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let pins = Arc::new(RwLock::new(PinSet { anchors, learned, changes: Arc::clone(&self.changes) }));
        clusters.insert(cluster.to_string(), Arc::clone(&pins));
        pins
    }

    /// Forgets the clusters not named (removed from the configuration, or no longer pinned).
    pub fn retain(&self, pinned: &[&str]) {
        let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        let before = clusters.len();
        clusters.retain(|name, _| pinned.contains(&name.as_str()));
        self.restored.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if clusters.len() != before {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A counter that moves whenever a learned pin is added, replaced or dropped.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The learned pins, to save. Restored ones not yet claimed are kept as they were.
    pub fn saved(&self) -> SavedPins {
        let mut saved = SavedPins::default();
        for (name, s) in self.restored.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            saved.clusters.insert(name.clone(), s.clone());
        }
        for (name, pins) in self.clusters.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let set = pins.read().unwrap_or_else(PoisonError::into_inner);
            if !set.learned.is_empty() {
                let cluster = SavedCluster { anchors: set.anchors.clone(), learned: set.learned.clone() };
                saved.clusters.insert(name.clone(), cluster);
            }
        }
        saved
    }

    /// Takes saved pins in before the first clients are built; each cluster claims its own when its anchors
    /// are still those they were learned under.
    pub fn restore(&self, saved: SavedPins) {
        *self.restored.lock().unwrap_or_else(PoisonError::into_inner) = saved.clusters.into_iter().collect();
    }
}

/// A fingerprint as `AA:BB:…` (what Proxmox shows and the configuration takes).
mod hex_fingerprint {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Fingerprint;

    pub(super) fn serialize<S: Serializer>(fp: &Fingerprint, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_fingerprint(fp))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(d)?;
        crate::names::parse_fingerprint(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a SHA-256 fingerprint")))
    }
}

/// A set of fingerprints as a list of `AA:BB:…`.
mod hex_fingerprints {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Fingerprint;

    pub(super) fn serialize<S: Serializer>(set: &BTreeSet<Fingerprint>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.iter().map(|fp| super::format_fingerprint(fp)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<Fingerprint>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                crate::names::parse_fingerprint(text)
                    .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a SHA-256 fingerprint")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        [b; 32]
    }

    fn at() -> Timestamp {
        Timestamp::from(std::time::SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn learned_pins_are_kept_while_the_anchors_stay_and_dropped_when_they_change() {
        let book = PinBook::default();
        let pins = book.pins_for("c", &[fp(1)]);
        let learned = pins.write().unwrap().learn(&[("a".into(), fp(1)), ("b".into(), fp(2))], "https://a", at());
        assert_eq!(learned, 1, "the anchored node needs no learned pin");
        assert!(pins.read().unwrap().accepts(&fp(2)));
        let moved = book.changes();

        let again = book.pins_for("c", &[fp(1)]);
        assert!(Arc::ptr_eq(&pins, &again), "a reload with the same anchors keeps the set");
        assert_eq!(book.changes(), moved);

        let changed = book.pins_for("c", &[fp(9)]);
        assert!(!changed.read().unwrap().accepts(&fp(2)), "a learned pin never outlives its anchors");
        assert!(changed.read().unwrap().accepts(&fp(9)) && !changed.read().unwrap().accepts(&fp(1)));
        assert!(book.changes() > moved);
    }

    #[test]
    fn a_node_is_re_learned_only_from_the_node_list_and_forgotten_when_it_leaves() {
        let book = PinBook::default();
        let pins = book.pins_for("c", &[fp(1)]);
        let mut set = pins.write().unwrap();
        set.learn(&[("b".into(), fp(2)), ("c".into(), fp(3))], "https://a", at());
        assert_eq!(set.learn(&[("b".into(), fp(4)), ("c".into(), fp(3))], "https://a", at()), 1);
        assert!(!set.accepts(&fp(2)), "the renewed certificate replaces the old pin");
        assert!(set.accepts(&fp(4)));
        assert_eq!(set.learn(&[("b".into(), fp(4))], "https://a", at()), 0);
        assert!(!set.accepts(&fp(3)), "a node gone from the list is forgotten");
        assert_eq!(set.learned_count(), 1);
    }

    #[test]
    fn saved_pins_come_back_only_under_the_same_anchors() {
        let book = PinBook::default();
        book.pins_for("same", &[fp(1)]).write().unwrap().learn(&[("b".into(), fp(2))], "https://a", at());
        book.pins_for("moved", &[fp(5)]).write().unwrap().learn(&[("b".into(), fp(6))], "https://a", at());
        let saved = book.saved();
        let text = serde_json::to_string(&saved).unwrap();
        let back: SavedPins = serde_json::from_str(&text).unwrap();
        assert_eq!(back, saved);

        let restarted = PinBook::default();
        restarted.restore(back);
        assert!(restarted.pins_for("same", &[fp(1)]).read().unwrap().accepts(&fp(2)));
        assert!(!restarted.pins_for("moved", &[fp(7)]).read().unwrap().accepts(&fp(6)));
        assert_eq!(restarted.saved().clusters.len(), 1, "only the cluster whose anchors held keeps its pins");
    }
}
