//! The fine-tuning loop: Keras' `model.fit_generator(train_generator, epochs,
//! validation_data=validation_generator)` with blocks 1-4 frozen, block 5 and the head trained.
//!
//! Per step: augmented images -> preprocessing -> `frozen_base` (ONNX Runtime) -> block 5
//! forward (ONNX Runtime, keeping activations) -> head forward and backward (Rust, `sd-head`) ->
//! block 5 backward (ONNX Runtime) -> one optimiser step for both.
//!
//! Validation images are not augmented, so their `block4_pool` maps never change: they are
//! computed once into a temporary `.npy` and each epoch's validation costs block 5 + head only.
//! With `cache_rounds = K` the training images get the same treatment: K augmented rounds are
//! computed once and epoch `e` trains on round `e mod K` (in that epoch's shuffled order), which
//! trades fresh augmentation every epoch for skipping the frozen part (90% of the FLOPs). With
//! `K >= epochs` it sees exactly the images the exact mode sees.
//!
//! Reproducible: the shuffling and the augmentation are keyed by `(seed, epoch, sample)`
//! (`sd-augment`), dropout draws from its own ChaCha stream, and ONNX Runtime's CPU kernels are
//! deterministic for a given batch and thread count: the same seed gives the same weights.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use ndarray::{Array2, Array4};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sd_data::{ModelInput, Sample};
use sd_train::checkpoint::{Resumable, Snapshot, Tensors};
use sd_train::epochs::{EpochTransform, Epochs, epoch_order};
use sd_train::fit::{Batches, Event, Model, Settings, fit};
use sd_train::head::Head;
use sd_train::head::model::HeadGrad;
use sd_train::head::optim::HeadOptimizer;
use sd_train::history::Fit;
use sd_train::metrics::Tally;
use sd_train::{ClassWeight, EpochStats, Loss, Objective, Optimizer, OptimizerState, Regularization, Schedule};
use sd_transform::{AugmentConfig, Augmenter};
use serde::{Deserialize, Serialize};

use crate::block5::{Block5, Block5Weights};
use crate::features::{FeatureFile, Frozen, head_input};

/// Everything that determines a run (recorded in `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    #[serde(flatten)]
    pub input: ModelInput,
    /// Training augmentation (`None`: the images as they are).
    pub augment: Option<AugmentConfig>,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Label smoothing of the targets.
    pub label_smoothing: f64,
    /// Class weights in the loss (imbalanced training sets).
    pub class_weight: ClassWeight,
    pub epochs: usize,
    pub batch_size: usize,
    /// Precompute the frozen part's output for this many augmented rounds and cycle through
    /// them (`None`: every epoch freshly augmented, the Keras recipe).
    pub cache_rounds: Option<usize>,
    /// Export the epoch with the best validation accuracy instead of the last (Keras'
    /// `restore_best_weights`; `keep_best` in metrics.json, as it always was).
    pub keep_best: bool,
    pub seed: u64,
    /// Stop after this many epochs without a better one (Keras' `EarlyStopping(patience)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// What the exported classifier takes (uint8 images by default).
    pub classifier_input: crate::export::ClassifierInput,
}

impl FinetuneConfig {
    /// The Keras blog recipe: SGD lr 1e-4, momentum 0.9, batch 16, 50 epochs, shear 0.2 /
    /// zoom 0.2 / horizontal flip, at 150x150 (with the Caffe preprocessing the weights expect).
    pub fn keras() -> FinetuneConfig {
        FinetuneConfig {
            input: ModelInput::RECIPE,
            augment: Some(sd_transform::Preset::Finetune.config()),
            optimizer: Optimizer::Sgd { momentum: 0.9, nesterov: false },
            learning_rate: 1e-4,
            schedule: Schedule::Constant,
            label_smoothing: 0.0,
            class_weight: ClassWeight::None,
            epochs: 50,
            batch_size: 16,
            cache_rounds: None,
            keep_best: false,
            seed: 0,
            patience: None,
            classifier_input: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("epochs and batch size must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            bail!("learning rate {} must be a positive number", self.learning_rate);
        }
        if self.cache_rounds == Some(0) {
            bail!("cached rounds must be at least 1");
        }
        self.optimizer.validate().map_err(anyhow::Error::msg)?;
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        Ok(())
    }
}

/// What the loop reports while it runs.
pub enum Progress<'a> {
    /// Frozen features being cached (`what`: "validation" or "round k").
    Caching {
        what: String,
        images: usize,
    },
    /// One training step done (`steps` per epoch).
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
    },
    Epoch(&'a EpochStats),
    /// Validation before the first step (the trained head on the prepared block 5).
    Initial(&'a Validation),
}

/// Validation loss and accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub val_loss: f64,
    pub val_acc: f64,
}

