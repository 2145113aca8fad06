//! `train-head`: trains the dense head on bottleneck features.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::data::Split;
use crate::optim::Optimizer;
use crate::report::{self, Metrics, Source};
use crate::train::{self, Preset, Schedule, TrainConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// Keras RMSprop (default learning rate 1e-3).
    Rmsprop,
    /// SGD with momentum (default learning rate 1e-2, momentum 0.9).
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    Constant,
    /// Cosine decay over all steps to `lr · --lr-min-factor`.
    Cosine,
    /// Multiply by `--step-factor` every `--step-every` epochs.
    Step,
}

/// Trains Flatten -> Dense(ReLU) -> Dropout -> Dense(1, sigmoid) on bottleneck features and
/// writes weights (.npy, Keras layout), head.onnx, metrics.json, history.csv and curves.svg.
///
/// Options left out take the preset's value (see `--preset`); the run's full config is
/// recorded in metrics.json.
#[derive(Debug, Parser)]
#[command(name = "train-head", version, args_override_self = true)]
pub struct Args {
    /// Training features: a folder with features.npy, labels.npy, classes.json (from
    /// `bottleneck`); several folders (e.g. the images and augmented rounds of them) are joined.
    #[arg(long, value_name = "DIR", num_args = 1.., required = true)]
    pub train: Vec<PathBuf>,
    /// Validation features, same layout.
    #[arg(long, value_name = "DIR")]
    pub validation: PathBuf,
    /// Output folder (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Starting point for every option: `keras` is the blog recipe exactly; `recommended` adds
    /// input dropout, an L2 penalty and a cosine schedule (README).
    #[arg(long, value_enum, default_value_t = Preset::Recommended)]
    pub preset: Preset,
    /// Hidden layer widths, comma separated (e.g. 256 or 512,256).
    #[arg(long, value_delimiter = ',', num_args = 1.., action = clap::ArgAction::Set)]
    pub hidden: Option<Vec<usize>>,
    /// Dropout rate after each hidden layer.
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Dropout on the input features while training (feature-level augmentation).
    #[arg(long)]
    pub input_dropout: Option<f64>,
    /// Mirror training feature maps left-right at random (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub flip: Option<bool>,
    /// Mixup with λ ~ Beta(α, α) for this α (e.g. 0.4; 0 = off).
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// Learning rate (peak rate with a schedule).
    #[arg(long)]
    pub lr: Option<f64>,
    /// RMSprop decay of the squared-gradient average.
    #[arg(long)]
    pub rho: Option<f64>,
    /// RMSprop epsilon (inside the square root, as in Keras 3).
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// Cosine schedule: final rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min_factor: f64,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 10)]
    pub step_every: usize,
    /// Step schedule: factor per decay.
    #[arg(long, default_value_t = 0.5)]
    pub step_factor: f64,
    /// Decoupled weight decay on kernels (Keras `weight_decay`, AdamW-style: w -= lr·wd·w).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// L2 penalty on kernels (Keras `kernel_regularizer=L2(l2)`).
    #[arg(long)]
    pub l2: Option<f64>,
    /// Label smoothing: targets y·(1-s) + s/2.
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Exponential moving average of the weights with this momentum (e.g. 0.99; 0 = off);
    /// validation and export then use the average (Keras `use_ema`).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Export the epoch with the best validation accuracy instead of the last (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub keep_best: Option<bool>,
    /// Seed for weight init, shuffling and dropout; same seed + inputs + options = same weights.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

impl Args {
    /// The preset with every given option applied.
    pub fn config(&self) -> TrainConfig {
        let mut c = self.preset.config();
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
        set(&mut c.label_smoothing, self.label_smoothing);
        set(&mut c.ema, self.ema);
        set(&mut c.mixup, self.mixup);
        set(&mut c.regularization.weight_decay, self.weight_decay);
        set(&mut c.regularization.l2, self.l2);
        match self.optimizer {
            Some(OptimizerName::Sgd) if !matches!(c.optimizer, Optimizer::Sgd { .. }) => {
                c.optimizer = Optimizer::Sgd { momentum: 0.9, nesterov: false };
                c.learning_rate = 1e-2;
            }
            Some(OptimizerName::Rmsprop) if !matches!(c.optimizer, Optimizer::Rmsprop { .. }) => {
                c.optimizer = Optimizer::RMSPROP;
                c.learning_rate = 1e-3;
            }
            _ => {}
        }
        match &mut c.optimizer {
            Optimizer::Rmsprop { rho, epsilon } => {
                set(rho, self.rho);
                set(epsilon, self.epsilon);
            }
            Optimizer::Sgd { momentum, nesterov } => {
                set(momentum, self.momentum);
                *nesterov |= self.nesterov;
            }
        }
        set(&mut c.learning_rate, self.lr);
        c.schedule = match self.schedule {
            None => c.schedule,
            Some(ScheduleName::Constant) => Schedule::Constant,
            Some(ScheduleName::Cosine) => Schedule::Cosine { min_factor: self.lr_min_factor },
            Some(ScheduleName::Step) => Schedule::Step { every: self.step_every, factor: self.step_factor },
        };
        c.epochs = self.epochs.unwrap_or(c.epochs);
        c.batch_size = self.batch_size.unwrap_or(c.batch_size);
        c.keep_best = self.keep_best.unwrap_or(c.keep_best);
        c.flip = self.flip.unwrap_or(c.flip);
        c.seed = self.seed.unwrap_or(c.seed);
        c
    }
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    sd_cli::run(|| run(&args))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = args.config();
    config.validate()?;
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
    tracing::info!(
        train = train_split.len(),
        validation = val_split.len(),
        features = ?train_split.feature_shape,
        config = %serde_json::to_string(&config)?,
        "training the head"
    );

