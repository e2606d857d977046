//! A small mutation fuzzer for decoders, on stable Rust and inside `cargo test`: seed
//! inputs, stacked byte- and text-level mutations, and a property checked on every
//! generated input. It is what this project runs over every decoder a peer can reach
//! (`tests/fuzz.rs`), and it is yours for your own decoders.
//!
//! There is no coverage feedback; instead, inputs the decoder accepts join the corpus
//! (up to a bound), so later mutations start from valid, deeper inputs. A panic in the
//! decoder, or a property the check reports broken, fails the run with the input
//! written out as a Rust byte string, the iteration and the seed, so it can be
//! replayed.
//!
//! The number of inputs per target comes from [`ITERATIONS_VAR`] when set (the long
//! runs outside CI), otherwise from the caller's default (a short smoke run).
//!
//! # Examples
//!
//! ```
//! use messaging_testkit::fuzz::{Fuzz, Verdict};
//!
//! let report = Fuzz::new("u16 parser", 7)
//!     .seeds([b"8080".to_vec(), b"65535".to_vec()])
//!     .dictionary(["-", "99999999999999999999", " "])
//!     .run(10_000, |input| match std::str::from_utf8(input).ok().and_then(|s| s.parse::<u16>().ok()) {
//!         Some(_) => Ok(Verdict::Accepted),
//!         None => Ok(Verdict::Rejected),
//!     });
//! assert_eq!(report.inputs, 10_000);
//! ```

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// The environment variable that sets how many inputs each target runs (e.g.
/// `MESSAGING_FUZZ_ITERATIONS=1000000` for the long run).
pub const ITERATIONS_VAR: &str = "MESSAGING_FUZZ_ITERATIONS";

/// What the decoder made of one input (a property violation is an `Err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Decoded: the input joins the corpus.
    Accepted,
    /// Refused with an error, as malformed input should be.
    Rejected,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The target's name.
    pub name: String,
    /// Inputs generated and checked.
    pub inputs: u64,
    /// How many of them the decoder accepted.
    pub accepted: u64,
    /// The longest input generated, in bytes.
    pub longest_input: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} inputs ({} accepted), longest {} bytes, {:.1} s",
            self.name,
            self.inputs,
            self.accepted,
            self.longest_input,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The number of inputs to run: [`ITERATIONS_VAR`] if set, else `default`.
pub fn iterations(default: u64) -> u64 {
    std::env::var(ITERATIONS_VAR)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Numbers that break parsers: limits, overflows, float edge cases, huge digit runs.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0.0",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "Infinity",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1000000000000",
    "0.5",
    "1.7976931348623157e308",
];

/// One fuzz target: a name, a seed for the generator, seed inputs and a dictionary.
#[derive(Debug)]
pub struct Fuzz {
    name: String,
    seed: u64,
    corpus: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
    max_len: usize,
    max_corpus: usize,
}

impl Fuzz {
    /// A target named `name`, generating from `seed` (runs with the same seed, seeds
    /// and check generate the same inputs).
    pub fn new(name: impl Into<String>, seed: u64) -> Self {
        Fuzz {
            name: name.into(),
            seed,
            corpus: Vec::new(),
            dictionary: NUMBERS.iter().map(|n| n.as_bytes().to_vec()).collect(),
            max_len: 64 << 10,
            max_corpus: 512,
        }
    }

