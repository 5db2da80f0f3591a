//! The one retry policy: exponential backoff with a cap and seeded jitter. Proxmox calls (`pve::client`), the
//! etcd election (`ha::election`) and failing nodes (`scheduler`) each hold a [`Backoff`] and a [`Jitter`] instead
//! of a loop and a random source of their own.

use std::time::Duration;

/// How long to wait before retry number `n` (1 for the first retry): `base × 2^(n−1)`, grown by jitter, at most
/// `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first retry's wait.
    pub base: Duration,
    /// The longest wait, jitter included.
    pub cap: Duration,
    /// How the wait is spread so that many waiters do not retry in step.
    pub spread: Spread,
}

/// Jitter added to a wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spread {
    /// None: the waits are exact (one waiter, nothing to spread).
    None,
    /// Up to this fraction of the wait more (`0.2`: up to +20 %).
    Fraction(f64),
    /// Up to this much more, whatever the wait.
    Upto(Duration),
}

impl Backoff {
    /// The wait before retry `n` (1-based; 0 is treated as 1).
    pub fn delay(&self, n: u32, jitter: &mut Jitter) -> Duration {
        // 2^20 × any sane base is past any cap; the shift stays defined.
        let doubling = self.base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
        let spread = match self.spread {
            Spread::None => Duration::ZERO,
            Spread::Fraction(f) => doubling.mul_f64(jitter.fraction() * f.max(0.0)),
            Spread::Upto(d) => d.mul_f64(jitter.fraction()),
        };
        doubling.saturating_add(spread).min(self.cap)
    }
}

/// A seeded pseudo-random source (xorshift64*): jitter needs spread, not cryptographic randomness, and a fixed
/// seed makes every schedule reproducible in tests.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed` (any value; zero is made odd).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A generator seeded from the clock's nanoseconds, so processes and clients started together still differ.
    pub fn from_clock() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Self::new(now.map_or(1, |d| d.as_nanos() as u64))
    }

    /// A number in [0, 1).
    pub fn fraction(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_cap() {
        let b = Backoff { base: 500 * MS, cap: Duration::from_secs(30), spread: Spread::None };
        let mut j = Jitter::new(1);
        let waits: Vec<u64> = (1..=9).map(|n| b.delay(n, &mut j).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(b.delay(0, &mut j), 500 * MS, "0 is the first retry too");
        assert_eq!(b.delay(u32::MAX, &mut j), Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn jitter_stays_within_its_spread_and_repeats_with_its_seed() {
        let b = Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(3600), spread: Spread::Fraction(0.2) };
        let (mut a, mut c) = (Jitter::new(7), Jitter::new(7));
        for n in 1..=6 {
            let exact = Duration::from_secs(5) * (1 << (n - 1));
            let wait = b.delay(n, &mut a);
            assert!(wait >= exact && wait <= exact.mul_f64(1.2), "{n}: {wait:?}");
            assert_eq!(wait, b.delay(n, &mut c), "same seed, same schedule");
        }
        let fixed = Backoff { base: 300 * MS, cap: Duration::MAX, spread: Spread::Upto(100 * MS) };
        let mut j = Jitter::new(3);
        let spread: Vec<Duration> = (0..50).map(|_| fixed.delay(1, &mut j) - 300 * MS).collect();
        assert!(spread.iter().all(|d| *d < 100 * MS));
        assert!(spread.iter().any(|d| *d != spread[0]), "the jitter moves");
    }

    #[test]
    fn fractions_are_spread_over_zero_to_one() {
        let mut j = Jitter::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| j.fraction()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let low = xs.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below one half");
    }
}