impl Validation {
    pub fn of(stats: &EpochStats) -> Validation {
        Validation { val_loss: stats.val_loss, val_acc: stats.val_acc }
    }
}

/// A finished run.
pub struct Finetuned {
    /// Validation before fine-tuning.
    pub initial: Validation,
    /// The exported block 5 and head, with the history and their validation.
    pub fit: Fit<(Block5Weights, Head<f32>)>,
    /// Computing cached frozen features before training.
    pub setup_seconds: f64,
    pub device: String,
}

/// What a checkpoint holds besides the tensors (block 5, head and their optimisers).
#[derive(Serialize, Deserialize)]
pub struct State {
    dropout_rng: ChaCha8Rng,
}

/// One batch's gradients, with its mean loss and logits.
pub struct Gradients {
    pub block5: Block5Weights,
    pub head: HeadGrad<f32>,
    pub loss: f64,
    pub logits: Vec<f32>,
}

/// Block 5 + head with their optimisers: one training step, or inference.
pub struct Trainer {
    pub block5: Block5,
    pub weights: Block5Weights,
    pub head: Head<f32>,
    objective: Objective,
    block5_opt: OptimizerState<f32>,
    head_opt: HeadOptimizer<f32>,
    dropout_rng: ChaCha8Rng,
}

impl Trainer {
    /// The loss follows the head: one sigmoid logit for two classes, a softmax over more.
    pub fn new(block5: Block5, weights: Block5Weights, head: Head<f32>, optimizer: Optimizer, seed: u64) -> Trainer {
        let mut dropout_rng = ChaCha8Rng::seed_from_u64(seed);
        dropout_rng.set_stream(2);
        let objective = Objective { loss: Loss::for_outputs(head.outputs()), smoothing: 0.0, class_weights: None };
        Trainer {
            block5_opt: OptimizerState::new(optimizer, Regularization::default(), weights.sizes()),
            head_opt: HeadOptimizer::new(optimizer, Regularization::default(), &head),
            objective,
            block5,
            weights,
            head,
            dropout_rng,
        }
    }

    /// Trains with label smoothing and class weights (the plain cross-entropy otherwise).
    pub fn with_objective(mut self, objective: Objective) -> Trainer {
        assert_eq!(objective.loss, self.objective.loss, "the objective's loss fits the head");
        self.objective = objective;
        self
    }

    pub fn loss(&self) -> Loss {
        self.objective.loss
    }

