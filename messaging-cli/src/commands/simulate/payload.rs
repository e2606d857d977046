//! The payload: random lowercase text, of a fixed size or with lengths drawn from
//! oslo's measured distribution, from a small seeded PRNG.

use std::sync::Arc;

/// Message lengths measured by oslo.messaging: `tools/messages_length.yaml` of
/// openstack/oslo.messaging (commit 8ea2d5b486b53a2f23fcf930679d6e1b338cbe99), the
/// string lengths of the 4077 messages RabbitMQ carried during 50 runs of Rally's
/// `boot_and_delete_server` (Nova, concurrency 3), reduced to 500-byte buckets the way
/// `tools/simulator.py` (`init_random_generator`) does: a length `n` falls in the
/// bucket starting at `n / 500 * 500 + 1`, and a sample is uniform within its bucket
/// (`start ..= start + 499`).
///
/// `(bucket start, messages)`.
pub(crate) const OSLO_MESSAGE_LENGTHS: [(u32, u32); 16] = [
    (501, 56),
    (1001, 105),
    (1501, 801),
    (2001, 1166),
    (2501, 616),
    (3001, 150),
    (3501, 100),
    (4001, 37),
    (4501, 177),
    (5001, 250),
    (5501, 99),
    (6001, 154),
    (6501, 211),
    (7001, 52),
    (7501, 53),
    (11001, 50),
];

/// Width of a bucket of [`OSLO_MESSAGE_LENGTHS`].
const BUCKET: u64 = 500;

/// At most this many distinct texts are generated and sent in turn (oslo's
/// `MESSAGES_LIMIT`).
const DISTINCT_TEXTS: u64 = 1000;

/// ... and at most this many bytes of them in all (a large fixed size gets fewer).
const TEXT_BUDGET: u64 = 64 << 20;

/// The largest `--payload-size`.
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

/// SplitMix64 (Steele, Lea and Flood): small, fast and good enough for payloads.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (Lemire; the bias is below
    /// 2^-32 for the small `n` used here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `len` random lowercase letters.
    fn text(&mut self, len: usize) -> String {
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let mut word = self.next_u64();
            for _ in 0..4 {
                if bytes.len() == len {
                    break;
                }
                // 16 random bits scaled to 0..26.
                bytes.push(b'a' + (((word & 0xffff) * 26) >> 16) as u8);
                word >>= 16;
            }
        }
        String::from_utf8(bytes).unwrap_or_default()
    }
}

/// A length drawn from [`OSLO_MESSAGE_LENGTHS`].
pub(crate) fn oslo_length(rng: &mut Rng) -> usize {
    let total: u64 = OSLO_MESSAGE_LENGTHS
        .iter()
        .map(|&(_, n)| u64::from(n))
        .sum();
    let mut pick = rng.below(total);
    for &(start, count) in &OSLO_MESSAGE_LENGTHS {
        if pick < u64::from(count) {
            return (u64::from(start) + rng.below(BUCKET)) as usize;
        }
        pick -= u64::from(count);
    }
    // Unreachable: `pick < total`.
    OSLO_MESSAGE_LENGTHS[0].0 as usize
}

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PayloadSpec {
    /// Texts of this many bytes.
    Fixed(usize),
    /// Lengths from [`OSLO_MESSAGE_LENGTHS`].
    Oslo,
}

/// Generates the texts the clients send in turn: as many as messages will be sent, at
/// most [`DISTINCT_TEXTS`] (and [`TEXT_BUDGET`] bytes).
pub(crate) fn texts(spec: PayloadSpec, messages: Option<u64>, seed: u64) -> Arc<Vec<String>> {
    let mut rng = Rng::new(seed);
    let mut count = messages.unwrap_or(DISTINCT_TEXTS).clamp(1, DISTINCT_TEXTS);
    if let PayloadSpec::Fixed(size) = spec {
        count = count.min((TEXT_BUDGET / (size as u64).max(1)).max(1));
    }
    let texts = (0..count)
        .map(|_| {
            let len = match spec {
                PayloadSpec::Fixed(size) => size,
                PayloadSpec::Oslo => oslo_length(&mut rng),
            };
            rng.text(len)
        })
        .collect();
    Arc::new(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_oslos_4077_messages() {
        let total: u32 = OSLO_MESSAGE_LENGTHS.iter().map(|&(_, n)| n).sum();
        assert_eq!(total, 4077);
        assert!(OSLO_MESSAGE_LENGTHS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn oslo_lengths_stay_in_their_buckets_with_the_measured_weights() {
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 16];
        for _ in 0..40_770 {
            let len = oslo_length(&mut rng) as u32;
            let bucket = OSLO_MESSAGE_LENGTHS
                .iter()
                .position(|&(start, _)| (start..start + 500).contains(&len))
                .unwrap_or_else(|| panic!("{len} is in no bucket"));
            counts[bucket] += 1;
        }
        for (i, &(_, expected)) in OSLO_MESSAGE_LENGTHS.iter().enumerate() {
            let expected = f64::from(expected) * 10.0;
            let got = f64::from(counts[i]);
            assert!(
                (got - expected).abs() < 5.0 * expected.sqrt() + 10.0,
                "bucket {i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn texts_are_lowercase_seeded_and_bounded() {
        let a = texts(PayloadSpec::Fixed(100), Some(5), 1);
        assert_eq!(a.len(), 5);
        assert!(a.iter().all(|t| t.len() == 100));
        assert!(a.iter().all(|t| t.bytes().all(|b| b.is_ascii_lowercase())));
        assert_eq!(a, texts(PayloadSpec::Fixed(100), Some(5), 1));
        assert_ne!(a, texts(PayloadSpec::Fixed(100), Some(5), 2));
        // Every letter shows up.
        let letters: std::collections::BTreeSet<u8> = a.iter().flat_map(|t| t.bytes()).collect();
        assert_eq!(letters.len(), 26);
        assert_eq!(texts(PayloadSpec::Oslo, None, 1).len(), 1000);
        assert_eq!(texts(PayloadSpec::Fixed(0), Some(3), 1)[0], "");
        assert_eq!(texts(PayloadSpec::Fixed(MAX_PAYLOAD), Some(10), 1).len(), 1);
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut rng = Rng::new(3);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
