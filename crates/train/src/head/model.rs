//! The head: Flatten or average pooling -> [Dense(h, ReLU) -> Dropout(p)]* -> Dense(outputs),
//! with hand-derived backward passes; the logits go through `sd_train::Loss` (sigmoid for two
//! classes, softmax for more).
//!
//! Generic over the float type: training runs in `f32` (as Keras does); the gradient checks run
//! the same code in `f64`, where finite differences are accurate enough to be a real test.
//! Kernels use Keras' layout `[in, out]` (`y = x · W + b`), so exported weights load into Keras
//! and `finetune` unchanged.

pub use crate::real::Real;
use crate::real::{axpy, with_simd};
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rand::Rng;

use super::pool::Pool;

/// A fully connected layer, Keras layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense<T> {
    /// `[in, out]`.
    pub kernel: Array2<T>,
    /// `[out]`.
    pub bias: Array1<T>,
}

/// Gradients of a [`Dense`] layer's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseGrad<T> {
    pub kernel: Array2<T>,
    pub bias: Array1<T>,
}

impl<T: Real> Dense<T> {
    /// Keras' defaults: Glorot (Xavier) uniform kernel, `U(-l, l)` with `l = sqrt(6 / (in + out))`;
    /// zero bias.
    pub fn glorot(inputs: usize, units: usize, rng: &mut impl Rng) -> Dense<T> {
        let limit = (6.0 / (inputs + units) as f64).sqrt();
        let kernel = Array2::from_shape_simple_fn((inputs, units), || T::of(rng.random_range(-limit..limit)));
        Dense { kernel, bias: Array1::zeros(units) }
    }

    pub fn inputs(&self) -> usize {
        self.kernel.nrows()
    }

    pub fn units(&self) -> usize {
        self.kernel.ncols()
    }

    /// `x · W + b` for a batch `x` of shape `[n, in]`.
    pub fn forward(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut y = x.dot(&self.kernel);
        y += &self.bias;
        y
    }

    /// Same as [`Dense::forward`], as a sum of rows of `W` over the nonzero inputs: ReLU'd
    /// VGG features are ~85% zeros, so for training batches this does a fraction of the GEMM's
    /// work and reads each row of `W` once (the `k` loop is outermost). Falls back to the GEMM
    /// for non-contiguous arrays.
    pub fn forward_sparse(&self, x: ArrayView2<T>) -> Array2<T> {
        let (Some(w), Some(xs)) = (self.kernel.as_slice(), x.as_slice()) else {
            return self.forward(x);
        };
        let (n, inputs, units) = (x.nrows(), self.inputs(), self.units());
        let mut y = Array2::from_shape_fn((n, units), |(_, j)| self.bias[j]);
        let ys = y.as_slice_mut().expect("fresh array");
        with_simd(
            #[inline(always)]
            || {
                for (k, w_row) in w.chunks_exact(units).enumerate() {
                    for (i, y_row) in ys.chunks_exact_mut(units).enumerate() {
                        let a = xs[i * inputs + k];
                        if a != T::zero() {
                            axpy(a, w_row, y_row);
                        }
                    }
                }
            },
        );
        y
    }

    /// Parameter gradients (`dW = xᵀ·dy`, `db = Σ_batch dy`) and, if asked, the input gradient
    /// `dx = dy·Wᵀ` (not needed for the first layer, where it would be the costliest GEMM).
    pub fn backward(&self, x: ArrayView2<T>, dy: ArrayView2<T>, want_dx: bool) -> (DenseGrad<T>, Option<Array2<T>>) {
        let grad = DenseGrad { kernel: x.t().dot(&dy), bias: dy.sum_axis(Axis(0)) };
        let dx = want_dx.then(|| dy.dot(&self.kernel.t()));
        (grad, dx)
    }
}

/// `max(x, 0)` in place.
pub fn relu_in_place<T: Real>(x: &mut Array2<T>) {
    x.mapv_inplace(|v| v.max(T::zero()));
}

/// ReLU backward from its output `y`: passes `dy` where `y > 0`.
pub fn relu_backward<T: Real>(y: ArrayView2<T>, dy: &mut Array2<T>) {
    Zip::from(dy).and(y).for_each(|d, &y| {
        if y <= T::zero() {
            *d = T::zero();
        }
    });
}

/// Inverted dropout (Keras): each unit is zeroed with probability `rate` and the survivors are
/// scaled by `1 / (1 - rate)` at training time, so inference is the identity. The mask holds
/// `0` or `1 / (1 - rate)`; forward and backward are both an elementwise product with it.
pub fn dropout_mask<T: Real>(shape: (usize, usize), rate: f64, rng: &mut (impl Rng + ?Sized)) -> Array2<T> {
    let keep = T::of(1.0 / (1.0 - rate));
    Array2::from_shape_simple_fn(shape, || if rng.random::<f64>() < rate { T::zero() } else { keep })
}

