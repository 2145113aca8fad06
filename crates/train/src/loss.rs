//! Cross-entropy from the logits, exact and finite for any logit:
//!
//! * two classes (the recipe): one logit `z` per sample, the probability of the class labelled 1
//!   is `sigmoid(z)` (Keras' `Dense(1, sigmoid)` + `binary_crossentropy`);
//! * N > 2 classes: N logits, probabilities `softmax(z)` (`Dense(N, softmax)` +
//!   `categorical_crossentropy`), computed through log-sum-exp.
//!
//! Targets are probabilities (hard labels, smoothed labels or mixup blends alike): `[n]` for two
//! classes, `[n, N]` rows summing to 1 otherwise. Optional per-sample weights (Keras'
//! `class_weight`) scale each sample's loss; the mean is over the batch size, as Keras takes it.

use serde::{Deserialize, Serialize};

use crate::real::Real;

/// Which cross-entropy a classifier of some number of classes trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Loss {
    /// Two classes: one logit, sigmoid.
    Binary,
    /// More than two classes: one logit per class, softmax.
    Categorical { classes: usize },
}

impl Loss {
    /// The loss of a classifier over `classes` classes (at least 2).
    pub fn for_classes(classes: usize) -> Loss {
        assert!(classes >= 2, "a classifier needs at least two classes");
        if classes == 2 { Loss::Binary } else { Loss::Categorical { classes } }
    }

    /// The loss of a classifier with `outputs` logits (1: two classes).
    pub fn for_outputs(outputs: usize) -> Loss {
        if outputs == 1 { Loss::Binary } else { Loss::for_classes(outputs) }
    }

    pub fn classes(self) -> usize {
        match self {
            Loss::Binary => 2,
            Loss::Categorical { classes } => classes,
        }
    }

    /// Logits per sample: 1 (of the class labelled 1) for two classes, else one per class.
    pub fn outputs(self) -> usize {
        match self {
            Loss::Binary => 1,
            Loss::Categorical { classes } => classes,
        }
    }

    /// Target probabilities for hard labels with label smoothing `s`: `y·(1-s) + s/2` for two
    /// classes (Keras' `binary_crossentropy(label_smoothing=s)`), the one-hot row times `1-s`
    /// plus `s/N` otherwise.
    pub fn targets<T: Real>(self, labels: &[u32], smoothing: f64) -> Vec<T> {
        let s = T::of(smoothing);
        match self {
            Loss::Binary => labels.iter().map(|&y| T::of(y as f64) * (T::one() - s) + T::of(0.5) * s).collect(),
            Loss::Categorical { classes } => {
                let (on, off) = (T::one() - s + s / T::of(classes as f64), s / T::of(classes as f64));
                let mut t = vec![off; labels.len() * classes];
                for (row, &y) in t.chunks_exact_mut(classes).zip(labels) {
                    row[y as usize] = on;
                }
                t
            }
        }
    }

    /// Mean loss of `logits` (`[n, outputs]`, row-major) against `targets`, and its gradient
    /// with respect to the logits. `weights`: one per sample, or `None` for all 1.
    pub fn forward<T: Real>(self, logits: &[T], targets: &[T], weights: Option<&[T]>) -> (T, Vec<T>) {
        match self {
            Loss::Binary => binary_cross_entropy(logits, targets, weights),
            Loss::Categorical { classes } => softmax_cross_entropy(logits, targets, classes, weights),
        }
    }

    /// The predicted class of each sample: logit > 0 for two classes, else the largest logit
    /// (the first one on ties).
    pub fn predict<T: Real>(self, logits: &[T]) -> Vec<u32> {
        match self {
            Loss::Binary => logits.iter().map(|&z| u32::from(z > T::zero())).collect(),
            Loss::Categorical { classes } => logits.chunks_exact(classes).map(argmax).collect(),
        }
    }

    /// Every class's probability, `[n, N]` row-major, from the logits.
    pub fn probabilities<T: Real>(self, logits: &[T]) -> Vec<T> {
        match self {
            Loss::Binary => logits
                .iter()
                .flat_map(|&z| {
                    let p = sigmoid(z);
                    [T::one() - p, p]
                })
                .collect(),
            Loss::Categorical { classes } => logits.chunks_exact(classes).flat_map(softmax).collect(),
        }
    }
}

