//! `report`: one self-contained HTML page per pipeline run, `index.html`, with the files it
//! links (JPEG thumbnails) and, for other tools, the learning curves and the confusion matrix as
//! SVG files and the per-epoch histories as CSV. Inline CSS and SVG, no script, nothing from the
//! network: the folder can be opened from disk, mailed or archived as it is.
//!
//! The page shows the data (classes, images per class and split, thumbnails, augmented copies
//! of one training image), every stage of the last `pipeline run` (from `pipeline.lock`: time,
//! params, device), both trainers' learning curves with the exported epoch marked, validation
//! before and after fine-tuning, the evaluation (confusion matrix heat map, per-class precision,
//! recall and F1), the validation images the model gets wrong (most confident first), and every
//! recorded run of the pipeline, best first, this one marked.
//!
//! It reads what the stages wrote ([`read`]); the lock and the runs through their one
//! description in `sd_data::layout`.

pub mod audit;
pub mod cli;
pub mod confusion;
pub mod html;
pub mod page;
pub mod read;
pub mod thumbs;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sd_data::image::{ImageSize, ResizeFilter};
use sd_transform::Augmenter;

pub const INDEX: &str = "index.html";
pub const CONFUSION: &str = "confusion.svg";

/// The standalone copies of a trainer's curves and history: `curves-<stage>.svg`,
/// `history-<stage>.csv`.
pub fn curves_file(stage: &str) -> String {
    format!("curves-{stage}.svg")
}

pub fn history_file(stage: &str) -> String {
    format!("history-{stage}.csv")
}

/// Where the report's inputs are.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The data set: `train/<class>/` and `validation/<class>/`.
    pub data: PathBuf,
    pub head: PathBuf,
    pub finetune: PathBuf,
    pub predict: PathBuf,
    /// The pipeline file whose lock records the run (none: the page says so).
    pub pipeline: Option<PathBuf>,
    /// `audit`'s folder (none: the page leaves its section out).
    pub audit: Option<PathBuf>,
}

/// What the page shows of the data, and how the augmented copies are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Thumbnails per class.
    pub thumbnails: usize,
    /// Wrong predictions shown at most.
    pub mistakes: usize,
    /// Augmented copies of one training image.
    pub previews: usize,
    pub augmenter: Augmenter,
    /// The size the images were augmented at (augment rounds' `--size`).
    pub size: ImageSize,
    pub resize_filter: ResizeFilter,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Summary {
    pub accuracy: f64,
    pub mistakes: usize,
    pub files: usize,
}

/// Reads everything, then writes the report folder `out` (replaced as a whole when complete).
pub fn write(inputs: &Inputs, options: &Options, out: &Path) -> Result<Summary> {
    let head = read::Training::read(&inputs.head, "train-head")?;
    let finetune = read::Training::read(&inputs.finetune, "finetune")?;
    let predicted = read::Prediction::read(&inputs.predict)?;
    let run = inputs.pipeline.as_deref().map(read::Run::read).transpose()?;
    let audit = inputs.audit.as_deref().map(sd_data::layout::audit::Audit::read).transpose()?;
    let train = sd_data::Dataset::scan(inputs.data.join("train"))?;
    let validation = sd_data::Dataset::scan(inputs.data.join("validation"))?;
    let test_dir = inputs.data.join(sd_data::layout::split::TEST);
    let test = test_dir.is_dir().then(|| sd_data::Dataset::scan(&test_dir)).transpose()?;

    let staging = sd_data::artifact::StagingDir::create(out)?;
    let dir = staging.path();
    let mut files = 0;
    let mut save = |name: String, bytes: &[u8]| -> Result<()> {
        files += 1;
        Ok(sd_data::artifact::write_bytes(dir.join(name), bytes)?)
    };
    let head_curves = sd_train::summary::curves_svg(&head.history, Some(head.epochs.exported.epoch))
        .map_err(anyhow::Error::msg)
        .context("cannot draw train-head's curves")?;
    let finetune_curves = sd_train::summary::curves_svg(&finetune.history, Some(finetune.epochs.exported.epoch))
        .map_err(anyhow::Error::msg)
        .context("cannot draw finetune's curves")?;
    let heat_map = confusion::heat_map(&predicted.evaluation);
    save(curves_file("train-head"), head_curves.as_bytes())?;
    save(curves_file("finetune"), finetune_curves.as_bytes())?;
    save(CONFUSION.into(), heat_map.as_bytes())?;
    for (stage, t) in [("train-head", &head), ("finetune", &finetune)] {
        save(history_file(stage), (sd_train::summary::history_csv(&t.history).join("\n") + "\n").as_bytes())?;
    }

    let page = page::Page {
        inputs,
        options,
        head: &head,
        finetune: &finetune,
        predicted: &predicted,
        run: run.as_ref(),
        audit: audit.as_ref(),
        train: &train,
        validation: &validation,
        test: test.as_ref(),
        curves: [&head_curves, &finetune_curves],
        heat_map: &heat_map,
    };
    let (html, thumbnails) = page.render(dir)?;
    save(INDEX.into(), html.as_bytes())?;
    staging.commit()?;
    Ok(Summary {
        accuracy: predicted.evaluation.accuracy,
        mistakes: predicted.mistakes(options.mistakes).len(),
        files: files + thumbnails,
    })
}
