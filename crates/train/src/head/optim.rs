//! The head's parameters under `sd-train`'s optimisers: two tensors per dense layer (kernel,
//! bias), plus the fused update of the large first layer.

use crate::checkpoint::Parameters;
use crate::optim::{Optimizer, OptimizerState, Param, Regularization, update};
use crate::real::{Real, axpy, with_simd};
use ndarray::{Array, ArrayView2, Dimension};

use super::model::{Dense, DenseGrad, Head, HeadGrad};

/// An optimiser's state for a head, tensor `2i` the kernel and `2i + 1` the bias of layer `i`.
pub struct HeadOptimizer<T> {
    state: OptimizerState<T>,
}

impl Parameters for HeadOptimizer<f32> {
    fn tensors(&self) -> Vec<&[f32]> {
        self.state.tensors()
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.state.tensors_mut()
    }
}

impl<T: Real> HeadOptimizer<T> {
    pub fn new(optimizer: Optimizer, regularization: Regularization, head: &Head<T>) -> Self {
        let sizes = head.layers.iter().flat_map(|l| [l.kernel.len(), l.bias.len()]);
        HeadOptimizer { state: OptimizerState::new(optimizer, regularization, sizes) }
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
        let (gk, gb) = (grad.kernel.as_standard_layout(), grad.bias.as_standard_layout());
        let kernel =
            Param { value: contiguous(&mut layer.kernel), grad: gk.as_slice().expect("standard"), kernel: true };
        self.state.step_tensor(2 * i, kernel, lr);
        let bias = Param { value: contiguous(&mut layer.bias), grad: gb.as_slice().expect("standard"), kernel: false };
        self.state.step_tensor(2 * i + 1, bias, lr);
    }

    /// Updates layer `i` from its input `x` (`[n, in]`) and output gradient `dy` (`[n, out]`):
    /// the same as [`HeadOptimizer::step_layer`] with `dW = xᵀ·dy`, `db = Σ dy`, but `dW` is
    /// computed one row at a time and applied at once, skipping zero inputs. For the 8192x256
    /// first layer this saves writing and re-reading an 8 MB gradient every step, and most of
    /// the multiply-adds (ReLU'd features are mostly zeros).
    pub fn step_fused(&mut self, i: usize, layer: &mut Dense<T>, x: ArrayView2<T>, dy: ArrayView2<T>, lr: f64) {
        let (x, dy) = (x.as_standard_layout(), dy.as_standard_layout());
        let (xs, dys) = (x.as_slice().expect("standard layout"), dy.as_slice().expect("standard layout"));
        let (n, inputs, units) = (x.nrows(), layer.inputs(), layer.units());
        assert_eq!((x.ncols(), dy.dim()), (inputs, (n, units)), "shapes of x and dy");
        let (opt, reg) = (self.state.optimizer, self.state.regularization);
        let db = dy.sum_axis(ndarray::Axis(0));
        let w = contiguous(&mut layer.kernel);
        let slots = self.state.slot(2 * i);
        with_simd(
            #[inline(always)]
            || {
                let mut g = vec![T::zero(); units];
                for (k, (w_row, slot_row)) in w.chunks_exact_mut(units).zip(slots.chunks_exact_mut(units)).enumerate() {
                    g.fill(T::zero());
                    for (i, dy_row) in dys.chunks_exact(units).enumerate() {
                        let a = xs[i * inputs + k];
                        if a != T::zero() {
                            axpy(a, dy_row, &mut g);
                        }
                    }
                    update(opt, reg, w_row, &g, slot_row, lr);
                }
            },
        );
        let bias =
            Param { value: contiguous(&mut layer.bias), grad: db.as_slice().expect("fresh array"), kernel: false };
        self.state.step_tensor(2 * i + 1, bias, lr);
    }
}

/// The elements of `a` as a slice, in standard (C) order; re-lays `a` out first if needed.
fn contiguous<T: Real, D: Dimension>(a: &mut Array<T, D>) -> &mut [T] {
    if !a.is_standard_layout() {
        *a = a.as_standard_layout().into_owned();
    }
    a.as_slice_mut().expect("standard layout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn one_layer(kernel: Array2<f64>, bias: ndarray::Array1<f64>) -> Head<f64> {
        Head { pool: super::super::Pool::Flatten, layers: vec![Dense { kernel, bias }], dropout: 0.0 }
    }

    #[test]
    fn fused_step_matches_step_with_the_materialised_gradient() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let layer = Dense::<f64>::glorot(30, 6, &mut rng);
        let x = Array2::from_shape_simple_fn((4, 30), || rng.random_range(-1.0f64..1.0).max(0.0));
        let dy = Array2::from_shape_simple_fn((4, 6), || rng.random_range(-1.0..1.0));
        let (grad, _) = layer.backward(x.view(), dy.view(), false);
        let reg = Regularization { weight_decay: 0.01, l2: 0.001 };
        for opt in [Optimizer::RMSPROP, Optimizer::Sgd { momentum: 0.9, nesterov: true }] {
            let mut a = one_layer(layer.kernel.clone(), layer.bias.clone());
            let mut b = a.clone();
            let mut sa = HeadOptimizer::new(opt, reg, &a);
            let mut sb = HeadOptimizer::new(opt, reg, &b);
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
    fn kernels_are_regularised_and_biases_not() {
        let reg = Regularization { weight_decay: 0.5, l2: 0.25 };
        let mut head = one_layer(ndarray::array![[2.0]], ndarray::array![3.0]);
        let mut opt = HeadOptimizer::new(Optimizer::Sgd { momentum: 0.0, nesterov: false }, reg, &head);
        let grad = DenseGrad { kernel: ndarray::array![[1.0]], bias: ndarray::array![1.0] };
        opt.step(&mut head, &vec![grad], 0.1);
        // kernel: g = 1 + 2·0.25·2 = 2; w = 2·(1 - 0.1·0.5) - 0.1·2 = 1.7
        assert!((head.layers[0].kernel[[0, 0]] - 1.7).abs() < 1e-15);
        assert!((head.layers[0].bias[0] - 2.9).abs() < 1e-15);
    }
}
