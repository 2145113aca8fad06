//! `finetune`: the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use sd_augment::cli::TransformArgs;
use sd_data::image::{ImageSize, ResizeFilter};
use sd_data::scratch::ScratchDir;
use sd_data::{Dataset, Preprocess, Sample};
use sd_head::optim::Optimizer;
use sd_head::train::Schedule;
use sd_runtime::{Model, SessionConfig};

use crate::block5::Block5;
use crate::features::Frozen;
use crate::inputs::{ModelDir, check_head_fits, load_head};
use crate::report::{self, Metrics, Source};
use crate::train::{FinetuneConfig, Progress, Trainer, finetune};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// SGD with momentum (the recipe: lr 1e-4, momentum 0.9).
    Sgd,
    /// Keras RMSprop (rho 0.9, epsilon 1e-7).
    Rmsprop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    Constant,
    /// Cosine decay over all steps to `lr · --lr-min-factor`.
    Cosine,
}

/// Fine-tune VGG16's block 5 together with the trained dense head (blocks 1-4 frozen), the
/// Keras recipe's last step: SGD lr 1e-4 momentum 0.9, batch 16, 50 epochs, augmentation
/// shear 0.2 / zoom 0.2 / horizontal flip, validation every epoch.
///
/// Writes into --out (replaced as a whole when complete): classifier.onnx (input NHWC
/// [N,H,W,3] preprocessed -> probability [N,1]), block5/*.npy, head/ (train-head's format),
/// metrics.json, history.csv, curves.svg.
#[derive(Debug, Parser)]
#[command(name = "finetune", version)]
pub struct Args {
    /// Training images: a class-folder data set DIR/<class>/<image>.
    #[arg(long, value_name = "DIR")]
    pub train: PathBuf,
    /// Validation images (never augmented), same classes.
    #[arg(long, value_name = "DIR")]
    pub validation: PathBuf,
    /// The prepare-model output folder (frozen_base.onnx, block5/*.npy, model.json).
    #[arg(long, value_name = "DIR", default_value = "artifacts/model")]
    pub model: PathBuf,
    /// The train-head output folder to start from (head.json + weights).
    #[arg(long, value_name = "DIR", default_value = "artifacts/head")]
    pub head: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image size: N or WxH; the head must have been trained on features at this size.
    #[arg(long, default_value = "150")]
    pub size: ImageSize,
    /// caffe (BGR minus ImageNet means, what the weights expect) or rescale (RGB / 255).
    #[arg(long, default_value_t = Preprocess::Caffe)]
    pub preprocess: Preprocess,
    #[arg(long, default_value_t = ResizeFilter::Bilinear)]
    pub resize_filter: ResizeFilter,
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = OptimizerName::Sgd)]
    pub optimizer: OptimizerName,
    /// Learning rate (peak rate with a schedule).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, value_enum, default_value_t = ScheduleName::Constant)]
    pub schedule: ScheduleName,
    /// Cosine schedule: final rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min_factor: f64,
    /// Augmentation (Keras ImageDataGenerator arguments); without --preset or flags, the
    /// recipe's fine-tuning preset (shear 0.2, zoom 0.2, horizontal flip).
    #[command(flatten)]
    pub augment: TransformArgs,
    /// Train on the images as they are.
    #[arg(long, conflicts_with = "preset")]
    pub no_augment: bool,
    /// Compute the frozen part once for K augmented rounds (streamed to --work-dir) and train
    /// epoch e on round e mod K: about 3x faster epochs on CPU, K instead of --epochs distinct
    /// augmentations per image. 0 (default): fresh augmentation every epoch, the recipe.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub cache_rounds: usize,
    /// Where cached features go (default: a hidden folder next to --out, removed at the end, on
    /// Ctrl-C or SIGTERM, and by the next run after a SIGKILL).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Export the epoch with the best validation accuracy instead of the last.
    #[arg(long)]
    pub keep_best: bool,
    /// Seed for shuffling, augmentation and dropout; same seed + inputs + options = same weights
    /// (on the same device and thread count).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

