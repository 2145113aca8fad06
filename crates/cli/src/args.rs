//! Flag groups that several stages take, defined once and flattened into each stage's
//! arguments (`#[command(flatten)]`), so that a flag means the same everywhere
//! (`--device` / `--threads` are `sd_runtime::SessionConfig`'s), and value parsers for numeric
//! flags: a value out of range is a usage error (exit 2) that names the flag, before any work.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use sd_data::image::{ImageSize, ResizeFilter, ResizeMode};
use sd_data::layout::model::Precision;
use sd_data::{ModelInput, Preprocess};
use sd_train::{ClassWeight, Optimizer, Schedule};
use sd_transform::params::parse_zoom;
use sd_transform::{AugmentConfig, FillMode, Preset};

/// A count of at least 1 (epochs, batch size, rounds).
pub fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("'{s}' is not a number"))
}

/// A number > 0 (learning rate, epsilon).
pub fn positive(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err(format!("{v} must be greater than 0")) })
}

/// A number >= 0 (L2, weight decay, mixup alpha).
pub fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("{v} must be 0 or more")) })
}

/// A rate in [0, 1) (dropout, label smoothing, decay).
pub fn rate(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("{v} must be in [0, 1)")) })
}

/// A fraction in [0, 1] (momentum).
pub fn fraction(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} must be in [0, 1]")) })
}

/// How images are resized.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ResizeArgs {
    /// Image size: N (square) or WxH, e.g. 150 or 224x160 [default: 150].
    #[arg(long)]
    pub size: Option<ImageSize>,
    /// Resize filter: bilinear (anti-aliased, like PIL), nearest (Keras' default), bicubic,
    /// lanczos3 [default: bilinear].
    #[arg(long)]
    pub resize_filter: Option<ResizeFilter>,
    /// squash (to the exact size, like Keras) or crop (keep the aspect ratio, cut out the
    /// centre: shorter side to size / 0.875, as ImageNet models are evaluated) [default:
    /// squash, or what the model expects].
    #[arg(long)]
    pub resize: Option<ResizeMode>,
}

/// How images become model input: resizing, then pixel preprocessing.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct InputArgs {
    #[command(flatten)]
    pub resize: ResizeArgs,
    /// Pixel preprocessing: caffe (BGR minus the ImageNet means: what the weights expect) or
    /// rescale (RGB / 255, the original tutorial) [default: caffe].
    #[arg(long)]
    pub preprocess: Option<Preprocess>,
}

impl InputArgs {
    /// The given flags, the rest from `defaults`.
    pub fn or(&self, defaults: ModelInput) -> ModelInput {
        ModelInput {
            size: self.resize.size.unwrap_or(defaults.size),
            resize_filter: self.resize.resize_filter.unwrap_or(defaults.resize_filter),
            preprocess: self.preprocess.unwrap_or(defaults.preprocess),
            resize: self.resize.resize.unwrap_or(defaults.resize),
        }
    }
}

/// Continuing an interrupted training run.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ResumeArgs {
    /// Continue from the checkpoint that a killed or failed run with the same options and inputs
    /// left beside the output (`.OUT.checkpoint`); the result is the same as an uninterrupted
    /// run's. Without it, training starts afresh.
    #[arg(long)]
    pub resume: bool,
}

impl ResumeArgs {
    /// Checkpoints of the run writing `out`, for this configuration and these inputs, saved after
    /// an epoch once `every` has passed since the last save.
    pub fn resumable(
        &self,
        out: &std::path::Path,
        config: &impl serde::Serialize,
        inputs: &[&std::path::Path],
        every: std::time::Duration,
    ) -> sd_train::checkpoint::Resumable {
        let fingerprint = sd_train::checkpoint::fingerprint(config, inputs);
        sd_train::checkpoint::Resumable::new(out, fingerprint, self.resume, every)
    }
}

/// How long a trainer trains, on what batches, and which epoch it exports: one grammar for
/// both trainers (Keras' `fit(epochs, batch_size)` with `EarlyStopping(patience,
/// restore_best_weights)`).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct FitArgs {
    /// Epochs to train [default: 50].
    #[arg(long, value_parser = count)]
    pub epochs: Option<usize>,
    /// Samples per training step [default: 16].
    #[arg(long, value_parser = count)]
    pub batch_size: Option<usize>,
    /// Seed of every random draw (weight init, shuffling, augmentation, dropout); the same seed,
    /// inputs and options give the same weights [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Export the epoch with the best validation accuracy (ties: the lower loss) instead of the
    /// last (Keras' restore_best_weights) [default: off in train-head; on in finetune, which counts
    /// the head it starts from as epoch 0, so it never exports a classifier worse on validation].
    #[arg(long, overrides_with_all = ["no_restore_best", "keep_best"])]
    pub restore_best: bool,
    /// Export the last epoch.
    #[arg(long, overrides_with_all = ["restore_best", "keep_best"])]
    pub no_restore_best: bool,
    /// The old spelling of --restore-best (`--keep-best [true|false]`), kept for scripts.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          overrides_with_all = ["restore_best", "no_restore_best"])]
    pub keep_best: Option<bool>,
    /// Stop once N epochs in a row bring no better validation accuracy than the best so far
    /// (Keras' EarlyStopping(patience)) [default: train every epoch].
    #[arg(long, value_name = "N", value_parser = count)]
    pub patience: Option<usize>,
}

