//! Optimisers with Keras 3 semantics (`keras/src/optimizers/{rmsprop,sgd}.py`), plus the two
//! regularisers Keras offers around them.
//!
//! * RMSprop: `v = ρ·v + (1-ρ)·g²; w -= lr·g / sqrt(v + ε)` (Keras 3 puts ε inside the root).
//! * SGD with momentum: `m = μ·m - lr·g; w += m` (Nesterov: `w += μ·m - lr·g`).
//! * Decoupled weight decay (Keras' `weight_decay=`, as in AdamW): `w -= lr·wd·w` before the
//!   update.
//! * L2 penalty (Keras' `kernel_regularizer=L2(l2)`, `l2·Σw²` added to the loss): `g += 2·l2·w`.
//!
//! Both regularisers apply to kernels only, never to biases.

use ndarray::{Array, Dimension};
use serde::{Deserialize, Serialize};

use ndarray::ArrayView2;

use crate::model::{Dense, DenseGrad, Head, HeadGrad, Real, axpy, with_simd};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    Rmsprop { rho: f64, epsilon: f64 },
    Sgd { momentum: f64, nesterov: bool },
}

impl Optimizer {
    /// Keras' RMSprop defaults.
    pub const RMSPROP: Optimizer = Optimizer::Rmsprop { rho: 0.9, epsilon: 1e-7 };
}

/// Regularisation applied with every step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Regularization {
    /// Decoupled weight decay (scaled by the learning rate, as in Keras and AdamW).
    pub weight_decay: f64,
    /// L2 penalty coefficient on kernels.
    pub l2: f64,
}

/// An optimiser with its per-parameter state (velocity or momentum), shaped like the head.
pub struct OptimizerState<T> {
    pub optimizer: Optimizer,
    pub regularization: Regularization,
    slots: Vec<DenseGrad<T>>,
}

impl<T: Real> OptimizerState<T> {
    pub fn new(optimizer: Optimizer, regularization: Regularization, head: &Head<T>) -> Self {
        let slots = head
            .layers
            .iter()
            .map(|l| DenseGrad {
                kernel: ndarray::Array2::zeros(l.kernel.dim()),
                bias: ndarray::Array1::zeros(l.units()),
            })
            .collect();
        OptimizerState { optimizer, regularization, slots }
    }

    /// One update of every parameter of `head` with gradients `grads` at learning rate `lr`.
    pub fn step(&mut self, head: &mut Head<T>, grads: &HeadGrad<T>, lr: f64) {
        assert_eq!(head.layers.len(), grads.len(), "one gradient per layer");
        for (i, (layer, grad)) in head.layers.iter_mut().zip(grads).enumerate() {
            self.step_layer(i, layer, grad, lr);
        }
    }

    /// Updates layer `i` of the head with its gradient.
    pub fn step_layer(&mut self, i: usize, layer: &mut Dense<T>, grad: &DenseGrad<T>, lr: f64) {
        let (opt, reg, slot) = (self.optimizer, self.regularization, &mut self.slots[i]);
        let (gk, gb) = (grad.kernel.as_standard_layout(), grad.bias.as_standard_layout());
        let (w, b) = (contiguous(&mut layer.kernel), contiguous(&mut layer.bias));
        let (sk, sb) = (contiguous(&mut slot.kernel), contiguous(&mut slot.bias));
        with_simd(
            #[inline(always)]
            || {
                update(opt, reg, w, gk.as_slice().expect("standard layout"), sk, lr);
                update(opt, Regularization::default(), b, gb.as_slice().expect("standard layout"), sb, lr);
            },
        );
    }

