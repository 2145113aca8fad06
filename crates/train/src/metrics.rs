//! How well a classifier does: the confusion matrix and what follows from it (accuracy,
//! per-class precision, recall and F1, macro-F1), top-k accuracy, and the mean loss, tallied
//! batch by batch so that nothing needs the whole data set in memory. The trainers' epoch
//! stats, their final reports and `predict` all count with [`Tally`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::loss::{Loss, argmax, cross_entropy_of_probabilities};

/// Counts of (true class, predicted class): rows are the true class, columns the prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Confusion(Vec<Vec<usize>>);

/// One class's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// Samples of this class (the support).
    pub samples: usize,
    /// Of them, predicted as this class.
    pub correct: usize,
    /// Of the samples predicted as this class, the fraction that are (0 when none is).
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

impl Confusion {
    pub fn new(classes: usize) -> Confusion {
        Confusion(vec![vec![0; classes]; classes])
    }

    pub fn add(&mut self, truth: u32, predicted: u32) {
        self.0[truth as usize][predicted as usize] += 1;
    }

    pub fn classes(&self) -> usize {
        self.0.len()
    }

    pub fn rows(&self) -> &[Vec<usize>] {
        &self.0
    }

    pub fn samples(&self) -> usize {
        self.0.iter().flatten().sum()
    }

    pub fn correct(&self) -> usize {
        (0..self.classes()).map(|i| self.0[i][i]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.samples())
    }

    pub fn per_class(&self) -> Vec<ClassReport> {
        (0..self.classes())
            .map(|c| {
                let samples: usize = self.0[c].iter().sum();
                let predicted: usize = self.0.iter().map(|row| row[c]).sum();
                let correct = self.0[c][c];
                let (precision, recall) = (ratio(correct, predicted), ratio(correct, samples));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassReport { samples, correct, precision, recall, f1 }
            })
            .collect()
    }

    /// The unweighted mean of the per-class F1 scores: every class counts the same, however few
    /// samples it has (honest under imbalance, unlike accuracy).
    pub fn macro_f1(&self) -> f64 {
        let per_class = self.per_class();
        per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len().max(1) as f64
    }
}

/// `a / b`, 0 for an empty denominator.
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The `k` of top-k accuracy for `classes` classes: 5, or fewer when there are fewer than 6
/// classes (top-N would always be right).
pub fn top_k_for(classes: usize) -> usize {
    5.min(classes.saturating_sub(1)).max(1)
}

/// Loss, confusion matrix and top-k hits, accumulated batch by batch (serialisable, for
/// checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    loss: Loss,
    loss_sum: f64,
    confusion: Confusion,
    top_k: usize,
    top_k_hits: usize,
}

impl Tally {
    pub fn new(loss: Loss) -> Tally {
        let classes = loss.classes();
        Tally { loss, loss_sum: 0.0, confusion: Confusion::new(classes), top_k: top_k_for(classes), top_k_hits: 0 }
    }

    /// A training batch: its mean loss (as the trainer computed it, with whatever smoothing or
    /// mixup it trains with) and its logits (`[n, outputs]`) against `labels`.
    pub fn add_batch(&mut self, mean_loss: f64, logits: &[f32], labels: &[u32]) {
        self.loss_sum += mean_loss * labels.len() as f64;
        self.count(logits, labels);
    }

    /// An evaluation batch: plain cross-entropy of `logits` against the hard `labels`.
    pub fn add_logits(&mut self, logits: &[f32], labels: &[u32]) {
        let (l, _) = self.loss.forward(logits, &self.loss.targets::<f32>(labels, 0.0), None);
        self.add_batch(l as f64, logits, labels);
    }

    /// Predicted probabilities (a classifier ONNX's output: `[n, 1]` for two classes, `[n, N]`
    /// otherwise) against `labels`; the loss is clipped like Keras'.
    pub fn add_probabilities(&mut self, probabilities: &[f32], labels: &[u32]) {
        let width = probabilities.len() / labels.len().max(1);
        for (p, &y) in probabilities.chunks_exact(width.max(1)).zip(labels) {
            self.loss_sum += cross_entropy_of_probabilities(p, y);
            let predicted = if width == 1 { u32::from(p[0] > 0.5) } else { argmax(p) };
            self.record(y, predicted, p);
        }
    }

    fn count(&mut self, logits: &[f32], labels: &[u32]) {
        let width = self.loss.outputs();
        for ((z, &y), predicted) in logits.chunks_exact(width).zip(labels).zip(self.loss.predict(logits)) {
            self.record(y, predicted, z);
        }
    }

