//! Optimisers with Keras 3 semantics (`keras/src/optimizers/{rmsprop,sgd}.py`), plus the two
//! regularisers Keras offers around them, over any list of parameter tensors (the head's dense
//! layers, block 5's convolutions):
//!
//! * RMSprop: `v = ρ·v + (1-ρ)·g²; w -= lr·g / sqrt(v + ε)` (Keras 3 puts ε inside the root).
//! * SGD with momentum: `m = μ·m - lr·g; w += m` (Nesterov: `w += μ·m - lr·g`).
//! * Decoupled weight decay (Keras' `weight_decay=`, as in AdamW): `w -= lr·wd·w` before the
//!   update.
//! * L2 penalty (Keras' `kernel_regularizer=L2(l2)`, `l2·Σw²` added to the loss): `g += 2·l2·w`.
//!
//! Both regularisers apply to kernels only, never to biases.

use serde::{Deserialize, Serialize};

use crate::real::{Real, with_simd};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    Rmsprop { rho: f64, epsilon: f64 },
    Sgd { momentum: f64, nesterov: bool },
}

impl Optimizer {
    /// Keras' RMSprop defaults.
    pub const RMSPROP: Optimizer = Optimizer::Rmsprop { rho: 0.9, epsilon: 1e-7 };

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Optimizer::Rmsprop { rho, epsilon } if !((0.0..1.0).contains(&rho) && epsilon > 0.0) => {
                Err(format!("RMSprop rho {rho} must be in [0, 1) and epsilon {epsilon} > 0"))
            }
            Optimizer::Sgd { momentum, .. } if !(0.0..=1.0).contains(&momentum) => {
                Err(format!("SGD momentum {momentum} must be in [0, 1]"))
            }
            _ => Ok(()),
        }
    }
}

/// Regularisation applied with every step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Regularization {
    /// Decoupled weight decay (scaled by the learning rate, as in Keras and AdamW).
    pub weight_decay: f64,
    /// L2 penalty coefficient on kernels.
    pub l2: f64,
}

impl Regularization {
    /// What applies to a tensor: everything for kernels, nothing for biases.
    pub fn on(self, kernel: bool) -> Regularization {
        if kernel { self } else { Regularization::default() }
    }
}

/// One parameter tensor as the optimiser sees it: its values, its gradient, and whether it is a
/// kernel (regularised) or a bias (not).
pub struct Param<'a, T> {
    pub value: &'a mut [T],
    pub grad: &'a [T],
    pub kernel: bool,
}

/// An optimiser with its per-parameter state (velocity or momentum), one slot per tensor.
pub struct OptimizerState<T> {
    pub optimizer: Optimizer,
    pub regularization: Regularization,
    slots: Vec<Vec<T>>,
}

impl<T: Real> OptimizerState<T> {
    /// State for tensors of these sizes (in the order the steps will pass them).
    pub fn new(optimizer: Optimizer, regularization: Regularization, sizes: impl IntoIterator<Item = usize>) -> Self {
        let slots = sizes.into_iter().map(|n| vec![T::zero(); n]).collect();
        OptimizerState { optimizer, regularization, slots }
    }

    /// One update of every tensor, in the order given to [`OptimizerState::new`].
    pub fn step<'a>(&mut self, params: impl IntoIterator<Item = Param<'a, T>>, lr: f64) {
        let mut count = 0;
        for (i, p) in params.into_iter().enumerate() {
            self.step_tensor(i, p, lr);
            count += 1;
        }
        assert_eq!(count, self.slots.len(), "one gradient per parameter tensor");
    }

    /// Updates tensor `i` alone.
    pub fn step_tensor(&mut self, i: usize, p: Param<'_, T>, lr: f64) {
        let (opt, reg) = (self.optimizer, self.regularization.on(p.kernel));
        let slot = &mut self.slots[i];
        with_simd(
            #[inline(always)]
            || update(opt, reg, p.value, p.grad, slot, lr),
        );
    }

    /// The state of tensor `i` (for updates that compute their gradient piece by piece).
    pub fn slot(&mut self, i: usize) -> &mut [T] {
        &mut self.slots[i]
    }
}

/// The velocity or momentum slots, one per tensor.
impl crate::checkpoint::Parameters for OptimizerState<f32> {
    fn tensors(&self) -> Vec<&[f32]> {
        self.slots.iter().map(Vec::as_slice).collect()
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.slots.iter_mut().map(Vec::as_mut_slice).collect()
    }
}