/// The settings [`FitArgs`] sets, as a trainer's config holds them.
pub struct FitOptions<'a> {
    pub epochs: &'a mut usize,
    pub batch_size: &'a mut usize,
    pub seed: &'a mut u64,
    pub restore_best: &'a mut bool,
    pub patience: &'a mut Option<usize>,
}

impl FitArgs {
    /// Overrides the stage's defaults with the flags given.
    pub fn apply(&self, o: FitOptions) {
        *o.epochs = self.epochs.unwrap_or(*o.epochs);
        *o.batch_size = self.batch_size.unwrap_or(*o.batch_size);
        *o.seed = self.seed.unwrap_or(*o.seed);
        *o.patience = self.patience.or(*o.patience);
        if let Some(b) = self.restore_best() {
            *o.restore_best = b;
        }
    }

    /// Whether the flags ask for the best epoch (`Some(true)`) or the last (`Some(false)`).
    pub fn restore_best(&self) -> Option<bool> {
        match (self.restore_best, self.no_restore_best, self.keep_best) {
            (true, _, _) => Some(true),
            (_, true, _) => Some(false),
            (_, _, kept) => kept,
        }
    }
}

/// Which conv base (or frozen part) a stage runs.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PrecisionArgs {
    /// fp32, or int8: the statically quantised model that `prepare-model --quantize int8` writes
    /// beside the float one (conv_base.int8.onnx, frozen_base.int8.onnx), run by ONNX
    /// Runtime's int8 kernels.
    #[arg(long, default_value_t = Precision::Fp32)]
    pub precision: Precision,
}

/// What the trainers minimise, beyond the plain cross-entropy.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct LossArgs {
    /// Label smoothing s: targets y·(1-s) + s/2 for two classes, y·(1-s) + s/N for N
    /// [default: the preset's, else 0].
    #[arg(long, value_parser = rate)]
    pub label_smoothing: Option<f64>,
    /// Class weights (Keras' class_weight): none, or balanced (class c weighs
    /// n / (classes · n_c), for imbalanced folders) [default: none].
    #[arg(long, value_parser = |s: &str| s.parse::<ClassWeight>())]
    pub class_weight: Option<ClassWeight>,
}

impl LossArgs {
    /// Overrides `smoothing` and `weight` with the flags given.
    pub fn apply(&self, smoothing: &mut f64, weight: &mut ClassWeight) {
        *smoothing = self.label_smoothing.unwrap_or(*smoothing);
        *weight = self.class_weight.unwrap_or(*weight);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// Keras RMSprop (rho 0.9, epsilon 1e-7).
    Rmsprop,
    /// SGD with momentum (0.9 unless --momentum).
    Sgd,
}

impl OptimizerName {
    fn of(o: &Optimizer) -> OptimizerName {
        match o {
            Optimizer::Rmsprop { .. } => OptimizerName::Rmsprop,
            Optimizer::Sgd { .. } => OptimizerName::Sgd,
        }
    }

    /// Keras' defaults for this optimiser.
    fn defaults(self) -> Optimizer {
        match self {
            OptimizerName::Rmsprop => Optimizer::RMSPROP,
            OptimizerName::Sgd => Optimizer::Sgd { momentum: 0.9, nesterov: false },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    /// The same rate throughout.
    Constant,
    /// Cosine decay over all steps to `lr · --lr-min-factor`.
    Cosine,
    /// Multiply by `--step-factor` every `--step-every` epochs.
    Step,
}

/// The optimiser and its learning-rate schedule; flags left out keep the stage's defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct OptimArgs {
    /// rmsprop or sgd; switching from the stage's default also switches to that optimiser's
    /// default learning rate (see the stage's help).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// Learning rate (peak rate with a schedule) [default: the stage's, for its optimiser: see
    /// --optimizer].
    #[arg(long, value_parser = positive)]
    pub lr: Option<f64>,
    /// RMSprop decay of the squared-gradient average [default: 0.9].
    #[arg(long, value_parser = rate)]
    pub rho: Option<f64>,
    /// RMSprop epsilon (inside the square root, as in Keras 3) [default: 1e-7].
    #[arg(long, value_parser = positive)]
    pub epsilon: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long, value_parser = fraction)]
    pub momentum: Option<f64>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule: constant, cosine (decay over all steps to lr · --lr-min-factor)
    /// or step (times --step-factor every --step-every epochs) [default: the stage's].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// Cosine schedule: final rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub lr_min_factor: f64,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 10, value_parser = count)]
    pub step_every: usize,
    /// Step schedule: factor per decay.
    #[arg(long, default_value_t = 0.5, value_parser = positive)]
    pub step_factor: f64,
}