    /// Updates layer `i` from its input `x` (`[n, in]`) and output gradient `dy` (`[n, out]`):
    /// the same as [`OptimizerState::step_layer`] with `dW = xᵀ·dy`, `db = Σ dy`, but `dW` is
    /// computed one row at a time and applied at once, skipping zero inputs. For the 8192x256
    /// first layer this saves writing and re-reading an 8 MB gradient every step, and most of
    /// the multiply-adds (ReLU'd features are mostly zeros).
    pub fn step_fused(&mut self, i: usize, layer: &mut Dense<T>, x: ArrayView2<T>, dy: ArrayView2<T>, lr: f64) {
        let (x, dy) = (x.as_standard_layout(), dy.as_standard_layout());
        let (xs, dys) = (x.as_slice().expect("standard layout"), dy.as_slice().expect("standard layout"));
        let (n, inputs, units) = (x.nrows(), layer.inputs(), layer.units());
        assert_eq!((x.ncols(), dy.dim()), (inputs, (n, units)), "shapes of x and dy");
        let (opt, reg, slot) = (self.optimizer, self.regularization, &mut self.slots[i]);
        let db = dy.sum_axis(ndarray::Axis(0));
        let (w, b) = (contiguous(&mut layer.kernel), contiguous(&mut layer.bias));
        let (sk, sb) = (contiguous(&mut slot.kernel), contiguous(&mut slot.bias));
        with_simd(
            #[inline(always)]
            || {
                let mut g = vec![T::zero(); units];
                for (k, (w_row, slot_row)) in w.chunks_exact_mut(units).zip(sk.chunks_exact_mut(units)).enumerate() {
                    g.fill(T::zero());
                    for (i, dy_row) in dys.chunks_exact(units).enumerate() {
                        let a = xs[i * inputs + k];
                        if a != T::zero() {
                            axpy(a, dy_row, &mut g);
                        }
                    }
                    update(opt, reg, w_row, &g, slot_row, lr);
                }
                update(opt, Regularization::default(), b, db.as_slice().expect("fresh array"), sb, lr);
            },
        );
    }
}

/// The elements of `a` as a slice, in standard (C) order; re-lays `a` out first if needed.
fn contiguous<T: Real, D: Dimension>(a: &mut Array<T, D>) -> &mut [T] {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    a.as_slice_mut().expect("standard layout")
}