    let bar = sd_cli::progress_bar(config.epochs as u64, "epochs", args.log.interactive());
    let trained = train::train(&config, &train_split, &val_split, |h| {
        bar.suspend(|| tracing::info!("{}", report::epoch_line(h, config.epochs)));
        bar.set_message(format!("val_acc {:.4}", h.val_acc));
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    // Staged and renamed when complete: a failed run never leaves a half-written head.
    let staging = sd_data::artifact::StagingDir::create(&args.out)?;
    crate::export::save(&trained.head, &train_split.feature_shape, &train_split.classes, staging.path())?;
    let train_dirs: Vec<String> = args.train.iter().map(|d| d.display().to_string()).collect();
    let train_source = Source { dir: train_dirs.join(", "), samples: train_split.len() };
    let val_source = Source { dir: val_split.dir.display().to_string(), samples: val_split.len() };
    let metrics = Metrics::of(&trained, &config, train_source, val_source);
    report::write(staging.path(), &metrics, &trained.history)?;
    staging.commit()?;

    sd_cli::summary(
        &args.log,
        format!(
            "train-head: val_acc {:.4} (epoch {}), best {:.4} (epoch {}), {} epochs in {:.1} s ({:.2} s/epoch) -> {}",
            metrics.exported.val_acc,
            metrics.exported.epoch,
            metrics.best.val_acc,
            metrics.best.epoch,
            metrics.epochs,
            metrics.seconds,
            metrics.seconds_per_epoch,
            args.out.display()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> TrainConfig {
        let mut argv = vec!["train-head", "--train", "a", "--validation", "b", "--out", "c"];
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
        assert_eq!(c.schedule, Schedule::Constant);
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
        assert_eq!(c.schedule, Schedule::Step { every: 10, factor: 0.5 });
        assert!(c.keep_best);
        let c =
            parse(&["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--nesterov", "--keep-best", "false"]);
        assert_eq!(c.optimizer, Optimizer::Sgd { momentum: 0.5, nesterov: true });
        assert_eq!(c.learning_rate, 0.05);
        assert!(!c.keep_best);
    }
}