/// An optimiser, its (peak) learning rate and schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Optim {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub schedule: Schedule,
}

impl OptimArgs {
    /// `base` with the given flags applied; `default_lr` is the stage's learning rate for an
    /// optimiser it switches to.
    pub fn apply(&self, base: Optim, default_lr: impl Fn(&Optimizer) -> f64) -> Optim {
        let Optim { mut optimizer, mut learning_rate, mut schedule } = base;
        if let Some(name) = self.optimizer.filter(|&n| n != OptimizerName::of(&optimizer)) {
            optimizer = name.defaults();
            learning_rate = default_lr(&optimizer);
        }
        match &mut optimizer {
            Optimizer::Rmsprop { rho, epsilon } => {
                *rho = self.rho.unwrap_or(*rho);
                *epsilon = self.epsilon.unwrap_or(*epsilon);
            }
            Optimizer::Sgd { momentum, nesterov } => {
                *momentum = self.momentum.unwrap_or(*momentum);
                *nesterov |= self.nesterov;
            }
        }
        learning_rate = self.lr.unwrap_or(learning_rate);
        schedule = match self.schedule {
            None => schedule,
            Some(ScheduleName::Constant) => Schedule::Constant,
            Some(ScheduleName::Cosine) => Schedule::Cosine { min_factor: self.lr_min_factor },
            Some(ScheduleName::Step) => Schedule::Step { every: self.step_every, factor: self.step_factor },
        };
        Optim { optimizer, learning_rate, schedule }
    }
}

/// ImageDataGenerator's arguments; a preset first, then each flag given overrides it. Flags left
/// out take the preset's value, or none (no transform) without a preset.
#[derive(Debug, Clone, Args, Default)]
pub struct TransformArgs {
    /// Augmentation preset: tutorial (rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal
    /// flip, fill nearest) or finetune (shear 0.2, zoom 0.2, horizontal flip). Was --preset,
    /// which now only names train-head's training presets.
    #[arg(
        long = "augment",
        alias = "preset",
        value_name = "PRESET",
        value_parser = PossibleValuesParser::new(Preset::NAMES).map(|s| s.parse::<Preset>().expect("a listed name"))
    )]
    pub preset: Option<Preset>,
    /// Rotation in degrees, uniform in [-r, r] [default: 0].
    #[arg(long)]
    pub rotation_range: Option<f64>,
    /// Horizontal shift: a fraction of the width if < 1, else pixels; uniform in [-s, s]
    /// [default: 0].
    #[arg(long)]
    pub width_shift_range: Option<f64>,
    /// Vertical shift: a fraction of the height if < 1, else pixels [default: 0].
    #[arg(long)]
    pub height_shift_range: Option<f64>,
    /// Shear angle in DEGREES (Keras >= 2.2; Keras 1 read radians) [default: 0].
    #[arg(long)]
    pub shear_range: Option<f64>,
    /// Zoom: z (meaning [1-z, 1+z]) or lo,hi; > 1 zooms out [default: 0, no zoom].
    #[arg(long, value_parser = |s: &str| parse_zoom(s))]
    pub zoom_range: Option<[f64; 2]>,
    /// Mirror half of the images left-right (on with either preset).
    #[arg(long)]
    pub horizontal_flip: bool,
    /// Mirror half of the images upside down.
    #[arg(long)]
    pub vertical_flip: bool,
    /// How pixels outside the image are filled [default: nearest].
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(FillMode::NAMES).map(|s| s.parse::<FillMode>().expect("a listed name"))
    )]
    pub fill_mode: Option<FillMode>,
    /// Fill value for --fill-mode constant (0-255) [default: 0].
    #[arg(long)]
    pub cval: Option<u8>,
}