    /// Everything the trainer's next steps depend on, for a checkpoint.
    fn snapshot(&self) -> Snapshot<'_> {
        let s = Snapshot::new().with("block5", &self.weights).with("head", &self.head);
        s.with("block5_optimizer", &self.block5_opt).with("head_optimizer", &self.head_opt)
    }

    /// Continues from a checkpoint's tensors and dropout stream.
    fn restore(&mut self, tensors: &Tensors, dropout_rng: ChaCha8Rng) -> Result<()> {
        tensors.fill("block5", &mut self.weights)?;
        tensors.fill("head", &mut self.head)?;
        tensors.fill("block5_optimizer", &mut self.block5_opt)?;
        tensors.fill("head_optimizer", &mut self.head_opt)?;
        self.dropout_rng = dropout_rng;
        Ok(())
    }

    /// Loss gradients of block 5 and the head on a batch of `block4_pool` maps (`dropout`:
    /// training mode, masks drawn from the trainer's stream). Also returns the batch's mean loss
    /// and logits, as Keras reports them during training.
    pub fn gradients(&mut self, x: Array4<f32>, labels: &[u32], dropout: bool) -> Result<Gradients> {
        let (features, trace) = self.block5.forward_train(x, &self.weights)?;
        let rng = dropout.then_some(&mut self.dropout_rng as &mut dyn rand::RngCore);
        let (z, head_trace) = self.head.forward_train(head_input(self.head.pool, &features).view(), rng);
        let (loss, dz) = self.objective.forward(z.as_slice().expect("fresh array"), labels);
        let dz = Array2::from_shape_vec(z.dim(), dz).expect("one gradient per logit");
        let (upper, dy) = self.head.backward_upper(&head_trace, dz);
        // The first dense layer's input gradient is what flows into block 5.
        let (first, d_features) = self.head.layers[0].backward(head_trace.input(), dy.view(), true);
        let d_features = self.head.pool.backward(d_features.expect("asked for dx"), &features.shape()[1..]);
        let d_features = d_features.as_standard_layout().into_owned();
        let d_features = d_features.into_shape_with_order(features.raw_dim()).expect("NHWC");
        let block5 = self.block5.backward(&trace, &self.weights, d_features.view())?;
        Ok(Gradients {
            block5,
            head: std::iter::once(first).chain(upper).collect(),
            loss: loss as f64,
            logits: z.into_raw_vec_and_offset().0,
        })
    }

    /// One training step (with dropout), tallied into `tally`; returns the batch's mean loss
    /// (not a number: nothing was updated).
    pub fn step(&mut self, x: Array4<f32>, labels: &[u32], lr: f64, tally: &mut Tally) -> Result<f64> {
        let g = self.gradients(x, labels, true)?;
        if !g.loss.is_finite() {
            return Ok(g.loss);
        }
        self.head_opt.step(&mut self.head, &g.head, lr);
        self.block5_opt.step(self.weights.params(&g.block5), lr);
        tally.add_batch(g.loss, &g.logits, labels);
        Ok(g.loss)
    }

    /// Logits `[n, outputs]` (row-major) of a batch of `block4_pool` maps (inference: no
    /// dropout).
    pub fn logits(&mut self, x: &Array4<f32>) -> Result<Vec<f32>> {
        let features = self.block5.forward(x.view(), &self.weights)?;
        Ok(self.head.logits(head_input(self.head.pool, &features).view()).into_raw_vec_and_offset().0)
    }

    /// Loss and accuracy over a feature file with `labels`.
    pub fn evaluate(&mut self, store: &FeatureFile, labels: &[u32], batch_size: usize) -> Result<Tally> {
        let mut tally = Tally::new(self.loss());
        let indices: Vec<usize> = (0..store.rows()).collect();
        for chunk in indices.chunks(batch_size) {
            let z = self.logits(&store.read(chunk)?)?;
            tally.add_logits(&z, &labels[chunk[0]..chunk[0] + chunk.len()]);
        }
        Ok(tally)
    }
}

fn labels_of(samples: &[Sample]) -> Vec<u32> {
    samples.iter().map(|s| s.label).collect()
}

/// One training batch: decoded (and augmented) images, or rows of a cached round.
pub enum Batch {
    Images(sd_data::loader::Batch),
    Cached { round: usize, rows: Vec<usize> },
}

/// Block 5 + head under training, with where its batches come from: what [`sd_train::fit`]
/// steps, evaluates and checkpoints.
struct FinetuneModel<'a> {
    config: &'a FinetuneConfig,
    frozen: &'a mut Frozen,
    trainer: Trainer,
    /// Fresh augmentation every epoch (no cached rounds).
    epochs: Epochs,
    rounds: Vec<FeatureFile>,
    train_labels: Vec<u32>,
    validation: FeatureFile,
    validation_labels: Vec<u32>,
}

impl Model for FinetuneModel<'_> {
    type Batch = Batch;
    type Weights = (Block5Weights, Head<f32>);
    type State = State;
    type Error = anyhow::Error;

    fn loss(&self) -> Loss {
        self.trainer.loss()
    }

    fn batches(&mut self, epoch: usize) -> Result<Batches<Batch, anyhow::Error>> {
        if self.rounds.is_empty() {
            return Ok(Box::new(self.epochs.epoch(epoch as u64).map(|b| Ok(Batch::Images(b?)))));
        }
        let round = epoch % self.rounds.len();
        let order = epoch_order(self.train_labels.len(), self.config.seed, epoch as u64);
        let batches: Vec<_> =
            order.chunks(self.config.batch_size).map(|rows| Ok(Batch::Cached { round, rows: rows.to_vec() })).collect();
        Ok(Box::new(batches.into_iter()))
    }

    fn step(&mut self, batch: Batch, lr: f64, tally: &mut Tally) -> Result<f64> {
        match batch {
            Batch::Images(batch) => self.trainer.step(self.frozen.run(&batch)?, &batch.labels, lr, tally),
            Batch::Cached { round, rows } => {
                let labels: Vec<u32> = rows.iter().map(|&i| self.train_labels[i]).collect();
                self.trainer.step(self.rounds[round].read(&rows)?, &labels, lr, tally)
            }
        }
    }

    fn evaluate(&mut self) -> Result<Tally> {
        self.trainer.evaluate(&self.validation, &self.validation_labels, self.config.batch_size)
    }

    fn weights(&self) -> (Block5Weights, Head<f32>) {
        (self.trainer.weights.clone(), self.trainer.head.clone())
    }

    fn into_weights(self) -> (Block5Weights, Head<f32>) {
        (self.trainer.weights, self.trainer.head)
    }

    fn state(&self) -> State {
        State { dropout_rng: self.trainer.dropout_rng.clone() }
    }

    fn snapshot(&self) -> Snapshot<'_> {
        self.trainer.snapshot()
    }

    fn restore(&mut self, state: State, tensors: &Tensors) -> Result<()> {
        self.trainer.restore(tensors, state.dropout_rng)
    }
}