/// How much each class's samples count in the loss (Keras' `class_weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// Every sample counts the same.
    #[default]
    None,
    /// Class `c` weighs `n / (classes · n_c)` (scikit-learn's "balanced"): every class
    /// contributes the same total, however few samples it has.
    Balanced,
}

impl ClassWeight {
    pub const NAMES: &'static [&'static str] = &["none", "balanced"];

    /// Per-class weights for these class counts (`None` when all are 1).
    pub fn weights(self, counts: &[usize]) -> Option<Vec<f32>> {
        match self {
            ClassWeight::None => None,
            ClassWeight::Balanced => {
                let n: usize = counts.iter().sum();
                let k = counts.len() as f64;
                Some(counts.iter().map(|&c| if c == 0 { 0.0 } else { (n as f64 / (k * c as f64)) as f32 }).collect())
            }
        }
    }
}

impl std::str::FromStr for ClassWeight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(ClassWeight::None),
            "balanced" => Ok(ClassWeight::Balanced),
            _ => Err(format!("unknown class weight '{s}' (expected none or balanced)")),
        }
    }
}

impl std::fmt::Display for ClassWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

/// What a trainer minimises: the cross-entropy for its classes, with label smoothing and class
/// weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub loss: Loss,
    pub smoothing: f64,
    /// Per class (`None`: all 1).
    pub class_weights: Option<Vec<f32>>,
}

impl Objective {
    /// For training data with `class_counts` samples per class.
    pub fn new(loss: Loss, smoothing: f64, class_weight: ClassWeight, class_counts: &[usize]) -> Objective {
        Objective { loss, smoothing, class_weights: class_weight.weights(class_counts) }
    }

    pub fn targets(&self, labels: &[u32]) -> Vec<f32> {
        self.loss.targets(labels, self.smoothing)
    }

    pub fn sample_weights(&self, labels: &[u32]) -> Option<Vec<f32>> {
        self.class_weights.as_ref().map(|w| labels.iter().map(|&l| w[l as usize]).collect())
    }

    /// Mean loss of a batch with hard labels, and its gradient with respect to the logits.
    pub fn forward(&self, logits: &[f32], labels: &[u32]) -> (f32, Vec<f32>) {
        self.loss.forward(logits, &self.targets(labels), self.sample_weights(labels).as_deref())
    }
}

/// The index of the largest value (the first one on ties).
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `sigmoid(z)` without overflow for large `|z|`.
pub fn sigmoid<T: Real>(z: T) -> T {
    if z >= T::zero() {
        T::one() / (T::one() + (-z).exp())
    } else {
        let e = z.exp();
        e / (T::one() + e)
    }
}

/// `softmax(z)` of one row, shifted by its maximum so that no `exp` overflows.
pub fn softmax<T: Real>(z: &[T]) -> Vec<T> {
    let m = z.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
    let e: Vec<T> = z.iter().map(|&v| (v - m).exp()).collect();
    let sum = e.iter().fold(T::zero(), |s, &v| s + v);
    e.into_iter().map(|v| v / sum).collect()
}

/// Mean binary cross-entropy of `sigmoid(z)` against targets `t` (in [0, 1]), from the logits:
/// `max(z, 0) - z·t + ln(1 + e^-|z|)`. Gradient `w·(sigmoid(z) - t) / n`.
pub fn binary_cross_entropy<T: Real>(z: &[T], t: &[T], weights: Option<&[T]>) -> (T, Vec<T>) {
    assert_eq!(z.len(), t.len());
    let n = T::of(z.len() as f64);
    let mut loss = T::zero();
    let grad = z
        .iter()
        .zip(t)
        .enumerate()
        .map(|(i, (&z, &t))| match weights {
            // Summed term by term in this order: the two-class recipe's numbers stay bit for bit.
            None => {
                loss = loss + z.max(T::zero()) - z * t + (-z.abs()).exp().ln_1p();
                (sigmoid(z) - t) / n
            }
            Some(w) => {
                loss += w[i] * (z.max(T::zero()) - z * t + (-z.abs()).exp().ln_1p());
                w[i] * (sigmoid(z) - t) / n
            }
        })
        .collect();
    (loss / n, grad)
}