impl TransformArgs {
    pub fn config(&self) -> AugmentConfig {
        let mut c = self.preset.map(Preset::config).unwrap_or_default();
        let set = |field: &mut f64, v: Option<f64>| *field = v.unwrap_or(*field);
        set(&mut c.rotation_range, self.rotation_range);
        set(&mut c.width_shift_range, self.width_shift_range);
        set(&mut c.height_shift_range, self.height_shift_range);
        set(&mut c.shear_range, self.shear_range);
        c.zoom_range = self.zoom_range.unwrap_or(c.zoom_range);
        c.horizontal_flip |= self.horizontal_flip;
        c.vertical_flip |= self.vertical_flip;
        c.fill_mode = self.fill_mode.unwrap_or(c.fill_mode);
        c.cval = self.cval.unwrap_or(c.cval);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        optim: OptimArgs,
        #[command(flatten)]
        fit: FitArgs,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap()
    }

    const BASE: Optim = Optim { optimizer: Optimizer::RMSPROP, learning_rate: 1e-3, schedule: Schedule::Constant };

    #[test]
    fn numeric_flags_out_of_range_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--lr", "0"][..], "--lr"),
            (&["--lr", "nan"], "--lr"),
            (&["--momentum", "1.5"], "--momentum"),
            (&["--rho", "1"], "--rho"),
            (&["--step-every", "0"], "--step-every"),
        ] {
            let e = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).err().unwrap();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
        assert_eq!((count("3"), count("0").is_err()), (Ok(3), true));
        assert_eq!((rate("0"), rate("1").is_err(), non_negative("-1").is_err()), (Ok(0.0), true, true));
    }

    #[test]
    fn input_flags_override_the_defaults() {
        let c = parse(&["--size", "224", "--preprocess", "rescale"]);
        let got = c.input.or(ModelInput::RECIPE);
        assert_eq!(got.size, ImageSize::square(224));
        assert_eq!((got.preprocess, got.resize_filter), (Preprocess::Rescale, ResizeFilter::Bilinear));
        assert_eq!(parse(&[]).input.or(ModelInput::RECIPE), ModelInput::RECIPE);
    }

    #[test]
    fn optimiser_flags_apply_to_the_base() {
        let lr = |o: &Optimizer| if matches!(o, Optimizer::Sgd { .. }) { 1e-2 } else { 1e-3 };
        assert_eq!(parse(&[]).optim.apply(BASE, lr), BASE);
        let o = parse(&["--optimizer", "sgd", "--schedule", "step"]).optim.apply(BASE, lr);
        assert_eq!(o.optimizer, Optimizer::Sgd { momentum: 0.9, nesterov: false });
        assert_eq!((o.learning_rate, o.schedule), (1e-2, Schedule::Step { every: 10, factor: 0.5 }));
        let o = parse(&["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.5", "--nesterov"]).optim.apply(BASE, lr);
        assert_eq!((o.optimizer, o.learning_rate), (Optimizer::Sgd { momentum: 0.5, nesterov: true }, 0.05));
        // The same optimiser as the base keeps its learning rate and settings.
        let o = parse(&["--optimizer", "rmsprop", "--rho", "0.8"]).optim.apply(BASE, lr);
        assert_eq!((o.optimizer, o.learning_rate), (Optimizer::Rmsprop { rho: 0.8, epsilon: 1e-7 }, 1e-3));
    }

    #[test]
    fn fit_flags_override_the_defaults_and_the_last_spelling_wins() {
        let fit = |args: &[&str], restore_best: bool| {
            let (mut epochs, mut batch_size, mut seed, mut restore, mut patience) = (50, 16, 0, restore_best, None);
            let o = FitOptions {
                epochs: &mut epochs,
                batch_size: &mut batch_size,
                seed: &mut seed,
                restore_best: &mut restore,
                patience: &mut patience,
            };
            parse(args).fit.apply(o);
            (epochs, batch_size, seed, restore, patience)
        };
        assert_eq!(fit(&[], false), (50, 16, 0, false, None));
        assert_eq!(fit(&[], true), (50, 16, 0, true, None), "finetune's default");
        let all = ["--epochs", "5", "--batch-size", "8", "--seed", "3", "--restore-best", "--patience", "2"];
        assert_eq!(fit(&all, false), (5, 8, 3, true, Some(2)));
        assert!(!fit(&["--no-restore-best"], true).3);
        assert!(fit(&["--no-restore-best", "--restore-best"], false).3, "the last one wins");
        // The old spelling, with and without a value.
        assert!(fit(&["--keep-best"], false).3);
        assert!(!fit(&["--keep-best", "false"], true).3);
        assert!(!fit(&["--restore-best", "--keep-best", "false"], true).3);
        let e = Cli::try_parse_from(["x", "--patience", "0"]).err().unwrap();
        assert!(e.exit_code() == 2 && e.to_string().contains("--patience"), "{e}");
    }
}
