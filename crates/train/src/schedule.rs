//! The learning rate as a function of training progress.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Half a cosine from `lr` down to `lr · min_factor` over all steps (updated every step).
    Cosine {
        min_factor: f64,
    },
    /// `lr · factor^⌊epoch / every⌋` (epochs counted from 0).
    Step {
        every: usize,
        factor: f64,
    },
}

impl Schedule {
    /// The learning rate at `step` (0-based, of `total` steps) in `epoch` (0-based).
    pub fn lr(&self, base: f64, step: usize, total: usize, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine { min_factor } => {
                let progress = step as f64 / total.max(1) as f64;
                base * (min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }
            Schedule::Step { every, factor } => base * factor.powi((epoch / every.max(1)) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let cos = Schedule::Cosine { min_factor: 0.1 };
        assert_eq!(cos.lr(1.0, 0, 100, 0), 1.0);
        assert!((cos.lr(1.0, 50, 100, 0) - 0.55).abs() < 1e-12);
        assert!((cos.lr(1.0, 100, 100, 9) - 0.1).abs() < 1e-12);
        let step = Schedule::Step { every: 10, factor: 0.5 };
        assert_eq!(step.lr(1.0, 0, 0, 9), 1.0);
        assert_eq!(step.lr(1.0, 0, 0, 10), 0.5);
        assert_eq!(step.lr(1.0, 0, 0, 25), 0.25);
    }
}
