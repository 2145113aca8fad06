//! The one training loop of both trainers: Keras' `model.fit` with the callbacks this project
//! uses built in (checkpoints and resume, the learning-rate schedule, stopping on a loss that is
//! not a number, keep-best, early stopping). As in candle-nn, the loop knows a model only
//! through a trait ([`Model`]: a step over a batch, evaluation, the exported weights, a
//! checkpoint's state and its restore), and the optimiser and loss stay inside the model's step.

use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Schedule;
use crate::checkpoint::{Diverged, Parameters, Resumable, Snapshot, Tensors};
use crate::history::{EpochStats, Fit, History, HistoryState};
use crate::loss::Loss;
use crate::metrics::Tally;

/// What the loop needs of a model under training.
pub trait Model {
    /// One step's input (e.g. the indices of a batch, or its decoded images).
    type Batch;
    /// What is evaluated, kept as the best epoch's and exported (e.g. the head, or its moving
    /// average); a checkpoint stores it as tensors of the same shapes as [`Model::weights`].
    type Weights: Parameters;
    /// Everything the next epochs depend on besides [`Model::snapshot`]'s tensors (random
    /// streams, a shuffled order).
    type State: Serialize + DeserializeOwned;
    type Error: From<Diverged> + From<sd_data::layout::LayoutError>;

    /// The loss the training and validation tallies count in.
    fn loss(&self) -> Loss;
    /// The batches of `epoch` (0-based), in training order.
    fn batches(&mut self, epoch: usize) -> Result<Batches<Self::Batch, Self::Error>, Self::Error>;
    /// One optimiser step at learning rate `lr`, counted into `tally`; returns the batch's
    /// mean loss. A loss that is not a number updates nothing, and the loop stops.
    fn step(&mut self, batch: Self::Batch, lr: f64, tally: &mut Tally) -> Result<f64, Self::Error>;
    /// The current weights on the validation set (inference mode).
    fn evaluate(&mut self) -> Result<Tally, Self::Error>;
    /// A copy of the weights [`Model::evaluate`] sees.
    fn weights(&self) -> Self::Weights;
    /// The final weights.
    fn into_weights(self) -> Self::Weights;
    /// For a checkpoint: the state and the tensors (weights and optimiser slots) the next
    /// epochs depend on.
    fn state(&self) -> Self::State;
    fn snapshot(&self) -> Snapshot<'_>;
    /// Continues from a checkpoint's state and tensors.
    fn restore(&mut self, state: Self::State, tensors: &Tensors) -> Result<(), Self::Error>;
}

/// An epoch's batches.
pub type Batches<B, E> = Box<dyn Iterator<Item = Result<B, E>>>;

/// What is the same for every model: how long, how fast, what to export, when to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Export the best epoch's weights instead of the last (Keras' `restore_best_weights`).
    pub restore_best: bool,
    /// Stop after this many epochs without a better one (Keras' `EarlyStopping(patience)`).
    pub patience: Option<usize>,
    /// Evaluate the model before training and count it as epoch 0: with `restore_best` the
    /// export is then never worse on validation than the start.
    pub evaluate_start: bool,
}

/// What the loop reports while it runs.
pub enum Event<'a> {
    /// Epoch 0, the model before training (with [`Settings::evaluate_start`]).
    Start(&'a EpochStats),
    /// Step `step` (1-based) of `steps` in `epoch` (0-based) is done.
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
    },
    Epoch(&'a EpochStats),
    /// No better epoch in the last `patience` epochs: training stops after `epoch` epochs.
    Stopped {
        epoch: usize,
        best: &'a EpochStats,
    },
}

/// A checkpoint's state: the loop's and the model's.
#[derive(Serialize, Deserialize)]
struct Saved<S> {
    epochs_done: usize,
    lr: f64,
    history: HistoryState,
    model: S,
}

