//! Per-epoch stats (Keras' epoch logs) and the bookkeeping around them that the training loop
//! ([`crate::fit`]) keeps: which epoch is best, how long ago that was (early stopping), and the
//! best epoch's weights and validation when they are to be exported.

use serde::{Deserialize, Serialize};

use crate::metrics::Tally;

/// One line of the history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based; 0 is the model before training (see [`History::start`]).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, as Keras reports it (with dropout and label
    /// smoothing, i.e. the objective being minimised; without the L2 penalty). Not a number
    /// (and left out of JSON) for epoch 0, which trained nothing.
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub loss: f64,
    /// Training accuracy over the epoch's batches (with dropout), as Keras reports it; not a
    /// number for epoch 0.
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub acc: f64,
    /// Cross-entropy on the validation set at the end of the epoch (inference mode).
    pub val_loss: f64,
    pub val_acc: f64,
    /// Learning rate of the epoch's last step; not a number for epoch 0.
    #[serde(default = "nan", skip_serializing_if = "is_nan")]
    pub lr: f64,
    pub seconds: f64,
}

fn nan() -> f64 {
    f64::NAN
}

fn is_nan(v: &f64) -> bool {
    v.is_nan()
}

impl EpochStats {
    /// Epoch `epoch` (0-based) from its training and validation tallies.
    pub fn new(epoch: usize, train: &Tally, validation: &Tally, lr: f64, seconds: f64) -> EpochStats {
        EpochStats {
            epoch: epoch + 1,
            loss: train.loss(),
            acc: train.accuracy(),
            val_loss: validation.loss(),
            val_acc: validation.accuracy(),
            lr,
            seconds,
        }
    }

    /// Epoch 0: the model before training, on the validation set.
    pub fn start(validation: &Tally, seconds: f64) -> EpochStats {
        EpochStats {
            epoch: 0,
            loss: f64::NAN,
            acc: f64::NAN,
            val_loss: validation.loss(),
            val_acc: validation.accuracy(),
            lr: f64::NAN,
            seconds,
        }
    }

    /// Better than `other` for keep-best: higher validation accuracy, ties broken by lower loss.
    pub fn beats(&self, other: &EpochStats) -> bool {
        self.val_acc > other.val_acc || (self.val_acc == other.val_acc && self.val_loss < other.val_loss)
    }
}

/// The per-epoch history of a run and, with keep-best, the best epoch's weights `W`.
pub struct History<W> {
    state: HistoryState,
    keep_best: bool,
    best_weights: Option<W>,
}

/// The serialisable part of a [`History`] (a checkpoint saves the kept weights apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryState {
    /// Epoch 0, when the model before training was evaluated.
    pub start: Option<EpochStats>,
    /// The trained epochs (epoch 0 is never one of them).
    pub epochs: Vec<EpochStats>,
    /// The best epoch so far (see [`EpochStats::beats`]), epoch 0 included when recorded.
    pub best: Option<EpochStats>,
    /// The last recorded epoch's validation, and the best one's with keep-best.
    pub last_validation: Option<Tally>,
    pub best_validation: Option<Tally>,
}

impl<W> History<W> {
    pub fn new(capacity: usize, keep_best: bool) -> Self {
        let epochs = Vec::with_capacity(capacity);
        let state = HistoryState { start: None, epochs, best: None, last_validation: None, best_validation: None };
        Self { state, keep_best, best_weights: None }
    }

    /// Epoch 0, the model before training: a candidate for the best epoch (so that keep-best
    /// never exports worse than the start), not a line of the history.
    pub fn start(&mut self, validation: &Tally, seconds: f64, weights: impl FnOnce() -> W) -> EpochStats {
        let stats = EpochStats::start(validation, seconds);
        self.consider(stats, validation, weights);
        self.state.start = Some(stats);
        stats
    }

    /// Appends an epoch; `weights` is called (to copy them) only when keep-best is on and this
    /// epoch is the best so far.
    pub fn record(&mut self, stats: EpochStats, validation: &Tally, weights: impl FnOnce() -> W) {
        self.consider(stats, validation, weights);
        self.state.epochs.push(stats);
    }

    fn consider(&mut self, stats: EpochStats, validation: &Tally, weights: impl FnOnce() -> W) {
        if self.state.best.is_none_or(|b| stats.beats(&b)) {
            self.state.best = Some(stats);
            if self.keep_best {
                self.best_weights = Some(weights());
                self.state.best_validation = Some(validation.clone());
            }
        }
        self.state.last_validation = Some(validation.clone());
    }

    pub fn epochs(&self) -> &[EpochStats] {
        &self.state.epochs
    }