/// What the forward pass keeps for the backward pass.
pub struct Trace<T> {
    /// The input of every dense layer (the flattened features, then each hidden activation
    /// after ReLU and dropout).
    inputs: Vec<Array2<T>>,
    /// Per hidden layer, the ReLU output before dropout (its sign is the ReLU mask).
    relu_out: Vec<Array2<T>>,
    /// Per hidden layer, the dropout mask (`None` at inference or rate 0).
    masks: Vec<Option<Array2<T>>>,
}

impl<T: Real> Trace<T> {
    /// The input of the first layer.
    pub fn input(&self) -> ArrayView2<'_, T> {
        self.inputs[0].view()
    }
}

/// The dense head. `layers` are the hidden layers followed by the output layer (1 unit for two
/// classes, one per class otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Head<T> {
    /// How a feature map becomes the input of the first layer. The passes below take that
    /// input: `train-head` pools each split once, `finetune` every batch (and sends the gradient
    /// back through [`Pool::backward`]).
    pub pool: Pool,
    pub layers: Vec<Dense<T>>,
    /// Dropout rate after each hidden layer.
    pub dropout: f64,
}

/// Gradients for every layer of a [`Head`], same order.
pub type HeadGrad<T> = Vec<DenseGrad<T>>;

impl<T: Real> Head<T> {
    /// A freshly initialised head for `inputs` features with the given hidden widths and
    /// `outputs` logits.
    pub fn new(inputs: usize, hidden: &[usize], outputs: usize, dropout: f64, rng: &mut impl Rng) -> Head<T> {
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(outputs);
        let layers = widths.windows(2).map(|w| Dense::glorot(w[0], w[1], rng)).collect();
        Head { pool: Pool::Flatten, layers, dropout }
    }

    /// The same head reading its maps through `pool` (`inputs` must be `pool`'s width).
    pub fn with_pool(self, pool: Pool) -> Head<T> {
        Head { pool, ..self }
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    /// Logits per sample.
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, Dense::units)
    }

    pub fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1].iter().map(Dense::units).collect()
    }

    /// Logits `[n, outputs]` at inference (no dropout).
    pub fn logits(&self, x: ArrayView2<T>) -> Array2<T> {
        let mut a = x.to_owned();
        for (i, layer) in self.layers.iter().enumerate() {
            a = layer.forward(a.view());
            if i + 1 < self.layers.len() {
                relu_in_place(&mut a);
            }
        }
        a
    }

    /// Training forward pass: logits `[n, outputs]` and the trace for [`Head::backward`]. Dropout
    /// masks are drawn from `rng` (pass `None` for a deterministic pass, e.g. gradient checks).
    pub fn forward_train(&self, x: ArrayView2<T>, mut rng: Option<&mut dyn rand::RngCore>) -> (Array2<T>, Trace<T>) {
        let mut trace = Trace { inputs: vec![x.to_owned()], relu_out: vec![], masks: vec![] };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut a = layer.forward_sparse(trace.inputs[i].view());
            if i == last {
                return (a, trace);
            }
            relu_in_place(&mut a);
            let mask = match rng.as_deref_mut() {
                Some(rng) if self.dropout > 0.0 => Some(dropout_mask(a.dim(), self.dropout, rng)),
                _ => None,
            };
            let next = match &mask {
                Some(m) => &a * m,
                None => a.clone(),
            };
            trace.relu_out.push(a);
            trace.masks.push(mask);
            trace.inputs.push(next);
        }
        unreachable!("a head has at least the output layer")
    }

    /// Backward pass from `dlogits` (`[n, outputs]`) to every layer's parameter gradients.
    pub fn backward(&self, trace: &Trace<T>, dlogits: Array2<T>) -> HeadGrad<T> {
        let (upper, dy) = self.backward_upper(trace, dlogits);
        let (first, _) = self.layers[0].backward(trace.input(), dy.view(), false);
        std::iter::once(first).chain(upper).collect()
    }

    /// The backward pass down to, not through, the first layer: gradients of layers `1..` and
    /// the gradient at the first layer's output, from which the trainer updates the (large)
    /// first layer without materialising its gradient (see `OptimizerState::step_fused`).
    pub fn backward_upper(&self, trace: &Trace<T>, dlogits: Array2<T>) -> (HeadGrad<T>, Array2<T>) {
        let mut grads = Vec::with_capacity(self.layers.len());
        let mut dy = dlogits;
        for i in (1..self.layers.len()).rev() {
            let (grad, dx) = self.layers[i].backward(trace.inputs[i].view(), dy.view(), true);
            grads.push(grad);
            let mut dx = dx.expect("asked for dx");
            if let Some(mask) = &trace.masks[i - 1] {
                dx *= mask;
            }
            relu_backward(trace.relu_out[i - 1].view(), &mut dx);
            dy = dx;
        }
        grads.reverse();
        (grads, dy)
    }

    /// Converts to another float type (f32 training weights to f64 for checks, or back).
    pub fn cast<U: Real>(&self) -> Head<U> {
        let c = |v: &T| U::of(v.to_f64().unwrap_or(f64::NAN));
        Head {
            pool: self.pool,
            layers: self.layers.iter().map(|l| Dense { kernel: l.kernel.map(c), bias: l.bias.map(c) }).collect(),
            dropout: self.dropout,
        }
    }
}