/// Trains `model` for `settings.epochs` epochs (fewer with early stopping), validating after
/// each; saves checkpoints through `resumable` and continues from one when it says so, ending
/// with the same bytes as a run that was never interrupted.
pub fn fit<M: Model>(
    mut model: M,
    settings: &Settings,
    mut resumable: Option<&mut Resumable>,
    mut on_event: impl FnMut(Event),
) -> Result<Fit<M::Weights>, M::Error> {
    let Settings { epochs, steps_per_epoch, learning_rate, schedule, restore_best, patience, evaluate_start } =
        *settings;
    let total_steps = steps_per_epoch * epochs;
    let start = Instant::now();
    let mut history = History::new(epochs, restore_best);
    let mut lr = learning_rate;
    let mut first_epoch = 0;
    if let Some((saved, tensors)) = resumable.as_deref().map(|r| r.load::<Saved<M::State>>()).transpose()?.flatten() {
        model.restore(saved.model, &tensors)?;
        let best = if restore_best && saved.history.best_validation.is_some() {
            let mut best = model.weights();
            tensors.fill("best", &mut best)?;
            Some(best)
        } else {
            None
        };
        history = History::resume(saved.history, epochs, restore_best, best);
        (first_epoch, lr) = (saved.epochs_done, saved.lr);
        tracing::info!("resuming after epoch {first_epoch} of {epochs}");
    } else if evaluate_start {
        let val = model.evaluate()?;
        let stats = history.start(&val, start.elapsed().as_secs_f64(), || model.weights());
        on_event(Event::Start(&stats));
    }
    for epoch in first_epoch..epochs {
        if patience.is_some_and(|p| history.since_best() >= p) {
            let best = history.state().best.expect("an epoch recorded");
            tracing::info!(
                "early stopping after epoch {epoch}: no better validation accuracy than epoch {}'s {:.4} in {} epochs",
                best.epoch,
                best.val_acc,
                epoch - best.epoch
            );
            on_event(Event::Stopped { epoch, best: &best });
            break;
        }
        let epoch_start = Instant::now();
        let mut tally = Tally::new(model.loss());
        for (step, batch) in model.batches(epoch)?.enumerate() {
            lr = schedule.lr(learning_rate, epoch * steps_per_epoch + step, total_steps, epoch);
            let loss = model.step(batch?, lr, &mut tally)?;
            if !loss.is_finite() {
                let checkpoint = resumable.as_deref().map(Resumable::checkpoint);
                return Err(Diverged::new(loss, epoch, step, checkpoint).into());
            }
            on_event(Event::Step { epoch, step: step + 1, steps: steps_per_epoch });
        }
        let val = model.evaluate()?;
        let stats = EpochStats::new(epoch, &tally, &val, lr, epoch_start.elapsed().as_secs_f64());
        history.record(stats, &val, || model.weights());
        if let Some(r) = resumable.as_deref_mut().filter(|r| r.due()) {
            let saved = Saved { epochs_done: epoch + 1, lr, history: history.state().clone(), model: model.state() };
            let mut snapshot = model.snapshot();
            if let Some(best) = history.best_weights() {
                snapshot = snapshot.with("best", best);
            }
            r.save(&saved, &snapshot)?;
        }
        on_event(Event::Epoch(&stats));
    }
    Ok(history.finish(|| model.into_weights(), start.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose one weight counts the steps taken, and whose validation accuracy after `e`
    /// epochs is `script[e]` (a function of the weights, so a restored copy scores the same).
    struct Fake {
        w: Vec<f32>,
        script: Vec<f64>,
        steps: usize,
        /// The step (0-based, counted over the run) whose loss is not a number.
        nan_at: Option<usize>,
    }

    impl Parameters for Fake {
        fn tensors(&self) -> Vec<&[f32]> {
            vec![&self.w]
        }
        fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
            vec![&mut self.w]
        }
    }

    #[derive(Debug)]
    enum Error {
        Diverged,
        Checkpoint,
    }

    impl From<Diverged> for Error {
        fn from(_: Diverged) -> Self {
            Error::Diverged
        }
    }

    impl From<sd_data::layout::LayoutError> for Error {
        fn from(_: sd_data::layout::LayoutError) -> Self {
            Error::Checkpoint
        }
    }

    /// Ten validation samples of which `acc · 10` are right.
    fn scored(acc: f64) -> Tally {
        let mut t = Tally::new(Loss::Binary);
        let right = (acc * 10.0).round() as usize;
        let logits: Vec<f32> = (0..10).map(|i| if i < right { 2.0 } else { -2.0 }).collect();
        t.add_logits(&logits, &[1; 10]);
        t
    }

    impl Model for Fake {
        type Batch = usize;
        type Weights = Vec<f32>;
        type State = ();
        type Error = Error;

        fn loss(&self) -> Loss {
            Loss::Binary
        }
        fn batches(&mut self, _epoch: usize) -> Result<Batches<usize, Error>, Error> {
            Ok(Box::new((0..self.steps).map(Ok)))
        }
        fn step(&mut self, _batch: usize, _lr: f64, tally: &mut Tally) -> Result<f64, Error> {
            if self.nan_at == Some(self.w[0] as usize) {
                return Ok(f64::NAN);
            }
            self.w[0] += 1.0;
            tally.add_batch(0.5, &[1.0], &[1]);
            Ok(0.5)
        }
        fn evaluate(&mut self) -> Result<Tally, Error> {
            Ok(scored(self.script[self.w[0] as usize / self.steps]))
        }
        fn weights(&self) -> Vec<f32> {
            self.w.clone()
        }
        fn into_weights(self) -> Vec<f32> {
            self.w
        }
        fn state(&self) {}
        fn snapshot(&self) -> Snapshot<'_> {
            Snapshot::new().with("fake", self)
        }
        fn restore(&mut self, _: (), tensors: &Tensors) -> Result<(), Error> {
            Ok(tensors.fill("fake", self)?)
        }
    }

    impl Parameters for Vec<f32> {
        fn tensors(&self) -> Vec<&[f32]> {
            vec![self]
        }
        fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
            vec![self]
        }
    }

    /// Accuracy at the start (epoch 0) and after each of 6 epochs: best at epoch 2.
    const SCRIPT: [f64; 7] = [0.6, 0.5, 0.8, 0.6, 0.7, 0.9, 1.0];

    fn fake() -> Fake {
        Fake { w: vec![0.0], script: SCRIPT.to_vec(), steps: 3, nan_at: None }
    }

    fn settings(restore_best: bool, patience: Option<usize>) -> Settings {
        Settings {
            epochs: 6,
            steps_per_epoch: 3,
            learning_rate: 0.1,
            schedule: Schedule::Constant,
            restore_best,
            patience,
            evaluate_start: false,
        }
    }

    #[test]
    fn early_stopping_restores_the_best_weights() {
        let mut events = Vec::new();
        let fit = fit(fake(), &settings(true, Some(2)), None, |e| match e {
            Event::Epoch(s) => events.push(format!("epoch {}", s.epoch)),
            Event::Stopped { epoch, best } => events.push(format!("stopped after {epoch}, best {}", best.epoch)),
            _ => {}
        })
        .unwrap();
        assert_eq!(events, ["epoch 1", "epoch 2", "epoch 3", "epoch 4", "stopped after 4, best 2"]);
        assert_eq!(fit.history.len(), 4, "two epochs without a better one, then no more");
        assert_eq!((fit.best.epoch, fit.exported.epoch), (2, 2));
        assert_eq!(fit.weights, [6.0], "the weights after epoch 2 (3 steps each), not the last ones");
        assert_eq!(fit.validation.accuracy(), 0.8, "the exported weights' validation");
    }

    #[test]
    fn without_restore_early_stopping_exports_the_last_epoch() {
        let fit = fit(fake(), &settings(false, Some(2)), None, |_| {}).unwrap();
        assert_eq!((fit.history.len(), fit.best.epoch, fit.exported.epoch), (4, 2, 4));
        assert_eq!((fit.weights, fit.validation.accuracy()), (vec![12.0], 0.7));
        let all = super::fit(fake(), &settings(true, None), None, |_| {}).unwrap();
        assert_eq!(
            (all.history.len(), all.exported.epoch, all.weights),
            (6, 6, vec![18.0]),
            "no patience: every epoch"
        );
    }

    #[test]
    fn the_start_counts_as_epoch_0() {
        let s = Settings { evaluate_start: true, epochs: 2, ..settings(true, None) };
        let mut start = None;
        let fit = fit(fake(), &s, None, |e| {
            if let Event::Start(stats) = e {
                start = Some(stats.val_acc)
            }
        })
        .unwrap();
        // 0.6 at the start, 0.5 and 0.8 after the epochs.
        assert_eq!((start, fit.start.map(|s| s.epoch), fit.exported.epoch), (Some(0.6), Some(0), 2));
        let one = Settings { epochs: 1, ..s };
        let fit = super::fit(fake(), &one, None, |_| {}).unwrap();
        assert_eq!((fit.exported.epoch, fit.weights, fit.validation.accuracy()), (0, vec![0.0], 0.6));
        assert_eq!(fit.history.len(), 1, "epoch 0 is not a line of the history");
    }

    #[test]
    fn a_loss_that_is_not_a_number_stops_training() {
        let model = Fake { nan_at: Some(4), ..fake() };
        assert!(matches!(fit(model, &settings(false, None), None, |_| {}), Err(Error::Diverged)));
    }

    #[test]
    fn a_resumed_run_equals_an_uninterrupted_one() {
        let s = Settings { evaluate_start: true, ..settings(true, Some(3)) };
        let whole = fit(fake(), &s, None, |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let resumable = |resume| Resumable::new(&out, "f".into(), resume, std::time::Duration::ZERO);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fit(fake(), &s, Some(&mut resumable(false)), |e| {
                if let Event::Epoch(e) = e {
                    assert!(e.epoch < 3, "killed")
                }
            })
        }));
        assert!(crashed.is_err());
        let mut epochs = Vec::new();
        let resumed = fit(fake(), &s, Some(&mut resumable(true)), |e| {
            if let Event::Epoch(e) = e {
                epochs.push(e.epoch)
            }
        })
        .unwrap();
        assert_eq!(epochs, [4, 5, 6], "continued after epoch 3");
        assert_eq!((resumed.weights, resumed.exported.epoch), (whole.weights, whole.exported.epoch));
        assert_eq!(resumed.start.map(|s| s.val_acc), Some(0.6));
    }
}