/// Fine-tunes `trainer` (block 5 + head) on `train`, validating on `validation` after every
/// epoch. Temporary feature files go to `work_dir`. With `resumable`, a checkpoint is saved
/// after each epoch and a run continues from one when asked, ending with the same weights as
/// an uninterrupted run.
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    config: &FinetuneConfig,
    frozen: &mut Frozen,
    trainer: Trainer,
    train: Arc<[Sample]>,
    validation: Arc<[Sample]>,
    work_dir: &Path,
    resumable: Option<&mut Resumable>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Finetuned> {
    config.validate()?;
    let class_counts = {
        let mut counts = vec![0; trainer.loss().classes()];
        train.iter().for_each(|s| counts[s.label as usize] += 1);
        counts
    };
    let objective = Objective::new(trainer.loss(), config.label_smoothing, config.class_weight, &class_counts);
    let trainer = trainer.with_objective(objective);
    let setup = Instant::now();
    let loader = |batch_size| config.input.loader(batch_size);
    let augmenter = config.augment.clone().map(|a| Augmenter::new(a, config.seed)).transpose()?.map(Arc::new);

    let val_path = work_dir.join("validation.npy");
    frozen.write_all(validation.clone(), loader(config.batch_size), &val_path, |n| {
        progress(Progress::Caching { what: "validation".into(), images: n })
    })?;
    let val_store = FeatureFile::open(&val_path)?;
    let val_labels = labels_of(&validation);

    // Augmentation-free rounds are all the same: one is enough.
    let rounds = config.cache_rounds.map(|k| if augmenter.is_some() { k.min(config.epochs) } else { 1 });
    let mut round_stores = Vec::new();
    for r in 0..rounds.unwrap_or(0) {
        let path = work_dir.join(format!("round-{r}.npy"));
        let mut c = loader(config.batch_size);
        c.transform = augmenter.as_ref().map(|a| a.transform(r as u64));
        frozen.write_all(train.clone(), c, &path, |n| {
            progress(Progress::Caching { what: format!("round {r}"), images: n })
        })?;
        round_stores.push(FeatureFile::open(&path)?);
    }
    let setup_seconds = setup.elapsed().as_secs_f64();

    let transform = augmenter.map(|a| -> EpochTransform { Arc::new(move |epoch| a.transform(epoch)) });
    let epochs = Epochs::new(train.clone(), loader(config.batch_size), transform, config.seed);
    let model = FinetuneModel {
        config,
        frozen,
        trainer,
        epochs,
        rounds: round_stores,
        train_labels: labels_of(&train),
        validation: val_store,
        validation_labels: val_labels,
    };
    let device = model.trainer.block5.device().to_string();
    let settings = Settings {
        epochs: config.epochs,
        steps_per_epoch: train.len().div_ceil(config.batch_size),
        learning_rate: config.learning_rate,
        schedule: config.schedule,
        restore_best: config.keep_best,
        patience: config.patience,
        // The trained head on the prepared block 5 is epoch 0: with keep-best, what is exported
        // is never worse on validation than what fine-tuning started from.
        evaluate_start: true,
    };
    let fit = fit(model, &settings, resumable, |event| match event {
        Event::Start(stats) => progress(Progress::Initial(&Validation::of(stats))),
        Event::Step { epoch, step, steps } => progress(Progress::Step { epoch, step, steps }),
        Event::Epoch(stats) => progress(Progress::Epoch(stats)),
        Event::Stopped { .. } => {}
    })?;
    let initial = Validation::of(&fit.start.expect("evaluated before training"));
    Ok(Finetuned { initial, fit, setup_seconds, device })
}
