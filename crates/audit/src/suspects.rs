//! Photos whose label is likely wrong, confident-learning style (Northcutt et al., JAIR 2021):
//!
//! 1. Out-of-fold probabilities: the photos are cut into `folds` parts, stratified by class;
//!    a multinomial logistic regression (softmax; sigmoid for two classes: sd-train's loss and
//!    RMSprop, L2 on the weights) is trained on all parts but one and predicts that one. So every
//!    photo is judged by a model that never saw its label.
//! 2. A photo is a suspect when that model predicts another class (cleanlab's
//!    `predicted_neq_given`); the predicted class is the suggested label.
//! 3. Suspects are ranked by self-confidence, `1 - p(given label)`, the most suspicious first.
//!
//! Calibrated on the shared flowers set with 5% of the training labels flipped (VGG16 at 150,
//! crates/audit/README.md): confident learning's per-class thresholds (a suspect only where
//! another class reaches its mean self-confidence) kept 190 photos and 71% of the flips;
//! predicted-not-given keeps about 400 and ranks 83% of the flips in the top 150. The features
//! are square-rooted before they are scaled (power normalisation, which also separates
//! duplicates, see [`crate::duplicates`]) and the L2 penalty is strong (0.1): each lifts recall
//! at 150 by one to three points.
//!
//! Deterministic for a seed: the folds and each fold's batch order come from ChaCha streams of
//! it, and every sum runs in a fixed order.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sd_data::layout::audit::CrossValidation;
use sd_train::optim::Param;
use sd_train::{Loss, Optimizer, OptimizerState, Regularization, Schedule};

/// The features the classifier sees: the [`crate::duplicates::embed`]ding (square roots, unit
/// rows), then each column scaled to mean 0 and standard deviation 1 over all photos (no labels
/// are used, so this leaks nothing between folds).
pub fn standardize(pooled: ArrayView2<f32>) -> Array2<f32> {
    let mut x = crate::duplicates::embed(pooled);
    let n = x.nrows().max(1) as f32;
    let mean = x.sum_axis(Axis(0)) / n;
    x -= &mean;
    let std = x.mapv(|v| v * v).sum_axis(Axis(0)).mapv(|s| (s / n).sqrt().max(1e-6));
    x /= &std;
    x
}

/// Fold of each photo: per class, the photos in a seeded random order dealt round-robin.
pub fn assign_folds(labels: &[u32], folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut fold = vec![0; labels.len()];
    let mut next = 0;
    for class in 0..classes as u32 {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        // Continue the deal where the last class ended, so that small classes do not all
        // start in fold 0.
        for i in members {
            fold[i] = next % folds;
            next += 1;
        }
    }
    fold
}

/// Each photo's class probabilities (`[N, classes]`) from a model trained without it.
pub fn out_of_fold(x: ArrayView2<f32>, labels: &[u32], classes: usize, cv: &CrossValidation) -> Array2<f32> {
    let folds = assign_folds(labels, cv.folds, cv.seed);
    let loss = Loss::for_classes(classes);
    let mut probs = Array2::zeros((labels.len(), classes));
    for f in 0..cv.folds {
        let (train, held): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| folds[i] != f);
        if held.is_empty() || train.is_empty() {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cv.seed);
        rng.set_stream(1 + f as u64);
        let model = Logistic::train(x, labels, &train, loss, cv, &mut rng);
        let p = model.probabilities(&x.select(Axis(0), &held));
        for (row, &i) in p.outer_iter().zip(&held) {
            probs.row_mut(i).assign(&row);
        }
    }
    probs
}

/// A linear classifier: `logits = x·W + b`.
struct Logistic {
    loss: Loss,
    kernel: Array2<f32>,
    bias: Array1<f32>,
}

impl Logistic {
    fn train(
        x: ArrayView2<f32>,
        labels: &[u32],
        rows: &[usize],
        loss: Loss,
        cv: &CrossValidation,
        rng: &mut ChaCha8Rng,
    ) -> Logistic {
        let outputs = loss.outputs();
        let mut m = Logistic { loss, kernel: Array2::zeros((x.ncols(), outputs)), bias: Array1::zeros(outputs) };
        let regularization = Regularization { weight_decay: 0.0, l2: cv.l2 };
        let mut optimizer = OptimizerState::<f32>::new(Optimizer::RMSPROP, regularization, [m.kernel.len(), outputs]);
        let schedule = Schedule::Cosine { min_factor: 0.0 };
        let batch = cv.batch_size.max(1);
        let total = cv.epochs * rows.len().div_ceil(batch);
        let mut order = rows.to_vec();
        let mut step = 0;
        for epoch in 0..cv.epochs {
            order.shuffle(rng);
            for chunk in order.chunks(batch) {
                let xb = x.select(Axis(0), chunk);
                let yb: Vec<u32> = chunk.iter().map(|&i| labels[i]).collect();
                let logits = xb.dot(&m.kernel) + &m.bias;
                let targets = loss.targets::<f32>(&yb, 0.0);
                let (_, grad) = loss.forward(logits.as_slice().expect("standard layout"), &targets, None);
                let grad = Array2::from_shape_vec((chunk.len(), outputs), grad).expect("one gradient per logit");
                let grad_kernel = xb.t().dot(&grad);
                let grad_bias = grad.sum_axis(Axis(0));
                let lr = schedule.lr(cv.learning_rate, step, total, epoch);
                optimizer.step(
                    [
                        Param {
                            value: m.kernel.as_slice_mut().expect("standard layout"),
                            grad: grad_kernel.as_standard_layout().as_slice().expect("standard layout"),
                            kernel: true,
                        },
                        Param {
                            value: m.bias.as_slice_mut().expect("contiguous"),
                            grad: grad_bias.as_slice().expect("contiguous"),
                            kernel: false,
                        },
                    ],
                    lr,
                );
                step += 1;
            }
        }
        m
    }

