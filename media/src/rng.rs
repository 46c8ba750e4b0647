//! The seeded random source of the core: SSRCs, initial sequence numbers, RTCP interval
//! dithering and the impairment simulator all draw from a `Rng` built from a seed in
//! their config, so a run is reproducible from its seed.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A seeded ChaCha8 generator.
#[derive(Debug, Clone)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform `u32`.
    pub fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!((a.u32(), a.unit()), (b.u32(), b.unit()));
        assert_ne!(Rng::new(8).u32(), Rng::new(7).u32());
    }

    #[test]
    fn chance_tracks_probability() {
        let mut r = Rng::new(1);
        let hits = (0..10_000).filter(|_| r.chance(0.1)).count();
        assert!((900..1100).contains(&hits), "{hits}");
        assert!(!r.chance(0.0));
    }
}
