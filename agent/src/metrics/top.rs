//! The heaviest keys of a stream (sources or ports of drop samples), for a metric whose
//! cardinality stays bounded: only the top few keys get a series, however many addresses an
//! attacker sprays.
//!
//! Each key has an exponentially decaying count (time constant [`TAU`]): a sample adds 1, and
//! counts fade by `e` every `TAU`, so a count divided by `TAU` is the recent rate. Counts are
//! kept relative to a reference instant, so adding one is an addition and comparing two needs
//! no decay (the reference moves forward before the scale overflows). At most `capacity`
//! keys are tracked: a new key past that replaces the one with the smallest count, so a heavy
//! hitter is never pushed out by many light ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The time constant of the decay: the rate published is over roughly the last minute.
pub const TAU: Duration = Duration::from_secs(60);

pub struct Top<K> {
    counts: HashMap<K, f64>,
    capacity: usize,
    /// Counts are scaled by `e^((t - reference) / TAU)` for a sample at `t`.
    reference: Instant,
}

impl<K: Hash + Eq + Clone> Top<K> {
    pub fn new(capacity: usize, now: Instant) -> Self {
        Self {
            counts: HashMap::with_capacity(capacity),
            capacity,
            reference: now,
        }
    }

    fn scale(&self, now: Instant) -> f64 {
        (now.saturating_duration_since(self.reference).as_secs_f64() / TAU.as_secs_f64()).exp()
    }

    /// Counts one occurrence of `key` at `now`.
    pub fn add(&mut self, key: K, now: Instant) {
        // e^40 leaves f64 all the room it needs; then every count is brought to `now`.
        if now.saturating_duration_since(self.reference) > TAU * 40 {
            let s = self.scale(now);
            self.counts.values_mut().for_each(|c| *c /= s);
            self.counts.retain(|_, c| *c > 1e-6);
            self.reference = now;
        }
        let weight = self.scale(now);
        if let Some(c) = self.counts.get_mut(&key) {
            *c += weight;
            return;
        }
        if self.counts.len() >= self.capacity {
            let smallest = self
                .counts
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k.clone());
            if let Some(k) = smallest {
                self.counts.remove(&k);
            }
        }
        self.counts.insert(key, weight);
    }

    /// The `n` keys with the highest counts, with their recent rate (per second), highest
    /// first; keys whose rate has faded below `floor` are left out.
    pub fn top(&self, n: usize, now: Instant, floor: f64) -> Vec<(K, f64)> {
        let per_second = 1.0 / (self.scale(now) * TAU.as_secs_f64());
        let mut all: Vec<(K, f64)> = self
            .counts
            .iter()
            .map(|(k, c)| (k.clone(), c * per_second))
            .filter(|(_, r)| *r >= floor)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_spray() {
        let t0 = Instant::now();
        // A key seen more often than one in `capacity` samples stays.
        let mut top = Top::new(32, t0);
        for i in 0..600u32 {
            let t = t0 + Duration::from_millis(100 * u64::from(i));
            // One source sends every tenth of a second, another every second; a spray of
            // one-off sources fills the table in between.
            top.add("heavy".to_string(), t);
            if i % 10 == 0 {
                top.add("steady".to_string(), t);
            }
            top.add(format!("spoofed-{i}"), t);
        }
        let now = t0 + Duration::from_secs(60);
        let best = top.top(2, now, 0.0);
        assert_eq!(best[0].0, "heavy");
        assert_eq!(best[1].0, "steady");
        // Ten a second for a minute, with a one-minute time constant: 10 * (1 - 1/e).
        assert!((best[0].1 - 6.3).abs() < 0.3, "{best:?}");
        assert!(top.counts.len() <= 32);
        // A long silence: everything fades below the floor.
        assert!(top.top(10, now + TAU * 30, 0.001).is_empty());
    }

    #[test]
    fn the_reference_moves_without_losing_counts() {
        let t0 = Instant::now();
        let mut top = Top::new(4, t0);
        let late = t0 + TAU * 41;
        top.add(1u8, late);
        top.add(1u8, late);
        let r = top.top(1, late, 0.0);
        assert!((r[0].1 - 2.0 / TAU.as_secs_f64()).abs() < 1e-9, "{r:?}");
    }
}
