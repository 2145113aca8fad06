//! `train-head`: trains the dense head on bottleneck features.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use sd_cli::args::{FitArgs, FitOptions, LossArgs, Optim, OptimArgs, ResumeArgs, count, non_negative, rate};
use sd_data::layout::features::{FEATURES, LABELS};
use sd_train::Optimizer;
use sd_train::summary::Source;

use crate::data::Split;
use crate::outputs::{self, Metrics};
use crate::train::{self, Preset, TrainConfig};

/// Trains Flatten -> Dense(ReLU) -> Dropout -> Dense on bottleneck features (one sigmoid unit for
/// two classes, a softmax over N otherwise) and writes weights (.npy, Keras layout), head.onnx,
/// metrics.json, history.csv and curves.svg.
///
/// Options left out take the preset's value (see `--preset`); the run's full config is
/// recorded in metrics.json.
#[derive(Debug, Parser)]
#[command(name = "train-head", version, args_override_self = true)]
#[command(mut_arg("optimizer", |a| a.help(
    "rmsprop or sgd [default: the preset's: rmsprop, lr 1e-3; switching to sgd: lr 1e-2, momentum 0.9]"
)))]
#[command(mut_arg("schedule", |a| a.help(
    "Learning-rate schedule: constant, cosine (decay over all steps to lr · --lr-min-factor) or step (times \
     --step-factor every --step-every epochs) [default: the preset's: constant for keras, cosine for recommended]"
)))]
pub struct Args {
    /// Training features: a folder bottleneck writes (features.npy, labels.npy, classes.json);
    /// several folders (e.g. the images and augmented rounds of them) are joined. Was --train,
    /// which now only names image folders.
    #[arg(long = "train-features", alias = "train", value_name = "DIR", num_args = 1.., required = true)]
    pub train: Vec<PathBuf>,
    /// Validation features, same layout. Was --validation.
    #[arg(long = "validation-features", alias = "validation", value_name = "DIR")]
    pub validation: PathBuf,
    /// Output folder (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Starting point for every option: `keras` is the blog recipe exactly; `recommended` adds
    /// input dropout, an L2 penalty and a cosine schedule (README).
    #[arg(long, value_enum, default_value_t = Preset::Recommended)]
    pub preset: Preset,
    /// How each feature map [h, w, C] becomes the head's input: flatten (Keras' Flatten, the
    /// recipe) or avg (GlobalAveragePooling2D: C values, the better choice for flowers).
    #[arg(long, value_enum)]
    pub pool: Option<sd_train::head::Pool>,
    /// Hidden layer widths, comma separated (e.g. 256 or 512,256).
    #[arg(long, value_delimiter = ',', num_args = 1.., action = clap::ArgAction::Set, value_parser = count)]
    pub hidden: Option<Vec<usize>>,
    /// Dropout rate after each hidden layer.
    #[arg(long, value_parser = rate)]
    pub dropout: Option<f64>,
    /// Dropout on the input features while training (feature-level augmentation).
    #[arg(long, value_parser = rate)]
    pub input_dropout: Option<f64>,
    /// Mirror training feature maps left-right at random.
    #[arg(long)]
    pub flip: bool,
    /// Mixup with λ ~ Beta(α, α) for this α (e.g. 0.4; 0 = off).
    #[arg(long, value_name = "ALPHA", value_parser = non_negative)]
    pub mixup: Option<f64>,
    /// Optimiser and schedule (default: the preset's; switching to sgd: lr 1e-2, momentum 0.9;
    /// to rmsprop: lr 1e-3).
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Decoupled weight decay on kernels (Keras `weight_decay`, AdamW-style: w -= lr·wd·w).
    #[arg(long, value_parser = non_negative)]
    pub weight_decay: Option<f64>,
    /// L2 penalty on kernels (Keras `kernel_regularizer=L2(l2)`).
    #[arg(long, value_parser = non_negative)]
    pub l2: Option<f64>,
    #[command(flatten)]
    pub loss: LossArgs,
    /// Exponential moving average of the weights with this momentum (e.g. 0.99; 0 = off);
    /// validation and export then use the average (Keras `use_ema`).
    #[arg(long, value_parser = rate)]
    pub ema: Option<f64>,
    /// Epochs, batches, seed, which epoch to export, early stopping.
    #[command(flatten)]
    pub fit: FitArgs,
    #[command(flatten)]
    pub resume: ResumeArgs,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

impl Args {
    /// The preset with every given option applied.
    pub fn config(&self) -> TrainConfig {
        let mut c = self.preset.config();
        c.pool = self.pool.unwrap_or(c.pool);
        if let Some(h) = &self.hidden {
            c.hidden = h.clone();
        }
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut c.dropout, self.dropout);
        set(&mut c.input_dropout, self.input_dropout);
        self.loss.apply(&mut c.label_smoothing, &mut c.class_weight);
        set(&mut c.ema, self.ema);
        set(&mut c.mixup, self.mixup);
        set(&mut c.regularization.weight_decay, self.weight_decay);
        set(&mut c.regularization.l2, self.l2);
        let base = Optim { optimizer: c.optimizer, learning_rate: c.learning_rate, schedule: c.schedule };
        let default_lr = |o: &Optimizer| if matches!(o, Optimizer::Sgd { .. }) { 1e-2 } else { 1e-3 };
        let optim = self.optim.apply(base, default_lr);
        (c.optimizer, c.learning_rate, c.schedule) = (optim.optimizer, optim.learning_rate, optim.schedule);
        self.fit.apply(FitOptions {
            epochs: &mut c.epochs,
            batch_size: &mut c.batch_size,
            seed: &mut c.seed,
            restore_best: &mut c.keep_best,
            patience: &mut c.patience,
        });
        c.flip |= self.flip;
        c
    }
}