impl Args {
    pub fn config(&self) -> FinetuneConfig {
        let augment = if self.no_augment {
            None
        } else {
            let mut t = self.augment.clone();
            if t.preset.is_none() {
                t.preset = Some(sd_augment::Preset::Finetune);
            }
            Some(t.config())
        };
        FinetuneConfig {
            size: self.size,
            preprocess: self.preprocess,
            resize_filter: self.resize_filter,
            augment,
            optimizer: match self.optimizer {
                OptimizerName::Sgd => Optimizer::Sgd { momentum: self.momentum, nesterov: self.nesterov },
                OptimizerName::Rmsprop => Optimizer::RMSPROP,
            },
            learning_rate: self.lr,
            schedule: match self.schedule {
                ScheduleName::Constant => Schedule::Constant,
                ScheduleName::Cosine => Schedule::Cosine { min_factor: self.lr_min_factor },
            },
            epochs: self.epochs,
            batch_size: self.batch_size,
            cache_rounds: (self.cache_rounds > 0).then_some(self.cache_rounds),
            keep_best: self.keep_best,
            seed: self.seed,
        }
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    sd_cli::run(|| run(&args))
}

/// Scans a data set and checks it is binary with the expected classes.
fn scan(dir: &Path, expected: Option<&Dataset>) -> Result<Dataset> {
    let d = Dataset::scan(dir)?;
    match expected {
        Some(train) => d.expect_classes(&train.classes, &format!("the training set {}", train.root.display()))?,
        None if d.classes.len() != 2 => {
            bail!(
                "{} has {} classes ({:?}); the classifier is binary: it needs exactly two class folders",
                dir.display(),
                d.classes.len(),
                d.classes
            )
        }
        None => {}
    }
    Ok(d)
}

pub fn run(args: &Args) -> Result<()> {
    let config = args.config();
    config.validate()?;
    let model_dir = ModelDir::load(&args.model)?;
    let (head, spec) = load_head(&args.head)?;
    let shape = model_dir.block5_shape(config.size);
    check_head_fits(&spec, &args.head, &shape, config.size)?;
    if let Some(p) = model_dir.preprocess.filter(|&p| p != config.preprocess) {
        tracing::warn!(
            "{} says its weights expect --preprocess {p}, running with {}",
            args.model.display(),
            config.preprocess
        );
    }
    let train = scan(&args.train, None)?;
    let validation = scan(&args.validation, Some(&train))?;
    let classes: BTreeMap<String, i64> = train.class_indices().into_iter().map(|(k, v)| (k, v as i64)).collect();
    if !spec.classes.is_empty() && spec.classes != classes {
        bail!(
            "{} was trained for classes {:?}, but {} has {:?}",
            args.head.join(sd_head::export::HEAD_JSON).display(),
            spec.classes,
            args.train.display(),
            classes
        );
    }

    let session = args.session.clone();
    let c0 = model_dir.weights.channels()[0];
    let mut frozen = Frozen {
        model: Model::load(&model_dir.frozen_base, &session)?,
        preprocess: config.preprocess,
        output: [shape.height, shape.width, c0],
    };
    let block5 = Block5::new(shape, &session).context("building block 5's training graphs")?;
    let trainer = Trainer::new(block5, model_dir.weights.clone(), head, config.optimizer, config.seed);
    tracing::info!(
        train = train.len(),
        validation = validation.len(),
        ?shape,
        device = %frozen.model.device,
        config = %serde_json::to_string(&config)?,
        "fine-tuning block 5 and the head"
    );

    let work = WorkDir::new(args.work_dir.as_deref(), &args.out)?;
    let interactive = args.log.interactive();
    let steps = train.len().div_ceil(config.batch_size);
    let cache_total = validation.len() + config.cache_rounds.map_or(0, |k| k.min(config.epochs)) * train.len();
    let cache_bar = sd_cli::progress_bar(cache_total as u64, "caching", interactive && cache_total > 0);
    let bar = sd_cli::progress_bar((steps * config.epochs) as u64, "epoch 1", interactive);
    bar.set_position(0);
    let as_samples = |d: &Dataset| -> Arc<[Sample]> { d.samples.clone().into() };
    let finetuned =
        finetune(&config, &mut frozen, trainer, as_samples(&train), as_samples(&validation), work.path(), &mut |p| {
            match p {
                Progress::Caching { what, images } => {
                    cache_bar.set_message(what);
                    cache_bar.inc(images as u64);
                }
                Progress::Step { epoch, .. } => {
                    if !cache_bar.is_finished() {
                        cache_bar.finish_and_clear();
                    }
                    bar.set_message(format!("epoch {}/{}", epoch + 1, config.epochs));
                    bar.inc(1);
                }
                Progress::Initial(v) => {
                    cache_bar.finish_and_clear();
                    tracing::info!("Before fine-tuning - val_loss: {:.4} - val_acc: {:.4}", v.val_loss, v.val_acc);
                }
                Progress::Epoch(h) => {
                    bar.suspend(|| tracing::info!("{}", report::epoch_line(h, config.epochs)));
                    bar.set_message(format!("val_acc {:.4}", h.val_acc));
                }
            }
        })?;
    bar.finish_and_clear();

    let source = |d: &Dataset| Source { dir: d.root.display().to_string(), samples: d.len() };
    let metrics =
        Metrics::of(&finetuned, &config, [source(&train), source(&validation)], &args.model, &args.head, &classes);
    report::write(&args.out, &finetuned, &metrics, &model_dir.frozen_base, &shape)?;
    drop(work);
    sd_cli::summary(
        &args.log,
        format!(
            "finetune: val_acc {:.4} (epoch {}; {:.4} before), best {:.4} (epoch {}), {} epochs in {:.1} s ({:.1} s/epoch, +{:.1} s caching) on {} -> {}",
            metrics.exported.val_acc,
            metrics.exported.epoch,
            metrics.initial.val_acc,
            metrics.best.val_acc,
            metrics.best.epoch,
            metrics.epochs,
            metrics.seconds,
            metrics.seconds_per_epoch,
            metrics.setup_seconds,
            metrics.device,
            args.out.display()
        ),
    );
    Ok(())
}

/// The folder for cached features: the user's, or a temporary one next to the output (same
/// file system, known to be writable) that is removed when done.
enum WorkDir {
    Given(PathBuf),
    Temp(ScratchDir),
}

impl WorkDir {
    fn new(given: Option<&Path>, out: &Path) -> Result<WorkDir> {
        if let Some(dir) = given {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create --work-dir {}", dir.display()))?;
            return Ok(WorkDir::Given(dir.into()));
        }
        let dir = ScratchDir::next_to(out, "work")
            .with_context(|| format!("cannot create a work folder next to {}", out.display()))?;
        Ok(WorkDir::Temp(dir))
    }

    fn path(&self) -> &Path {
        match self {
            WorkDir::Given(p) => p,
            WorkDir::Temp(dir) => dir.path(),
        }
    }
}