/// One optimiser update of one tensor, elementwise (so any evaluation order gives the same bits).
#[inline(always)]
pub fn update<T: Real>(
    optimizer: Optimizer,
    regularization: Regularization,
    w: &mut [T],
    g: &[T],
    slot: &mut [T],
    lr: f64,
) {
    assert!(w.len() == g.len() && w.len() == slot.len(), "parameter, gradient and state sizes differ");
    let Regularization { weight_decay, l2 } = regularization;
    let lr_t = T::of(lr);
    let decay = T::of(1.0 - lr * weight_decay);
    let two_l2 = T::of(2.0 * l2);
    let zip = w.iter_mut().zip(g).zip(slot);
    match optimizer {
        Optimizer::Rmsprop { rho, epsilon } => {
            let (rho, one_minus_rho, eps) = (T::of(rho), T::of(1.0 - rho), T::of(epsilon));
            for ((w, &g), v) in zip {
                let g = g + two_l2 * *w;
                *w *= decay;
                *v = rho * *v + one_minus_rho * g * g;
                *w = *w - lr_t * g / (*v + eps).sqrt();
            }
        }
        Optimizer::Sgd { momentum, nesterov } => {
            let mu = T::of(momentum);
            for ((w, &g), m) in zip {
                let g = g + two_l2 * *w;
                *w *= decay;
                *m = mu * *m - lr_t * g;
                *w += if nesterov { mu * *m - lr_t * g } else { *m };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps a kernel and a bias (one value each, or two) through `grads`.
    fn run(opt: Optimizer, reg: Regularization, w: &mut [Vec<f64>], grads: &[[Vec<f64>; 2]], lr: f64) {
        let mut state = OptimizerState::new(opt, reg, w.iter().map(Vec::len));
        for g in grads {
            let [k, b] = w else { panic!("kernel and bias") };
            let params = [
                Param { value: k.as_mut_slice(), grad: &g[0], kernel: true },
                Param { value: b.as_mut_slice(), grad: &g[1], kernel: false },
            ];
            state.step(params, lr);
        }
    }

    #[test]
    fn rmsprop_matches_keras_docstring_example() {
        // keras.optimizers.RMSprop(learning_rate=0.1); var1 = 10.0; loss = var1² / 2 -> 9.683772
        let mut w = [vec![10.0], vec![0.0]];
        run(Optimizer::RMSPROP, Regularization::default(), &mut w, &[[vec![10.0], vec![0.0]]], 0.1);
        assert!((w[0][0] - 9.683772).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn rmsprop_two_steps_match_hand_computation() {
        let (lr, rho, eps) = (1e-3, 0.9, 1e-7);
        let mut w = [vec![0.5, -0.25], vec![0.1, 0.0]];
        let grads = [[vec![0.2, -0.4], vec![1.0, 0.0]], [vec![-0.1, 0.3], vec![0.5, 2.0]]];
        run(Optimizer::Rmsprop { rho, epsilon: eps }, Regularization::default(), &mut w, &grads, lr);
        // Hand computation for the first kernel entry and the first bias.
        let v1 = (1.0 - rho) * 0.2f64.powi(2);
        let w1 = 0.5 - lr * 0.2 / (v1 + eps).sqrt();
        let v2 = rho * v1 + (1.0 - rho) * 0.1f64.powi(2);
        let w2 = w1 - lr * -0.1 / (v2 + eps).sqrt();
        assert!((w[0][0] - w2).abs() < 1e-15);
        let bv1 = 0.1f64;
        let b1 = 0.1 - lr * 1.0 / (bv1 + eps).sqrt();
        let bv2 = rho * bv1 + 0.1 * 0.25;
        let b2 = b1 - lr * 0.5 / (bv2 + eps).sqrt();
        assert!((w[1][0] - b2).abs() < 1e-15);
        // A zero gradient on a fresh slot leaves the weight as it is (ε keeps 0/0 away).
        assert!((w[1][1] - (0.0 - lr * 2.0 / (0.1 * 4.0 + eps).sqrt())).abs() < 1e-15);
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let (lr, mu) = (0.01, 0.9);
        for nesterov in [false, true] {
            let mut w = [vec![1.0], vec![0.0]];
            let grads = [[vec![2.0], vec![-1.0]], [vec![1.0], vec![0.0]]];
            run(Optimizer::Sgd { momentum: mu, nesterov }, Regularization::default(), &mut w, &grads, lr);
            let m1 = -lr * 2.0;
            let m2 = mu * m1 - lr * 1.0;
            let want = if nesterov { 1.0 + (mu * m1 - lr * 2.0) + (mu * m2 - lr * 1.0) } else { 1.0 + m1 + m2 };
            assert!((w[0][0] - want).abs() < 1e-15, "nesterov {nesterov}");
            let bm1 = lr;
            let bm2 = mu * bm1;
            let want_b = if nesterov { (mu * bm1 + lr) + mu * bm2 } else { bm1 + bm2 };
            assert!((w[1][0] - want_b).abs() < 1e-15, "nesterov {nesterov}");
        }
    }

    #[test]
    fn weight_decay_and_l2_touch_kernels_only() {
        let reg = Regularization { weight_decay: 0.5, l2: 0.25 };
        let mut w = [vec![2.0], vec![3.0]];
        run(Optimizer::Sgd { momentum: 0.0, nesterov: false }, reg, &mut w, &[[vec![1.0], vec![1.0]]], 0.1);
        // kernel: g = 1 + 2·0.25·2 = 2; w = 2·(1 - 0.1·0.5) - 0.1·2 = 1.7
        assert!((w[0][0] - 1.7).abs() < 1e-15);
        assert!((w[1][0] - 2.9).abs() < 1e-15);
    }

    #[test]
    fn bad_hyper_parameters_are_refused() {
        assert!(Optimizer::Rmsprop { rho: 1.0, epsilon: 1e-7 }.validate().is_err());
        assert!(Optimizer::Rmsprop { rho: 0.9, epsilon: 0.0 }.validate().is_err());
        assert!(Optimizer::Sgd { momentum: 1.5, nesterov: false }.validate().is_err());
        assert!(Optimizer::RMSPROP.validate().is_ok());
    }
}