    fn probabilities(&self, x: &Array2<f32>) -> Array2<f32> {
        let logits = x.dot(&self.kernel) + &self.bias;
        let p = self.loss.probabilities(logits.as_slice().expect("standard layout"));
        Array2::from_shape_vec((x.nrows(), self.loss.classes()), p).expect("one row per photo")
    }
}

/// A photo whose label is likely wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Suspect {
    pub index: usize,
    pub label: u32,
    /// The class the model predicts instead.
    pub suggested: u32,
    /// `1 - p(label)`: higher is more suspicious.
    pub score: f32,
}

/// The suspects among photos with these out-of-fold probabilities, most suspicious first
/// (ties in photo order).
pub fn rank(probs: ArrayView2<f32>, labels: &[u32]) -> Vec<Suspect> {
    let mut out: Vec<Suspect> = probs
        .outer_iter()
        .zip(labels)
        .enumerate()
        .filter_map(|(index, (p, &label))| {
            let predicted = sd_train::loss::argmax(p.as_slice()?);
            (predicted != label).then(|| Suspect { index, label, suggested: predicted, score: 1.0 - p[label as usize] })
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::Rng;

    #[test]
    fn another_predicted_class_makes_a_suspect_ranked_by_doubt() {
        let probs = array![
            [0.9, 0.05, 0.05], // a, sure
            [0.4, 0.35, 0.25], // a, unsure but right
            [0.1, 0.8, 0.1],   // labelled a, looks b: suspect, score 0.9
            [0.1, 0.85, 0.05], // b
            [0.45, 0.2, 0.35], // labelled c, looks a: suspect, score 0.65
            [0.3, 0.1, 0.6],   // labelled b, looks c: suspect, score 0.9 (a tie: photo order)
        ];
        let s = rank(probs.view(), &[0, 0, 0, 1, 2, 1]);
        assert_eq!(
            s.iter().map(|s| (s.index, s.label, s.suggested)).collect::<Vec<_>>(),
            [(2, 0, 1), (5, 1, 2), (4, 2, 0)]
        );
        assert!((s[0].score - 0.9).abs() < 1e-6 && (s[2].score - 0.65).abs() < 1e-6);
        // Two classes come as two columns too.
        let s = rank(array![[0.3, 0.7], [0.9, 0.1]].view(), &[0, 0]);
        assert_eq!((s.len(), s[0].index, s[0].suggested), (1, 0, 1));
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let labels: Vec<u32> = (0..50).map(|i| u32::from(i >= 40)).collect();
        let f = assign_folds(&labels, 5, 3);
        for fold in 0..5 {
            let members: Vec<u32> = (0..50).filter(|&i| f[i] == fold).map(|i| labels[i]).collect();
            assert_eq!(members.len(), 10);
            assert_eq!(members.iter().filter(|&&l| l == 1).count(), 2);
        }
        assert_eq!(f, assign_folds(&labels, 5, 3));
        assert_ne!(f, assign_folds(&labels, 5, 4));
    }

    /// Three well-separated clusters with some labels flipped: the flipped photos are the top
    /// suspects, with their true class suggested, and the same seed gives the same ranking.
    #[test]
    fn flipped_labels_are_found_out_of_fold() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (per_class, classes, dims) = (40, 3, 6);
        let mut x = Array2::<f32>::zeros((per_class * classes, dims));
        let mut truth = Vec::new();
        for (i, mut row) in x.outer_iter_mut().enumerate() {
            let c = i / per_class;
            truth.push(c as u32);
            for (d, v) in row.iter_mut().enumerate() {
                *v = if d == c { 3.0 } else { 0.0 } + rng.random::<f32>() * 1.5;
            }
        }
        let flipped = [3usize, 50, 77, 100, 118];
        let mut labels = truth.clone();
        for &i in &flipped {
            labels[i] = (labels[i] + 1) % classes as u32;
        }
        let x = standardize(x.view());
        let cv = CrossValidation::default();
        let probs = out_of_fold(x.view(), &labels, classes, &cv);
        let s = rank(probs.view(), &labels);
        let mut top: Vec<usize> = s.iter().take(flipped.len()).map(|s| s.index).collect();
        top.sort();
        assert_eq!(top, flipped, "{s:?}");
        assert!(s.iter().take(flipped.len()).all(|s| s.suggested == truth[s.index]));
        assert_eq!(probs, out_of_fold(x.view(), &labels, classes, &cv));
        // Two classes train the sigmoid form.
        let two: Vec<usize> = (0..80).collect();
        let labels2: Vec<u32> = two.iter().map(|&i| u32::from(truth[i] == 1) ^ u32::from(i == 7)).collect();
        let probs = out_of_fold(x.select(Axis(0), &two).view(), &labels2, 2, &cv);
        assert_eq!(rank(probs.view(), &labels2)[0].index, 7);
    }
}
