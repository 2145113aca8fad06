//! `--shard i/n`: one slice of the data set, so a scheduler can fan the work out.
//!
//! Shards are cut at batch boundaries: every batch of a sharded run is the same batch as in a
//! single run, so the features (and hence the merged files) are byte-identical to an
//! unsharded run, whatever batching does inside ONNX Runtime.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The sample range of this shard among `total` samples in batches of `batch_size`.
    pub fn range(&self, total: usize, batch_size: usize) -> Range<usize> {
        let batches = total.div_ceil(batch_size);
        let first = self.index * batches / self.count;
        let last = (self.index + 1) * batches / self.count;
        (first * batch_size).min(total)..(last * batch_size).min(total)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad shard '{s}': expected i/n with 0 <= i < n, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_once_at_batch_boundaries() {
        for total in [0, 1, 15, 16, 17, 200, 2000, 2801] {
            for count in 1..=7 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total, 16);
                    assert_eq!(r.start, next, "total {total} shard {index}/{count}");
                    assert!(r.start.is_multiple_of(16) || r.start == total);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn parse() {
        assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1/0", "a/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