    /// Epochs since the best one (0 when the last epoch is the best).
    pub fn since_best(&self) -> usize {
        let last = self.state.epochs.last().map_or(0, |e| e.epoch);
        self.state.best.map_or(0, |b| last - b.epoch)
    }

    /// What a checkpoint saves besides the kept best weights (see [`History::best_weights`]).
    pub fn state(&self) -> &HistoryState {
        &self.state
    }

    /// The best epoch's weights, when keep-best is on and an epoch has been recorded.
    pub fn best_weights(&self) -> Option<&W> {
        self.best_weights.as_ref()
    }

    /// A history continued from a checkpoint.
    pub fn resume(mut state: HistoryState, capacity: usize, keep_best: bool, best_weights: Option<W>) -> Self {
        state.epochs.reserve(capacity.saturating_sub(state.epochs.len()));
        Self { state, keep_best, best_weights: best_weights.filter(|_| keep_best) }
    }

    /// The finished run: the kept best epoch's weights, or `last` (the trainer's final weights).
    pub fn finish(self, last: impl FnOnce() -> W, seconds: f64) -> Fit<W> {
        let HistoryState { start, epochs, best, last_validation, best_validation } = self.state;
        let best = best.expect("at least one epoch recorded");
        let (weights, exported, validation) = match (self.best_weights, best_validation) {
            (Some(w), Some(v)) => (w, best, v),
            _ => (last(), *epochs.last().unwrap_or(&best), last_validation.expect("an epoch recorded")),
        };
        Fit { weights, start, history: epochs, best, exported, validation, seconds }
    }
}

/// A finished training run.
pub struct Fit<W> {
    /// The exported weights: the last epoch's, or the best epoch's with keep-best.
    pub weights: W,
    /// Epoch 0, when the model before training was evaluated.
    pub start: Option<EpochStats>,
    /// The trained epochs.
    pub history: Vec<EpochStats>,
    /// The epoch with the best validation accuracy (ties: lower validation loss); epoch 0
    /// when the model before training was recorded and never beaten.
    pub best: EpochStats,
    /// The epoch whose weights are in `weights`.
    pub exported: EpochStats,
    /// The exported weights on the validation set.
    pub validation: Tally,
    /// Training and validation, all epochs.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Loss;

    fn epoch(epoch: usize, val_acc: f64, val_loss: f64) -> EpochStats {
        EpochStats { epoch, loss: 0.0, acc: 0.0, val_loss, val_acc, lr: 0.0, seconds: 0.0 }
    }

    fn tally() -> Tally {
        Tally::new(Loss::Binary)
    }

    #[test]
    fn keeps_the_best_epoch_ties_going_to_the_lower_loss() {
        let mut kept = History::new(4, true);
        let mut copies = 0;
        let mut since = Vec::new();
        for (i, (acc, loss)) in [(0.8, 0.5), (0.9, 0.4), (0.9, 0.3), (0.9, 0.35), (0.7, 0.1)].into_iter().enumerate() {
            kept.record(epoch(i + 1, acc, loss), &tally(), || {
                copies += 1;
                i
            });
            since.push(kept.since_best());
        }
        assert_eq!(copies, 3, "weights copied only for new bests");
        assert_eq!(since, [0, 0, 0, 1, 2]);
        let fit = kept.finish(|| 99, 1.0);
        assert_eq!((fit.weights, fit.best.epoch, fit.exported.epoch), (2, 3, 3));
        let mut last = History::new(4, false);
        last.record(epoch(1, 0.9, 0.1), &tally(), || unreachable!("keep-best off: never copies"));
        last.record(epoch(2, 0.5, 0.9), &tally(), || unreachable!("keep-best off: never copies"));
        let fit = last.finish(|| 99, 1.0);
        assert_eq!((fit.weights, fit.best.epoch, fit.exported.epoch, fit.history.len()), (99, 1, 2, 2));
    }

    #[test]
    fn the_start_is_exported_when_no_epoch_beats_it() {
        let mut t = Tally::new(Loss::Binary);
        t.add_logits(&[3.0, -3.0], &[1, 0]);
        let mut h = History::new(2, true);
        h.start(&t, 0.5, || "start");
        assert!(h.epochs().is_empty(), "epoch 0 is not a line of the history");
        h.record(epoch(1, 0.5, 0.7), &tally(), || "epoch 1");
        assert_eq!(h.since_best(), 1);
        let fit = h.finish(|| "last", 1.0);
        assert_eq!((fit.weights, fit.exported.epoch, fit.validation.accuracy()), ("start", 0, 1.0));
        let json = serde_json::to_string(&fit.exported).unwrap();
        assert!(!json.contains("\"loss\"") && json.contains("\"val_loss\""), "{json}");
        let back: EpochStats = serde_json::from_str(&json).unwrap();
        assert!(back.loss.is_nan() && back.val_acc == 1.0);
    }
}