/// One optimiser update of one tensor, elementwise (so any evaluation order gives the same bits).
/// Public so that other trainers (`finetune`'s convolution weights) share the exact rule.
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
    use ndarray::{Array1, Array2, array};

    fn one_layer(kernel: Array2<f64>, bias: Array1<f64>) -> Head<f64> {
        Head { layers: vec![Dense { kernel, bias }], dropout: 0.0 }
    }

    fn grads(kernel: Array2<f64>, bias: Array1<f64>) -> HeadGrad<f64> {
        vec![DenseGrad { kernel, bias }]
    }

    #[test]
    fn rmsprop_matches_keras_docstring_example() {
        // keras.optimizers.RMSprop(learning_rate=0.1); var1 = 10.0; loss = var1² / 2 -> 9.683772
        let mut head = one_layer(array![[10.0]], array![0.0]);
        let mut opt = OptimizerState::new(Optimizer::RMSPROP, Regularization::default(), &head);
        opt.step(&mut head, &grads(array![[10.0]], array![0.0]), 0.1);
        assert!((head.layers[0].kernel[[0, 0]] - 9.683772).abs() < 1e-6, "{}", head.layers[0].kernel);
    }

    #[test]
    fn rmsprop_two_steps_match_hand_computation() {
        let (lr, rho, eps) = (1e-3, 0.9, 1e-7);
        let mut head = one_layer(array![[0.5, -0.25]], array![0.1, 0.0]);
        let mut opt = OptimizerState::new(Optimizer::Rmsprop { rho, epsilon: eps }, Regularization::default(), &head);
        let g1 = grads(array![[0.2, -0.4]], array![1.0, 0.0]);
        let g2 = grads(array![[-0.1, 0.3]], array![0.5, 2.0]);
        opt.step(&mut head, &g1, lr);
        opt.step(&mut head, &g2, lr);
        // Hand computation for the first kernel entry and the first bias.
        let v1 = (1.0 - rho) * 0.2f64.powi(2);
        let w1 = 0.5 - lr * 0.2 / (v1 + eps).sqrt();
        let v2 = rho * v1 + (1.0 - rho) * 0.1f64.powi(2);
        let w2 = w1 - lr * -0.1 / (v2 + eps).sqrt();
        assert!((head.layers[0].kernel[[0, 0]] - w2).abs() < 1e-15);
        let bv1 = 0.1f64;
        let b1 = 0.1 - lr * 1.0 / (bv1 + eps).sqrt();
        let bv2 = rho * bv1 + 0.1 * 0.25;
        let b2 = b1 - lr * 0.5 / (bv2 + eps).sqrt();
        assert!((head.layers[0].bias[0] - b2).abs() < 1e-15);
        // A zero gradient on a fresh slot leaves the weight as it is (ε keeps 0/0 away).
        assert!((head.layers[0].bias[1] - (0.0 - lr * 2.0 / (0.1 * 4.0 + eps).sqrt())).abs() < 1e-15);
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let (lr, mu) = (0.01, 0.9);
        for nesterov in [false, true] {
            let mut head = one_layer(array![[1.0]], array![0.0]);
            let mut opt =
                OptimizerState::new(Optimizer::Sgd { momentum: mu, nesterov }, Regularization::default(), &head);
            opt.step(&mut head, &grads(array![[2.0]], array![-1.0]), lr);
            opt.step(&mut head, &grads(array![[1.0]], array![0.0]), lr);
            let m1 = -lr * 2.0;
            let m2 = mu * m1 - lr * 1.0;
            let want = if nesterov { 1.0 + (mu * m1 - lr * 2.0) + (mu * m2 - lr * 1.0) } else { 1.0 + m1 + m2 };
            assert!((head.layers[0].kernel[[0, 0]] - want).abs() < 1e-15, "nesterov {nesterov}");
            let bm1 = lr;
            let bm2 = mu * bm1;
            let want_b = if nesterov { (mu * bm1 + lr) + mu * bm2 } else { bm1 + bm2 };
            assert!((head.layers[0].bias[0] - want_b).abs() < 1e-15, "nesterov {nesterov}");
        }
    }

    #[test]
    fn fused_step_matches_step_with_the_materialised_gradient() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let layer = Dense::<f64>::glorot(30, 6, &mut rng);
        let x = Array2::from_shape_simple_fn((4, 30), || rng.random_range(-1.0f64..1.0).max(0.0));
        let dy = Array2::from_shape_simple_fn((4, 6), || rng.random_range(-1.0..1.0));
        let (grad, _) = layer.backward(x.view(), dy.view(), false);
        let reg = Regularization { weight_decay: 0.01, l2: 0.001 };
        for opt in [Optimizer::RMSPROP, Optimizer::Sgd { momentum: 0.9, nesterov: true }] {
            let mut a = one_layer(layer.kernel.clone(), layer.bias.clone());
            let mut b = a.clone();
            let mut sa = OptimizerState::new(opt, reg, &a);
            let mut sb = OptimizerState::new(opt, reg, &b);
            for _ in 0..3 {
                sa.step(&mut a, &vec![grad.clone()], 0.01);
                sb.step_fused(0, &mut b.layers[0], x.view(), dy.view(), 0.01);
            }
            let close = |p: &Array2<f64>, q: &Array2<f64>| p.iter().zip(q).all(|(p, q)| (p - q).abs() < 1e-12);
            assert!(close(&a.layers[0].kernel, &b.layers[0].kernel), "{opt:?}");
            assert_eq!(a.layers[0].bias, b.layers[0].bias);
        }
    }

    #[test]
    fn weight_decay_and_l2_touch_kernels_only() {
        let lr = 0.1;
        let reg = Regularization { weight_decay: 0.5, l2: 0.25 };
        let mut head = one_layer(array![[2.0]], array![3.0]);
        let mut opt = OptimizerState::new(Optimizer::Sgd { momentum: 0.0, nesterov: false }, reg, &head);
        opt.step(&mut head, &grads(array![[1.0]], array![1.0]), lr);
        // kernel: g = 1 + 2·0.25·2 = 2; w = 2·(1 - 0.1·0.5) - 0.1·2 = 1.7
        assert!((head.layers[0].kernel[[0, 0]] - 1.7).abs() < 1e-15);
        assert!((head.layers[0].bias[0] - 2.9).abs() < 1e-15);
    }
}
