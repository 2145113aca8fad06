//! Per-epoch stats (Keras' epoch logs) and the bookkeeping around them that both trainers
//! share: which epoch is best, and keeping its weights when asked.

use serde::{Deserialize, Serialize};

use crate::metrics::Tally;

/// One line of the history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches, as Keras reports it (with dropout and label
    /// smoothing, i.e. the objective being minimised; without the L2 penalty).
    pub loss: f64,
    /// Training accuracy over the epoch's batches (with dropout), as Keras reports it.
    pub acc: f64,
    /// Cross-entropy on the validation set at the end of the epoch (inference mode).
    pub val_loss: f64,
    pub val_acc: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    pub seconds: f64,
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

    /// Better than `other` for keep-best: higher validation accuracy, ties broken by lower loss.
    pub fn beats(&self, other: &EpochStats) -> bool {
        self.val_acc > other.val_acc || (self.val_acc == other.val_acc && self.val_loss < other.val_loss)
    }
}

/// The per-epoch history of a run and, with keep-best, the best epoch's weights `W`.
pub struct History<W> {
    epochs: Vec<EpochStats>,
    /// Index into `epochs` of the best one so far (see [`EpochStats::beats`]).
    best: usize,
    keep_best: bool,
    best_weights: Option<W>,
}

impl<W> History<W> {
    pub fn new(capacity: usize, keep_best: bool) -> Self {
        Self { epochs: Vec::with_capacity(capacity), best: 0, keep_best, best_weights: None }
    }

    /// Appends an epoch; `weights` is called (to copy them) only when keep-best is on and this
    /// epoch is the best so far.
    pub fn record(&mut self, stats: EpochStats, weights: impl FnOnce() -> W) {
        if self.epochs.get(self.best).is_none_or(|b| stats.beats(b)) {
            self.best = self.epochs.len();
            if self.keep_best {
                self.best_weights = Some(weights());
            }
        }
        self.epochs.push(stats);
    }

    pub fn epochs(&self) -> &[EpochStats] {
        &self.epochs
    }

    /// What a checkpoint saves besides the kept best weights (see [`History::best_weights`]).
    pub fn state(&self) -> HistoryState {
        HistoryState { epochs: self.epochs.clone(), best: self.best }
    }

    /// The best epoch's weights, when keep-best is on and an epoch has been recorded.
    pub fn best_weights(&self) -> Option<&W> {
        self.best_weights.as_ref()
    }

    /// A history continued from a checkpoint.
    pub fn resume(state: HistoryState, capacity: usize, keep_best: bool, best_weights: Option<W>) -> Self {
        let HistoryState { mut epochs, best } = state;
        epochs.reserve(capacity.saturating_sub(epochs.len()));
        Self { epochs, best, keep_best, best_weights: best_weights.filter(|_| keep_best) }
    }

    /// The finished run: the kept best epoch's weights, or `last` (the trainer's final weights).
    pub fn finish(self, last: impl FnOnce() -> W, seconds: f64) -> Fit<W> {
        let (weights, exported) = match self.best_weights {
            Some(w) => (w, self.best),
            None => (last(), self.epochs.len().saturating_sub(1)),
        };
        Fit { weights, history: self.epochs, best: self.best, exported, seconds }
    }
}

/// The serialisable part of a [`History`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryState {
    pub epochs: Vec<EpochStats>,
    pub best: usize,
}

/// A finished training run.
pub struct Fit<W> {
    /// The exported weights: the last epoch's, or the best epoch's with keep-best.
    pub weights: W,
    pub history: Vec<EpochStats>,
    /// Index into `history` of the best validation accuracy (ties: lower validation loss).
    pub best: usize,
    /// Index into `history` of the epoch whose weights are in `weights`.
    pub exported: usize,
    /// Training and validation, all epochs.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, val_acc: f64, val_loss: f64) -> EpochStats {
        EpochStats { epoch, loss: 0.0, acc: 0.0, val_loss, val_acc, lr: 0.0, seconds: 0.0 }
    }

    #[test]
    fn keeps_the_best_epoch_ties_going_to_the_lower_loss() {
        let mut kept = History::new(4, true);
        let mut copies = 0;
        for (i, (acc, loss)) in [(0.8, 0.5), (0.9, 0.4), (0.9, 0.3), (0.9, 0.35), (0.7, 0.1)].into_iter().enumerate() {
            kept.record(epoch(i + 1, acc, loss), || {
                copies += 1;
                i
            });
        }
        assert_eq!(copies, 3, "weights copied only for new bests");
        let fit = kept.finish(|| 99, 1.0);
        assert_eq!((fit.weights, fit.best, fit.exported), (2, 2, 2));
        let mut last = History::new(4, false);
        last.record(epoch(1, 0.9, 0.1), || unreachable!("keep-best off: never copies"));
        last.record(epoch(2, 0.5, 0.9), || unreachable!("keep-best off: never copies"));
        let fit = last.finish(|| 99, 1.0);
        assert_eq!((fit.weights, fit.best, fit.exported, fit.history.len()), (99, 0, 1, 2));
    }
}