/// Checks that a features flag names a folder bottleneck wrote, with advice for images.
fn check_features(flag: &str, dir: &Path) -> anyhow::Result<()> {
    use sd_cli::paths;
    let images = if paths::is_split_root(dir) {
        Some(dir.join("train"))
    } else {
        (dir.is_dir() && !paths::is_features(dir) && paths::holds_class_folders(dir)).then(|| dir.to_path_buf())
    };
    if let Some(images) = images {
        let name = images.file_name().map_or("train".into(), |n| n.to_string_lossy());
        return Err(sd_cli::usage(format!(
            "{flag} {} holds images, not features: train-head trains on the features bottleneck computes from them; run \
             `bottleneck --data {} --model artifacts/model/conv_base.onnx --out artifacts/features/{name}`, then pass \
             {flag} artifacts/features/{name}",
            dir.display(),
            images.display()
        )));
    }
    paths::folder(
        flag,
        dir,
        &[FEATURES, LABELS],
        "a folder bottleneck writes (features.npy, labels.npy, classes.json; e.g. artifacts/features/train)",
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    for dir in &args.train {
        check_features("--train-features", dir)?;
    }
    check_features("--validation-features", &args.validation)?;
    let config = args.config();
    if let Err(e) = config.validate() {
        // Options that contradict each other are a usage error (exit 2), like a bad value.
        use clap::CommandFactory;
        Args::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit();
    }
    let train_split = Split::concat(
        args.train
            .iter()
            .map(|dir| {
                Split::load(dir).with_context(|| format!("cannot load training features from {}", dir.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    )?;
    let val_split = Split::load(&args.validation)
        .with_context(|| format!("cannot load validation features from {}", args.validation.display()))?;
    train_split.check_compatible(&val_split)?;
    let (train_split, val_split) = (train_split.pooled(config.pool)?, val_split.pooled(config.pool)?);
    tracing::info!(
        train = train_split.len(),
        validation = val_split.len(),
        features = ?train_split.feature_shape,
        config = %serde_json::to_string(&config)?,
        "training the head"
    );

    // An epoch of the head takes a second or so: a checkpoint every half minute is plenty.
    let inputs: Vec<&std::path::Path> = args.train.iter().chain([&args.validation]).map(|p| p.as_path()).collect();
    let mut resumable = args.resume.resumable(&args.out, &config, &inputs, std::time::Duration::from_secs(30));
    let bar = sd_cli::progress_bar(config.epochs as u64, "epochs", args.log.interactive());
    let trained = train::train_resumable(&config, &train_split, &val_split, Some(&mut resumable), |h| {
        bar.suspend(|| tracing::info!("{}", sd_train::summary::epoch_line(h, config.epochs)));
        bar.set_message(format!("val_acc {:.4}", h.val_acc));
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    // Staged and renamed when complete: a failed run never leaves a half-written head.
    let staging = sd_data::artifact::StagingDir::create(&args.out)?;
    sd_train::head::export::save(&trained.weights, &train_split.feature_shape, &train_split.classes, staging.path())?;
    let train_dirs: Vec<String> = args.train.iter().map(|d| d.display().to_string()).collect();
    let train_source = Source { dir: train_dirs.join(", "), samples: train_split.len() };
    let val_source = Source { dir: val_split.dir.display().to_string(), samples: val_split.len() };
    let loss = sd_train::Loss::for_classes(val_split.classes.len());
    let evaluation = train::evaluate(&trained.weights, val_split.features.view(), &val_split.labels, loss)
        .report(val_split.classes.names());
    for line in sd_train::summary::evaluation_lines(&evaluation) {
        tracing::info!("{line}");
    }
    let metrics = Metrics::of(&trained, &config, train_source, val_source, evaluation);
    outputs::write(staging.path(), &metrics, &trained)?;
    staging.commit()?;
    resumable.finish()?;

    sd_cli::summary(
        &args.log,
        format!(
            "train-head: val_acc {:.4} (epoch {}), best {:.4} (epoch {}), {} in {:.1} s ({:.2} s/epoch) -> {}",
            metrics.epochs.exported.val_acc,
            metrics.epochs.exported.epoch,
            metrics.epochs.best.val_acc,
            metrics.epochs.best.epoch,
            sd_cli::count(metrics.epochs.epochs, "epoch"),
            metrics.epochs.seconds,
            metrics.epochs.seconds_per_epoch,
            args.out.display()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> TrainConfig {
        let mut argv = vec!["train-head", "--train-features", "a", "--validation-features", "b", "--out", "c"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap().config()
    }

    #[test]
    fn keras_preset_is_the_recipe() {
        let c = parse(&["--preset", "keras"]);
        assert_eq!(c, Preset::Keras.config());
        assert_eq!(c.hidden, [256]);
        assert_eq!((c.dropout, c.learning_rate, c.batch_size, c.epochs), (0.5, 1e-3, 16, 50));
        assert_eq!(c.optimizer, Optimizer::Rmsprop { rho: 0.9, epsilon: 1e-7 });
        assert_eq!(c.schedule, sd_train::Schedule::Constant);
    }

    #[test]
    fn options_override_the_preset() {
        let c = parse(&[
            "--hidden",
            "512,256",
            "--dropout",
            "0.3",
            "--optimizer",
            "sgd",
            "--schedule",
            "step",
            "--keep-best",
        ]);
        assert_eq!(c.hidden, [512, 256]);
        assert_eq!(c.dropout, 0.3);
        assert_eq!(c.optimizer, Optimizer::Sgd { momentum: 0.9, nesterov: false });
        assert_eq!(c.learning_rate, 1e-2);
        assert_eq!(c.schedule, sd_train::Schedule::Step { every: 10, factor: 0.5 });
        assert!(c.keep_best);
        let c =
            parse(&["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--nesterov", "--keep-best", "false"]);
        assert_eq!(c.optimizer, Optimizer::Sgd { momentum: 0.5, nesterov: true });
        assert_eq!(c.learning_rate, 0.05);
        assert!(!c.keep_best);
        let c = parse(&["--restore-best", "--patience", "3"]);
        assert_eq!((c.keep_best, c.patience), (true, Some(3)));
    }
}
