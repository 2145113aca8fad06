//! The mutator: a seeded generator and byte-level edits of a seed, stacked 1 to 4 at a time.

use crate::MAX_INPUT;

/// SplitMix64: small, seedable, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers that break length and size arithmetic.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// Numbers written as text, for text formats' sizes, labels and shapes.
const NUMBERS: &[&str] =
    &["0", "-1", "1", "255", "65536", "4294967296", "100000000000", "18446744073709551616", "1e999", "-0", "NaN"];

/// A mutation of `input`: 1 to 4 edits, drawing on `corpus` for splices and `dict` for tokens.
pub fn mutate(input: &[u8], corpus: &[Vec<u8>], dict: &[&[u8]], rng: &mut Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        edit(&mut b, corpus, dict, rng);
    }
    b.truncate(MAX_INPUT);
    b
}

fn edit(b: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]], rng: &mut Rng) {
    let at = |rng: &mut Rng, b: &Vec<u8>| rng.below(b.len() + 1);
    match rng.below(12) {
        // Flip a bit.
        0 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
        }
        // An interesting byte.
        1 if !b.is_empty() => {
            let i = rng.below(b.len());
            b[i] = *rng.pick(&[0u8, 0xFF, 0x7F, 0x80, b'9', b'(', b'{', b'[', b'\'', b'"', b'\n', b':'][..]);
        }
        // An interesting integer, 2, 4 or 8 bytes, either byte order: length fields.
        2 if b.len() >= 8 => {
            let v = *rng.pick(INTERESTING);
            let v = if rng.below(2) == 0 { v } else { v.wrapping_add(b.len() as u64) };
            let width = *rng.pick(&[2usize, 4, 8]);
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()[..width].to_vec()
            } else {
                v.to_be_bytes()[8 - width..].to_vec()
            };
            let i = rng.below(b.len() - width + 1);
            b[i..i + width].copy_from_slice(&bytes);
        }
        // Insert random bytes.
        3 => {
            let i = at(rng, b);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(i..i, bytes);
        }
        // Delete a range.
        4 if !b.is_empty() => {
            let i = rng.below(b.len());
            let n = 1 + rng.below((b.len() - i).min(64));
            b.drain(i..i + n);
        }
        // Duplicate a range somewhere (repetition: nesting, long lists).
        5 if !b.is_empty() => {
            let i = rng.below(b.len());
            let n = 1 + rng.below((b.len() - i).min(256));
            let chunk = b[i..i + n].to_vec();
            let times = 1 + rng.below(8);
            let j = at(rng, b);
            b.splice(j..j, chunk.repeat(times));
        }
        // Splice in a piece of another input.
        6 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(512));
                let j = at(rng, b);
                let end = (j + n).min(b.len());
                b.splice(j..end, other[i..i + n].iter().copied());
            }
        }
        // A number in the text replaced: sizes, shapes, labels.
        7 => {
            let digits: Vec<usize> = b.iter().enumerate().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
            if let Some(&i) = (!digits.is_empty()).then(|| rng.pick(&digits)) {
                let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                b.splice(i..end, rng.pick(NUMBERS).bytes());
            }
        }
        // A token of the format.
        8 | 9 if !dict.is_empty() => {
            let token = rng.pick(dict);
            let i = at(rng, b);
            if rng.below(2) == 0 {
                b.splice(i..i, token.iter().copied());
            } else {
                let end = (i + token.len()).min(b.len());
                b.splice(i..end, token.iter().copied());
            }
        }
        // Cut short.
        10 if !b.is_empty() => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        // Swap two bytes.
        _ if b.len() >= 2 => {
            let (i, j) = (rng.below(b.len()), rng.below(b.len()));
            b.swap(i, j);
        }
        _ => b.push(rng.next() as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_bounded() {
        let seed = b"{'descr': '<f4', 'shape': (3, 4), }".to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..500).map(|_| mutate(&seed, std::slice::from_ref(&seed), &[b"True"], &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let out = run(8);
        assert!(out.iter().all(|m| m.len() <= MAX_INPUT));
        assert!(out.iter().filter(|m| **m != seed).count() > 450, "most mutations change the input");
        assert!(out.iter().any(|m| m.len() < seed.len()) && out.iter().any(|m| m.len() > seed.len()));
    }
}
