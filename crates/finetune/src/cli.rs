//! `finetune`: the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sd_cli::args::TransformArgs;
use sd_cli::args::{FitArgs, FitOptions, InputArgs, LossArgs, Optim, OptimArgs, PrecisionArgs, ResumeArgs};
use sd_data::layout::model::{DEFAULT_CALIBRATION_IMAGES, Precision};
use sd_data::scratch::ScratchDir;
use sd_data::{Dataset, ModelInput, Sample};
use sd_runtime::{Model, SessionConfig};
use sd_train::summary::Source;
use sd_train::{Optimizer, Schedule};

use crate::block5::Block5;
use crate::export::{ClassifierInput, Int8Calibration};
use crate::features::Frozen;
use crate::inputs::{PreparedModel, check_head_fits, load_head};
use crate::outputs::{self, Metrics};
use crate::train::{FinetuneConfig, Progress, Trainer, finetune};

/// Fine-tune VGG16's block 5 together with the trained dense head (blocks 1-4 frozen), the
/// Keras recipe's last step: SGD lr 1e-4 momentum 0.9, batch 16, 50 epochs, augmentation
/// shear 0.2 / zoom 0.2 / horizontal flip, validation every epoch.
///
/// Writes into --out (replaced as a whole when complete): classifier.onnx (input NHWC
/// [N,H,W,3] preprocessed -> probability [N,1] for two classes, probabilities [N,classes]
/// otherwise), block5/*.npy, head/ (train-head's format), metrics.json, history.csv,
/// curves.svg.
#[derive(Debug, Parser)]
#[command(name = "finetune", version)]
#[command(mut_arg("preset", |a| a.help(
    "Augmentation preset: tutorial (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip) or finetune \
     (shear 0.2, zoom 0.2, horizontal flip); the flags below override it [default: finetune, the recipe's]"
)))]
#[command(mut_arg("optimizer", |a| a.help(
    "rmsprop or sgd [default: sgd, lr 1e-4, momentum 0.9: the recipe's; rmsprop: lr 1e-5, as Deep Learning with \
     Python fine-tunes]"
)))]
#[command(mut_arg("schedule", |a| a.help(
    "Learning-rate schedule: constant, cosine (decay over all steps to lr · --lr-min-factor) or step (times \
     --step-factor every --step-every epochs) [default: constant]"
)))]
pub struct Args {
    /// Training images: a class-folder data set DIR/<class>/<image>.
    #[arg(long, value_name = "DIR")]
    pub train: PathBuf,
    /// Validation images (never augmented), same classes.
    #[arg(long, value_name = "DIR")]
    pub validation: PathBuf,
    /// The folder prepare-model writes (frozen_base.onnx, block5/*.npy, model.json). Was
    /// --model, which now always names an ONNX file.
    #[arg(long = "model-dir", alias = "model", value_name = "DIR", default_value = "artifacts/model")]
    pub model: PathBuf,
    /// The folder train-head writes, to start from (head.json and the weights).
    #[arg(long, value_name = "DIR", default_value = "artifacts/head")]
    pub head: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image input; the head must have been trained on features made the same way.
    #[command(flatten)]
    pub input: InputArgs,
    /// Epochs, batches, seed, which epoch to export, early stopping.
    #[command(flatten)]
    pub fit: FitArgs,
    /// Optimiser and schedule (default: the recipe's SGD, lr 1e-4, momentum 0.9, constant; with
    /// --optimizer rmsprop: lr 1e-5, as Deep Learning with Python fine-tunes).
    #[command(flatten)]
    pub optim: OptimArgs,
    #[command(flatten)]
    pub loss: LossArgs,
    /// Augmentation (Keras ImageDataGenerator arguments); without --preset or flags, the
    /// recipe's fine-tuning preset (shear 0.2, zoom 0.2, horizontal flip).
    #[command(flatten)]
    pub augment: TransformArgs,
    /// Train on the images as they are (no --augment preset, no transform).
    #[arg(long, conflicts_with = "preset")]
    pub no_augment: bool,
    /// Compute the frozen part once for K augmented rounds (streamed to --work-dir) and train
    /// epoch e on round e mod K: about 3x faster epochs on CPU, K instead of --epochs distinct
    /// augmentations per image. 0 (default): fresh augmentation every epoch, the recipe.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub cache_rounds: usize,
    /// Where cached features go [default: a hidden folder next to --out, removed at the end, on
    /// Ctrl-C or SIGTERM, and by the next run after a SIGKILL].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// What classifier.onnx takes: uint8 (RGB images as decoded and resized; the preprocessing
    /// is inside the graph) or float (images preprocessed by the caller, as in training).
    #[arg(long, value_enum, default_value_t = ClassifierInput::Uint8)]
    pub classifier_input: ClassifierInput,
    /// The frozen part's precision; classifier.onnx embeds the one trained with.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub session: SessionConfig,
    #[command(flatten)]
    pub resume: ResumeArgs,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

/// The recipe's optimiser for fine-tuning.
const RECIPE_OPTIM: Optim = Optim {
    optimizer: Optimizer::Sgd { momentum: 0.9, nesterov: false },
    learning_rate: 1e-4,
    schedule: Schedule::Constant,
};

impl Args {
    pub fn config(&self) -> FinetuneConfig {
        let augment = if self.no_augment {
            None
        } else {
            let mut t = self.augment.clone();
            if t.preset.is_none() {
                t.preset = Some(sd_transform::Preset::Finetune);
            }
            Some(t.config())
        };
        let default_lr = |o: &Optimizer| if matches!(o, Optimizer::Sgd { .. }) { 1e-4 } else { 1e-5 };
        let optim = self.optim.apply(RECIPE_OPTIM, default_lr);
        let (mut label_smoothing, mut class_weight) = (0.0, sd_train::ClassWeight::None);
        self.loss.apply(&mut label_smoothing, &mut class_weight);
        // The recipe, but exporting the best validation epoch, the start counted as epoch 0.
        let recipe = FinetuneConfig { keep_best: true, ..FinetuneConfig::keras() };
        let mut config = FinetuneConfig {
            input: self.input.or(ModelInput::RECIPE),
            augment,
            optimizer: optim.optimizer,
            learning_rate: optim.learning_rate,
            schedule: optim.schedule,
            label_smoothing,
            class_weight,
            cache_rounds: (self.cache_rounds > 0).then_some(self.cache_rounds),
            classifier_input: self.classifier_input,
            ..recipe
        };
        self.fit.apply(FitOptions {
            epochs: &mut config.epochs,
            batch_size: &mut config.batch_size,
            seed: &mut config.seed,
            restore_best: &mut config.keep_best,
            patience: &mut config.patience,
        });
        config
    }
}

/// Scans a data set and checks it has the expected classes (at least two).
fn scan(dir: &Path, expected: Option<&Dataset>) -> Result<Dataset> {
    let d = Dataset::scan(dir)?;
    match expected {
        Some(train) => d.expect_classes(&train.classes, &format!("the training set {}", train.root.display()))?,
        None if d.classes.len() < 2 => {
            bail!("{} has one class {}; a classifier needs at least two class folders", dir.display(), d.classes)
        }
        None => {}
    }
    Ok(d)
}

/// Checks what the path flags name before any work, with advice naming the right path.
fn check_paths(args: &Args) -> Result<()> {
    use sd_cli::paths;
    use sd_data::layout::model::{CONV_BASE, FROZEN_BASE, MODEL_JSON};
    let model = "the folder prepare-model writes (prepare-model --out DIR; e.g. artifacts/model)";
    paths::folder("--model-dir", &args.model, &[FROZEN_BASE, CONV_BASE, MODEL_JSON], model)?;
    let head = "the folder train-head writes (train-head --out DIR; e.g. artifacts/head)";
    paths::folder("--head", &args.head, &[sd_train::head::export::HEAD_JSON], head)?;
    paths::class_folders("--train", &args.train)?;
    paths::class_folders("--validation", &args.validation)
}

/// Fine-tuning trains VGG16's block 5; other backbones' tails have no backward graphs yet.
fn check_backbone(dir: &Path) -> Result<()> {
    let folder = sd_data::layout::model::ModelDir::new(dir);
    if !folder.info_path().is_file() {
        return Ok(());
    }
    let info = folder.info()?;
    if info.backbone != sd_data::layout::model::Backbone::Vgg16 {
        bail!(
            "{} holds {}: finetune trains VGG16's block 5, and fine-tuning {}'s tail ({}) is not implemented yet. \
             Its head alone reaches most of the accuracy (train-head on its bottleneck features, e.g. with --pool avg); \
             to fine-tune, prepare the model with --backbone vgg16",
            dir.display(),
            info.backbone,
            info.backbone,
            info.trainable_tail.join(", ")
        );
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    check_paths(args)?;
    let config = args.config();
    config.validate()?;
    check_backbone(&args.model)?;
    let model_dir = PreparedModel::load(&args.model, args.precision.precision)?;
    let (head, spec) = load_head(&args.head)?;
    let size = config.input.size;
    let shape = model_dir.block5_shape(size);
    check_head_fits(&spec, &args.head, &shape, size)?;
    if let Some(p) = model_dir.preprocess.filter(|&p| p != config.input.preprocess) {
        tracing::warn!(
            "{} says its weights expect --preprocess {p}, running with {}",
            args.model.display(),
            config.input.preprocess
        );
    }
    let train = scan(&args.train, None)?;
    let validation = scan(&args.validation, Some(&train))?;
    let classes = train.classes.clone();
    if !spec.classes.is_empty() && spec.classes != classes {
        bail!(
            "{} was trained for classes {}, but {} has {}",
            args.head.join(sd_train::head::export::HEAD_JSON).display(),
            spec.classes,
            args.train.display(),
            classes
        );
    }

    let session = args.session.clone();
    let c0 = model_dir.weights.channels()[0];
    let mut frozen = Frozen {
        model: Model::load(&model_dir.frozen_base, &session)?,
        input: config.input,
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
    let inputs = [&args.model, &args.head, &args.train, &args.validation].map(PathBuf::as_path);
    // The kernels' layout is part of what a checkpoint's tensors mean.
    let fingerprinted = (&config, crate::block5::KERNEL_LAYOUT);
    let mut resumable = args.resume.resumable(&args.out, &fingerprinted, &inputs, std::time::Duration::ZERO);
    let (train_samples, val_samples) = (as_samples(&train), as_samples(&validation));
    let finetuned = finetune(
        &config,
        &mut frozen,
        trainer,
        train_samples,
        val_samples,
        work.path(),
        Some(&mut resumable),
        &mut |p| match p {
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
                bar.suspend(|| tracing::info!("{}", sd_train::summary::epoch_line(h, config.epochs)));
                bar.set_message(format!("val_acc {:.4}", h.val_acc));
            }
        },
    )?;
    bar.finish_and_clear();

    let source = |d: &Dataset| Source { dir: d.root.display().to_string(), samples: d.len() };
    let metrics = Metrics::of(
        &finetuned,
        &config,
        [source(&train), source(&validation)],
        &args.model,
        model_dir.precision,
        &args.head,
        &classes,
    );
    let int8 = match model_dir.precision {
        Precision::Int8 => Some(Int8Calibration {
            // As many training images as prepare-model calibrates on by default.
            maps: frozen
                .maps(train.spread(DEFAULT_CALIBRATION_IMAGES).into(), config.input.loader(config.batch_size))?,
            session: session.clone(),
        }),
        Precision::Fp32 => None,
    };
    outputs::write(&args.out, &finetuned, &metrics, &model_dir.frozen_base, &shape, int8.as_ref())?;
    resumable.finish()?;
    for line in sd_train::summary::evaluation_lines(&metrics.evaluation) {
        tracing::info!("{line}");
    }
    drop(work);
    sd_cli::summary(
        &args.log,
        format!(
            "finetune: val_acc {:.4} (epoch {}; {:.4} before), best {:.4} (epoch {}), {} in {:.1} s ({:.1} s/epoch, +{:.1} s caching) on {} -> {}",
            metrics.epochs.exported.val_acc,
            metrics.epochs.exported.epoch,
            metrics.initial.val_acc,
            metrics.epochs.best.val_acc,
            metrics.epochs.best.epoch,
            sd_cli::count(metrics.epochs.epochs, "epoch"),
            metrics.epochs.seconds,
            metrics.epochs.seconds_per_epoch,
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
