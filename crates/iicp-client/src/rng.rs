//! A small seeded generator (SplitMix64) for selection and jitter, so tests can fix the seed and
//! get the same choices. Not for secrets: those come from the OS.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the OS, for production use.
    pub fn from_os() -> Rng {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        Rng(u64::from_le_bytes(b))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// `d` scaled by a factor in [1 − spread, 1 + spread].
    pub fn jitter(&mut self, d: std::time::Duration, spread: f64) -> std::time::Duration {
        d.mul_f64(1.0 - spread + 2.0 * spread * self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_values_in_range() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.unit();
            assert_eq!(u, b.unit());
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(3) < 3);
            b.below(3);
        }
        let j = Rng::seeded(1).jitter(std::time::Duration::from_millis(200), 0.2);
        assert!((160..=240).contains(&j.as_millis()));
    }
}