/// Mean categorical cross-entropy of `softmax(z)` against target rows `t`, `k` classes, from the
/// logits: per row `Σ t·(lse(z) - z)` with `lse(z) = max(z) + ln Σ e^(z - max z)`. Gradient
/// `w·(softmax(z)·Σt - t) / n`.
pub fn softmax_cross_entropy<T: Real>(z: &[T], t: &[T], k: usize, weights: Option<&[T]>) -> (T, Vec<T>) {
    assert!(k > 0 && z.len() == t.len() && z.len().is_multiple_of(k), "logits and targets [n, {k}]");
    let rows = z.len() / k;
    let n = T::of(rows as f64);
    let mut loss = T::zero();
    let mut grad = vec![T::zero(); z.len()];
    for (i, ((z, t), g)) in z.chunks_exact(k).zip(t.chunks_exact(k)).zip(grad.chunks_exact_mut(k)).enumerate() {
        let m = z.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        let sum = z.iter().fold(T::zero(), |s, &v| s + (v - m).exp());
        let lse = m + sum.ln();
        let mass = t.iter().fold(T::zero(), |s, &v| s + v);
        let w = weights.map_or(T::one(), |w| w[i]);
        let row_loss = z.iter().zip(t).fold(T::zero(), |s, (&z, &t)| s + t * (lse - z));
        loss += w * row_loss;
        for ((g, &z), &t) in g.iter_mut().zip(z).zip(t) {
            *g = w * ((z - m).exp() / sum * mass - t) / n;
        }
    }
    (loss / n, grad)
}