/// Kernel then bias of every layer, in order.
impl crate::checkpoint::Parameters for Head<f32> {
    fn tensors(&self) -> Vec<&[f32]> {
        self.layers
            .iter()
            .flat_map(|l| [l.kernel.as_slice().expect("standard layout"), l.bias.as_slice().expect("standard layout")])
            .collect()
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [l.kernel.as_slice_mut().expect("standard layout"), l.bias.as_slice_mut().expect("standard layout")]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! Every backward pass against central finite differences, in f64.
    use super::*;
    use ndarray::{Array, Dimension};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const H: f64 = 1e-6;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    fn random(shape: (usize, usize), rng: &mut impl Rng) -> Array2<f64> {
        Array2::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
    }

    /// Numerical gradient of `f` with respect to every element of `param` (restored after).
    fn numeric<D: Dimension>(param: &mut Array<f64, D>, mut f: impl FnMut(&Array<f64, D>) -> f64) -> Array<f64, D> {
        let mut g = Array::zeros(param.raw_dim());
        for i in 0..param.len() {
            let orig = param.as_slice().unwrap()[i];
            param.as_slice_mut().unwrap()[i] = orig + H;
            let plus = f(param);
            param.as_slice_mut().unwrap()[i] = orig - H;
            let minus = f(param);
            param.as_slice_mut().unwrap()[i] = orig;
            g.as_slice_mut().unwrap()[i] = (plus - minus) / (2.0 * H);
        }
        g
    }

    fn assert_close<D: Dimension>(analytic: &Array<f64, D>, numeric: &Array<f64, D>, what: &str) {
        assert_eq!(analytic.shape(), numeric.shape(), "{what}");
        let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (a, n) in analytic.iter().zip(numeric) {
            assert!((a - n).abs() <= 1e-6 * scale, "{what}: analytic {a} vs numeric {n}");
        }
    }

    /// A scalar objective `Σ y ⊙ c` with fixed random `c`, so `dL/dy = c`.
    fn probe(y: &Array2<f64>, c: &Array2<f64>) -> f64 {
        (y * c).sum()
    }

    #[test]
    fn dense_gradients_match_finite_differences() {
        let mut rng = rng();
        let mut layer = Dense::<f64>::glorot(5, 3, &mut rng);
        layer.bias = Array1::from_shape_simple_fn(3, || rng.random_range(-1.0..1.0));
        let mut x = random((4, 5), &mut rng);
        let c = random((4, 3), &mut rng);
        let (grad, dx) = layer.backward(x.view(), c.view(), true);

        let mut kernel = layer.kernel.clone();
        let num_k = numeric(&mut kernel, |k| {
            probe(&Dense { kernel: k.clone(), bias: layer.bias.clone() }.forward(x.view()), &c)
        });
        assert_close(&grad.kernel, &num_k, "dense kernel");
        let mut bias = layer.bias.clone();
        let num_b = numeric(&mut bias, |b| {
            probe(&Dense { kernel: layer.kernel.clone(), bias: b.clone() }.forward(x.view()), &c)
        });
        assert_close(&grad.bias, &num_b, "dense bias");
        let num_x = numeric(&mut x, |x| probe(&layer.forward(x.view()), &c));
        assert_close(&dx.unwrap(), &num_x, "dense input");
    }

    #[test]
    fn sparse_forward_matches_the_gemm() {
        let mut rng = rng();
        let mut layer = Dense::<f64>::glorot(40, 7, &mut rng);
        layer.bias.mapv_inplace(|_| rng.random_range(-1.0..1.0));
        let x = random((5, 40), &mut rng).mapv(|v| if v < 0.5 { 0.0 } else { v });
        let close = |a: &Array2<f64>, b: &Array2<f64>| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12);
        let (a, b) = (layer.forward_sparse(x.view()), layer.forward(x.view()));
        assert!(close(&a, &b), "{a} vs {b}");
        // A non-contiguous input takes the GEMM path.
        let wide = ndarray::concatenate![Axis(1), x, x];
        let view = wide.slice(ndarray::s![.., ..40]);
        assert!(view.as_slice().is_none());
        assert_eq!(layer.forward_sparse(view), layer.forward(view));
    }