    /// One sample; `scores` (logits or probabilities, one per output) rank the classes for top-k.
    fn record(&mut self, truth: u32, predicted: u32, scores: &[f32]) {
        self.confusion.add(truth, predicted);
        let hit = match scores {
            [_] => truth == predicted,
            _ => scores.iter().filter(|&&s| s > scores[truth as usize]).count() < self.top_k,
        };
        self.top_k_hits += usize::from(hit);
    }

    pub fn samples(&self) -> usize {
        self.confusion.samples()
    }

    pub fn correct(&self) -> usize {
        self.confusion.correct()
    }

    /// Mean loss per sample.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.samples().max(1) as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.samples().max(1) as f64
    }

    pub fn confusion(&self) -> &Confusion {
        &self.confusion
    }

    /// The full report, classes named in label order.
    pub fn report(&self, classes: &[String]) -> Evaluation {
        assert_eq!(classes.len(), self.confusion.classes(), "one name per class");
        let per_class = classes.iter().cloned().zip(self.confusion.per_class()).collect();
        Evaluation {
            samples: self.samples(),
            correct: self.correct(),
            accuracy: self.accuracy(),
            loss: self.loss(),
            top_k: TopK { k: self.top_k, accuracy: ratio(self.top_k_hits, self.samples()) },
            macro_f1: self.confusion.macro_f1(),
            per_class,
            classes: classes.to_vec(),
            confusion_matrix: self.confusion.clone(),
        }
    }
}

/// Top-k accuracy: the true class among the k highest scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    pub k: usize,
    pub accuracy: f64,
}

/// A classifier's scores on a labelled set (`metrics.json` of `predict`, and the trainers'
/// final validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub samples: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    pub top_k: TopK,
    pub macro_f1: f64,
    pub per_class: BTreeMap<String, ClassReport>,
    /// Class names in label order: the rows (true) and columns (predicted) of the matrix.
    pub classes: Vec<String>,
    pub confusion_matrix: Confusion,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_scores_by_hand() {
        // 3 classes; rows true: [[3, 1, 0], [0, 2, 2], [0, 0, 0]].
        let mut c = Confusion::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 2), (1, 2)] {
            c.add(t, p);
        }
        assert_eq!((c.samples(), c.correct()), (8, 5));
        assert_eq!(c.accuracy(), 5.0 / 8.0);
        let r = c.per_class();
        assert_eq!((r[0].precision, r[0].recall), (1.0, 0.75));
        assert!((r[0].f1 - 2.0 * 0.75 / 1.75).abs() < 1e-12);
        assert_eq!((r[1].precision, r[1].recall, r[1].samples), (2.0 / 3.0, 0.5, 4));
        // Nothing of class 2 and two wrongly predicted as it: all zero, no NaN.
        assert_eq!((r[2].precision, r[2].recall, r[2].f1, r[2].samples), (0.0, 0.0, 0.0, 0));
        let f1_1 = 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5);
        assert!((c.macro_f1() - (r[0].f1 + f1_1) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn tally_of_logits_probabilities_and_top_k() {
        let mut t = Tally::new(Loss::for_classes(2));
        t.add_logits(&[2.0, -1.0, 0.5], &[1, 0, 0]);
        assert_eq!((t.samples(), t.correct()), (3, 2));
        assert_eq!(t.confusion().rows(), [vec![1, 1], vec![0, 1]]);
        let (want, _) = Loss::Binary.forward(&[2.0f32, -1.0, 0.5], &[1.0, 0.0, 0.0], None);
        assert!((t.loss() - want as f64).abs() < 1e-7);

        let mut p = Tally::new(Loss::for_classes(2));
        p.add_probabilities(&[0.9, 0.2, 0.6], &[1, 0, 0]);
        assert_eq!(p.confusion(), t.confusion(), "probabilities > 0.5 are logits > 0");

        // 7 classes: top-5. The true class ranks 1st, 6th and 3rd.
        let mut t = Tally::new(Loss::for_classes(7));
        let logits = [
            [9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            [0.0, 0.0, 0.0, 3.0, 2.0, 1.0, 0.5],
        ];
        t.add_logits(logits.as_flattened(), &[0, 1, 5]);
        let r = t.report(&(0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
        assert_eq!((r.correct, r.top_k.k), (1, 5));
        assert_eq!(r.top_k.accuracy, 2.0 / 3.0);
        assert_eq!(r.per_class["c0"].recall, 1.0);
        assert_eq!(top_k_for(2), 1);
        assert_eq!(top_k_for(5), 4);
    }
}