/// Cross-entropy of one sample from its predicted probabilities (e.g. a classifier ONNX's
/// output), clipped to `[1e-7, 1 - 1e-7]` as Keras does, so a confident mistake costs ~16, not ∞.
/// `probabilities` is `[p]` (of the class labelled 1) for two classes, else one per class.
pub fn cross_entropy_of_probabilities(probabilities: &[f32], label: u32) -> f64 {
    let clip = |p: f32| (p as f64).clamp(1e-7, 1.0 - 1e-7);
    match probabilities {
        [p] => -(if label == 1 { clip(*p).ln() } else { (1.0 - clip(*p)).ln() }),
        ps => -clip(ps[label as usize]).ln(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `f` at every element of `x`.
    fn numeric(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        const H: f64 = 1e-6;
        (0..x.len())
            .map(|i| {
                let mut p = x.to_vec();
                p[i] += H;
                let plus = f(&p);
                p[i] -= 2.0 * H;
                (plus - f(&p)) / (2.0 * H)
            })
            .collect()
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * scale, "{what}: analytic {x} vs numeric {y}");
        }
    }

    #[test]
    fn binary_gradient_matches_finite_differences_and_is_stable() {
        let z = [-3.0, -0.5, 0.0, 0.7, 4.0, 30.0];
        let t = [0.0, 1.0, 1.0, 0.0, 0.95, 0.05];
        let w = [1.0, 2.0, 0.5, 1.0, 3.0, 1.0];
        for weights in [None, Some(&w[..])] {
            let (_, grad) = binary_cross_entropy(&z, &t, weights);
            let num = numeric(&z, |z| binary_cross_entropy(z, &t, weights).0);
            assert_close(&grad, &num, "bce");
        }
        // Matches the textbook formula where that is finite.
        let (l, _) = binary_cross_entropy(&[0.3f64], &[1.0], None);
        assert!((l - -(sigmoid(0.3f64).ln())).abs() < 1e-12);
        // No overflow or log(0) for huge logits.
        let (l, g) = binary_cross_entropy(&[1e4f32, -1e4], &[0.0, 1.0], None);
        assert!((l - 1e4).abs() < 1.0 && g.iter().all(|g| g.is_finite()), "{l} {g:?}");
    }

    #[test]
    fn softmax_gradient_matches_finite_differences_and_is_stable() {
        let z = [0.5, -1.0, 2.0, 0.0, 3.0, 3.0, -2.0, 1.0, 0.25];
        let loss = Loss::for_classes(3);
        let hard = loss.targets::<f64>(&[2, 0, 1], 0.0);
        let smooth = loss.targets::<f64>(&[2, 0, 1], 0.1);
        let w = [1.0, 0.5, 2.0];
        for (t, weights) in [(&hard, None), (&smooth, None), (&smooth, Some(&w[..]))] {
            let (_, grad) = loss.forward(&z, t, weights);
            let num = numeric(&z, |z| loss.forward(z, t, weights).0);
            assert_close(&grad, &num, "softmax cross-entropy");
        }
        // -ln softmax(z)[y], the textbook formula.
        let (l, _) = loss.forward(&z[..3], &hard[..3], None);
        assert!((l - -(softmax(&z[..3])[2]).ln()).abs() < 1e-12);
        // Huge logits: exact and finite.
        let (l, g) = softmax_cross_entropy(&[1e4f32, -1e4, 0.0], &[0.0, 1.0, 0.0], 3, None);
        assert!((l - 2e4).abs() < 1.0 && g.iter().all(|g| g.is_finite()), "{l} {g:?}");
    }

    #[test]
    fn two_softmax_classes_equal_the_sigmoid() {
        // softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: the same loss either way.
        for z in [-4.0f64, -0.3, 0.0, 2.5] {
            let (b, _) = binary_cross_entropy(&[z], &[1.0], None);
            let (s, _) = softmax_cross_entropy(&[0.0, z], &[0.0, 1.0], 2, None);
            assert!((b - s).abs() < 1e-12, "{z}");
        }
    }

    #[test]
    fn targets_predictions_and_probabilities() {
        let bin = Loss::for_classes(2);
        assert_eq!((bin, bin.outputs()), (Loss::Binary, 1));
        assert_eq!(bin.targets::<f64>(&[0, 1], 0.25), [0.125, 0.875]);
        assert_eq!(bin.predict(&[-0.1f32, 0.0, 0.3]), [0, 0, 1]);
        let p = bin.probabilities(&[0.0f64]);
        assert_eq!(p, [0.5, 0.5]);
        let cat = Loss::for_classes(4);
        assert_eq!(cat.outputs(), 4);
        let t = cat.targets::<f64>(&[1], 0.2);
        assert!((t[1] - 0.85).abs() < 1e-12 && (t[0] - 0.05).abs() < 1e-12);
        assert_eq!(cat.predict(&[0.0f32, 2.0, 2.0, 1.0, 5.0, 0.0, 0.0, 0.0]), [1, 0]);
        let p = cat.probabilities(&[1.0f64, 1.0, 1.0, 1.0]);
        assert!(p.iter().all(|&v| (v - 0.25).abs() < 1e-12));
    }

    #[test]
    fn balanced_class_weights_make_every_class_count_the_same() {
        let w = ClassWeight::Balanced.weights(&[30, 10, 20]).unwrap();
        assert_eq!(w, [60.0 / 90.0, 2.0, 1.0]);
        // Each class's total weight is n / k.
        for (c, &n) in [30.0f32, 10.0, 20.0].iter().enumerate() {
            assert!((w[c] * n - 20.0).abs() < 1e-4);
        }
        assert_eq!(ClassWeight::None.weights(&[3, 1]), None);
        assert_eq!("balanced".parse::<ClassWeight>().unwrap().to_string(), "balanced");
    }

    #[test]
    fn clipped_cross_entropy_of_probabilities() {
        assert!((cross_entropy_of_probabilities(&[0.9], 1) - -(0.9f64.ln())).abs() < 1e-6);
        assert!((cross_entropy_of_probabilities(&[0.0], 1) - -(1e-7f64.ln())).abs() < 1e-6);
        assert!(cross_entropy_of_probabilities(&[1.0], 0).is_finite());
        assert!((cross_entropy_of_probabilities(&[0.2, 0.5, 0.3], 2) - -(0.3f64.ln())).abs() < 1e-6);
    }
}