    #[test]
    fn relu_gradient_matches_finite_differences() {
        let mut rng = rng();
        // Keep inputs away from the kink at 0, where the derivative is undefined.
        let mut x = random((4, 6), &mut rng).mapv(|v| if v.abs() < 0.05 { v + 0.1 } else { v });
        let c = random((4, 6), &mut rng);
        let relu = |x: &Array2<f64>| {
            let mut y = x.clone();
            relu_in_place(&mut y);
            y
        };
        let mut dx = c.clone();
        relu_backward(relu(&x).view(), &mut dx);
        let num = numeric(&mut x, |x| probe(&relu(x), &c));
        assert_close(&dx, &num, "relu");
    }

    #[test]
    fn dropout_is_inverted_and_its_gradient_is_the_mask() {
        let mut rng = rng();
        let mask = dropout_mask::<f64>((50, 40), 0.5, &mut rng);
        assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.5).abs() < 0.05, "kept {kept}");
        let mut x = random((50, 40), &mut rng);
        let c = random((50, 40), &mut rng);
        let num = numeric(&mut x, |x| probe(&(x * &mask), &c));
        assert_close(&(&c * &mask), &num, "dropout");
        assert!(dropout_mask::<f64>((3, 3), 0.0, &mut rng).iter().all(|&m| m == 1.0));
    }

    #[test]
    fn whole_head_gradients_match_finite_differences() {
        let mut rng = rng();
        // Two classes (one logit, sigmoid) and three (softmax), one and two hidden layers.
        for (hidden, classes) in [(vec![6], 2), (vec![7, 5], 2), (vec![6], 3), (vec![7, 5], 3)] {
            let loss_fn = crate::Loss::for_classes(classes);
            let mut head = Head::<f64>::new(8, &hidden, loss_fn.outputs(), 0.5, &mut rng);
            for l in &mut head.layers {
                l.bias.mapv_inplace(|_| rng.random_range(-0.5..0.5));
            }
            let x = random((5, 8), &mut rng);
            let labels: Vec<u32> = (0..5).map(|i| (i * 7 % classes) as u32).collect();
            let t = loss_fn.targets::<f64>(&labels, 0.1);
            // A fixed dropout draw makes the function deterministic for the finite differences.
            let mut seeded = ChaCha8Rng::seed_from_u64(3);
            let (z, trace) = head.forward_train(x.view(), Some(&mut seeded));
            let (_, dz) = loss_fn.forward(z.as_slice().unwrap(), &t, None);
            let grads = head.backward(&trace, Array2::from_shape_vec(z.dim(), dz).unwrap());
            let loss = |h: &Head<f64>| {
                let mut seeded = ChaCha8Rng::seed_from_u64(3);
                let (z, _) = h.forward_train(x.view(), Some(&mut seeded));
                loss_fn.forward(z.as_slice().unwrap(), &t, None).0
            };
            for (i, grad) in grads.iter().enumerate() {
                let mut k = head.layers[i].kernel.clone();
                let num = numeric(&mut k, |k| {
                    let mut h = head.clone();
                    h.layers[i].kernel = k.clone();
                    loss(&h)
                });
                assert_close(&grad.kernel, &num, &format!("{hidden:?}, {classes} classes, layer {i} kernel"));
                let mut b = head.layers[i].bias.clone();
                let num = numeric(&mut b, |b| {
                    let mut h = head.clone();
                    h.layers[i].bias = b.clone();
                    loss(&h)
                });
                assert_close(&grad.bias, &num, &format!("{hidden:?}, {classes} classes, layer {i} bias"));
            }
        }
    }

    #[test]
    fn inference_skips_dropout_and_matches_training_pass_without_it() {
        let mut rng = rng();
        let head = Head::<f64>::new(8, &[6], 4, 0.5, &mut rng);
        let x = random((3, 8), &mut rng);
        let (z, _) = head.forward_train(x.view(), None);
        let z2 = head.logits(x.view());
        assert_eq!(z2.dim(), (3, 4));
        assert!(z.iter().zip(&z2).all(|(a, b)| (a - b).abs() < 1e-12), "{z} vs {z2}");
    }

    #[test]
    fn glorot_uniform_limits_and_zero_bias() {
        let d = Dense::<f32>::glorot(8192, 256, &mut rng());
        let limit = (6.0f32 / (8192.0 + 256.0)).sqrt();
        assert!(d.kernel.iter().all(|v| v.abs() <= limit));
        let max = d.kernel.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.99 * limit, "spans the range");
        let mean = d.kernel.sum() / d.kernel.len() as f32;
        assert!(mean.abs() < 1e-4);
        assert!(d.bias.iter().all(|&b| b == 0.0));
    }
}