    /// Adds seed inputs (valid examples of what the decoder reads).
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.corpus.extend(seeds);
        self
    }

    /// Adds tokens that mutations insert (keys, keywords, delimiters).
    pub fn dictionary<T: AsRef<[u8]>>(mut self, tokens: impl IntoIterator<Item = T>) -> Self {
        self.dictionary
            .extend(tokens.into_iter().map(|t| t.as_ref().to_vec()));
        self
    }

    /// The longest input generated (64 KiB by default).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Generates `iterations` inputs and checks each with `check`, which returns the
    /// decoder's [`Verdict`] or a broken property.
    ///
    /// # Panics
    ///
    /// When `check` (the decoder) panics or reports a broken property: the message
    /// holds the input, the iteration and the seed.
    pub fn run(
        mut self,
        iterations: u64,
        mut check: impl FnMut(&[u8]) -> Result<Verdict, String>,
    ) -> Report {
        if self.corpus.is_empty() {
            self.corpus.push(Vec::new());
        }
        let started = Instant::now();
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut report = Report {
            name: self.name.clone(),
            inputs: 0,
            accepted: 0,
            longest_input: 0,
            elapsed: Duration::ZERO,
        };
        let seeds = self.corpus.len() as u64;
        for i in 0..iterations {
            // The seeds themselves first, then mutants.
            let input = if i < seeds {
                self.corpus[i as usize].clone()
            } else {
                self.mutant(&mut rng)
            };
            report.inputs += 1;
            report.longest_input = report.longest_input.max(input.len());
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
            let failure = match outcome {
                Ok(Ok(Verdict::Accepted)) => {
                    report.accepted += 1;
                    if self.corpus.len() < self.max_corpus {
                        self.corpus.push(input);
                    } else if rng.u8(..) == 0 {
                        let slot = rng.usize(seeds as usize..self.corpus.len());
                        self.corpus[slot] = input;
                    }
                    continue;
                }
                Ok(Ok(Verdict::Rejected)) => continue,
                Ok(Err(broken)) => broken,
                Err(panic) => format!(
                    "the decoder panicked: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(no message)")
                ),
            };
            panic!(
                "fuzz target `{}` (seed {}, iteration {i}): {failure}\ninput ({} bytes): b\"{}\"",
                self.name,
                self.seed,
                input.len(),
                escape(&input)
            );
        }
        report.elapsed = started.elapsed();
        report
    }

    /// A corpus entry with one to four mutations stacked on it.
    fn mutant(&self, rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut input = self.corpus[rng.usize(..self.corpus.len())].clone();
        for _ in 0..rng.usize(1..=4) {
            self.mutate(rng, &mut input);
        }
        input.truncate(self.max_len);
        input
    }

    fn mutate(&self, rng: &mut fastrand::Rng, input: &mut Vec<u8>) {
        const BYTES: &[u8] = b"\x00\xff\x7f\x80\"{}[],:\\\n.@/?#%*";
        let len = input.len();
        let at = |rng: &mut fastrand::Rng| rng.usize(..=len);
        match rng.u8(..12) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                input[i] ^= 1 << rng.u8(..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                input[i] = BYTES[rng.usize(..BYTES.len())];
            }
            2 => {
                let i = at(rng);
                let bytes: Vec<u8> = (0..rng.usize(1..=16)).map(|_| rng.u8(..)).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let start = rng.usize(..len);
                let end = (start + rng.usize(1..=16)).min(len);
                input.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.usize(..len);
                let end = (start + rng.usize(1..=64)).min(len);
                let chunk = input[start..end].to_vec();
                let i = at(rng);
                input.splice(i..i, chunk);
            }
            5 => {
                let other = &self.corpus[rng.usize(..self.corpus.len())];
                let keep = rng.usize(..=len);
                let from = rng.usize(..=other.len());
                input.truncate(keep);
                input.extend_from_slice(&other[from..]);
            }
            6 if !self.dictionary.is_empty() => {
                let token = &self.dictionary[rng.usize(..self.dictionary.len())];
                let i = at(rng);
                input.splice(i..i, token.iter().copied());
            }
            7 => {
                // Replace a run of digits (or insert) with a number that breaks parsers.
                let number = NUMBERS[rng.usize(..NUMBERS.len())].as_bytes();
                match input.iter().position(u8::is_ascii_digit) {
                    Some(start) if rng.bool() => {
                        let end = input[start..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(len, |n| start + n);
                        input.splice(start..end, number.iter().copied());
                    }
                    _ => {
                        let i = at(rng);
                        input.splice(i..i, number.iter().copied());
                    }
                }
            }
            8 if len > 0 => {
                // Overwrite with an integer that breaks length prefixes.
                let value: u64 = match rng.u8(..5) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => u32::MAX as u64,
                    3 => 1_000_000_000_000,
                    _ => rng.u64(..),
                };
                let width = [1, 2, 4, 8][rng.usize(..4)];
                let bytes = if rng.bool() {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let i = rng.usize(..len);
                for (k, b) in bytes[..width].iter().enumerate() {
                    if let Some(slot) = input.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            9 if len > 0 => input.truncate(rng.usize(..len)),
            10 if len > 0 => {
                // Repeat a chunk many times: long strings, deep nesting.
                let start = rng.usize(..len);
                let end = (start + rng.usize(1..=8)).min(len);
                let chunk = input[start..end].to_vec();
                let times = rng.usize(1..=(self.max_len / 2 / chunk.len()).max(1));
                let i = at(rng);
                input.splice(
                    i..i,
                    chunk.iter().copied().cycle().take(chunk.len() * times),
                );
            }
            _ => {
                let i = at(rng);
                input.insert(i, rng.u8(..));
            }
        }
    }
}

/// `input` as the inside of a Rust byte-string literal.
fn escape(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_decoder_fails_the_run_with_the_input() {
        let outcome = catch_unwind(|| {
            Fuzz::new("panics on 7", 1)
                .seeds([b"123".to_vec()])
                .run(100_000, |input| {
                    assert!(!input.contains(&b'7'), "found a 7");
                    Ok(Verdict::Rejected)
                })
        });
        let message = outcome.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("panicked: found a 7") && message.contains("input ("),
            "{message}"
        );
    }

    #[test]
    fn the_same_seed_generates_the_same_inputs() {
        let collect = |seed| {
            let mut seen = Vec::new();
            Fuzz::new("t", seed)
                .seeds([b"{\"a\": 1}".to_vec()])
                .run(500, |input| {
                    seen.push(input.to_vec());
                    Ok(Verdict::Rejected)
                });
            seen
        };
        assert_eq!(collect(3), collect(3));
        assert_ne!(collect(3), collect(4));
    }

    #[test]
    fn broken_properties_fail_the_run() {
        let outcome = catch_unwind(|| {
            Fuzz::new("property", 2)
                .seeds([b"ok".to_vec()])
                .run(10, |_| Err("the secret leaked".to_owned()))
        });
        let message = outcome.unwrap_err();
        assert!(
            message
                .downcast_ref::<String>()
                .unwrap()
                .contains("the secret leaked")
        );
    }
}
