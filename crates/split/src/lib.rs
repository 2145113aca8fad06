//! `split`: a data set's train / validation / test folders, made two ways.
//!
//! * `split --from PHOTOS --out DIR` ([`folders`]): any class-folder tree
//!   (`PHOTOS/<class>/**/<photo>`) into `DIR/{train,validation,test}/<class>/`, per class, each
//!   photo placed by a hash of its bytes and the seed, so adding photos never moves one already
//!   placed; a tree already split into `train/ validation/ [test/]` is linked as it is.
//! * `split --source KAGGLE_TRAIN --out DIR` ([`kaggle`]): the tutorial's Dogs vs Cats split of
//!   Kaggle's flat `train/` folder (`cat.N.jpg`, `dog.N.jpg`), the first N by number.
//!
//! Either way the output is built in a temporary folder next to DIR and renamed into place, so
//! DIR is the old or the complete new split, never a part of one; the photos are hard links
//! (copies across file systems), symbolic links or copies (`--link`).

pub mod folders;
pub mod kaggle;

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{ArgGroup, Parser, ValueEnum};

pub use folders::{Fractions, split_folders};
pub use kaggle::split;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Link {
    /// Hard links (no extra space; falls back to copies across file systems).
    #[default]
    Hard,
    /// Symbolic links to the absolute source paths.
    Symlink,
    Copy,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "source folder {0} does not exist or is not a folder; pass Kaggle's flat train/ folder (cat.0.jpg ... dog.12499.jpg)"
    )]
    NoSource(PathBuf),
    #[error(
        "{} holds class folders ({folders}), not Kaggle's cat.N.jpg / dog.N.jpg files: split it with `split --from {} --out DIR`",
        dir.display(), dir.display()
    )]
    ClassFolders { dir: PathBuf, folders: String },
    #[error("not enough images in {}: {}", dir.display(), missing.join("; "))]
    NotEnough { dir: PathBuf, missing: Vec<String> },
    #[error(transparent)]
    Photos(#[from] sd_data::dataset::DatasetError),
    #[error(
        "{} is split only in part: it has {found} but no {missing}/; add {missing}/ (the same class folders), or put the class folders directly in it to have them split",
        dir.display()
    )]
    PartlySplit { dir: PathBuf, found: String, missing: &'static str },
    #[error(
        "class `{class}` has {count} photos, too few for {fractions}: each class needs at least {needed} (one expected in each split); add photos or lower the fractions"
    )]
    TooSmall { class: String, count: usize, needed: usize, fractions: Fractions },
    #[error(
        "class `{class}`: none of its {count} photos fell into {part} (each photo goes by its hash; {expected:.1} expected with {fractions}); add photos of `{class}`, or try another --seed"
    )]
    EmptySplit { class: String, count: usize, part: &'static str, expected: f64, fractions: Fractions },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl From<sd_data::artifact::WriteError> for SplitError {
    fn from(e: sd_data::artifact::WriteError) -> SplitError {
        SplitError::Write { path: e.path, source: e.source }
    }
}

/// Links or copies `from` to `to`; true when a hard link had to become a copy.
fn place(from: &Path, to: &Path, link: Link) -> io::Result<bool> {
    match link {
        Link::Symlink => std::os::unix::fs::symlink(from, to).map(|_| false),
        Link::Copy => std::fs::copy(from, to).map(|_| false),
        // Of the file itself: a hard link to a symbolic link would copy the link, which breaks
        // when it is relative.
        Link::Hard => match std::fs::canonicalize(from).and_then(|real| std::fs::hard_link(real, to)) {
            Ok(()) => Ok(false),
            // Another file system, or links not allowed: a copy holds the same bytes.
            Err(e) if e.kind() != io::ErrorKind::NotFound => std::fs::copy(from, to).map(|_| true),
            Err(e) => Err(e),
        },
    }
}

/// Split photos into train/, validation/ [and test/] class folders: your own class folders
/// (--from), or Kaggle's Dogs vs Cats train folder (--source).
#[derive(Debug, Parser)]
#[command(name = "split", version, group(ArgGroup::new("input").required(true).args(["from", "source"])))]
pub struct Args {
    /// Your photos: one sub-folder per class (PHOTOS/<class>/**/<photo>), split per class by a
    /// hash of each photo's bytes and --seed (photos added later never move one already placed).
    /// A tree already split into train/, validation/ [and test/] is linked as it is.
    #[arg(long, value_name = "PHOTOS")]
    pub from: Option<PathBuf>,
    /// Kaggle's flat Dogs vs Cats train folder (cat.N.jpg, dog.N.jpg): the tutorial's split, the
    /// first --train images of each class by N, then --validation ones.
    #[arg(long, value_name = "KAGGLE_TRAIN")]
    pub source: Option<PathBuf>,
    /// Output folder: gets train/<class>/, validation/<class>/ [and test/<class>/].
    #[arg(long)]
    pub out: PathBuf,
    /// With --from: the fraction of each class for validation (what chooses the model; 0 leaves
    /// it out) [default: 0.15]. With --source: validation images per class [default: 400].
    #[arg(long)]
    pub validation: Option<f64>,
    /// With --from: the fraction of each class held out for the test, the one honest number
    /// (0 leaves it out).
    #[arg(long, default_value_t = 0.15, requires = "from")]
    pub test: f64,
    /// With --from: the seed of the hash that places each photo.
    #[arg(long, default_value_t = 0, requires = "from")]
    pub seed: u64,
    /// With --source: training images per class, the first ones by N.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "from")]
    pub train: u64,
    /// How files get into the output.
    #[arg(long, value_enum, default_value_t = Link::Hard)]
    pub link: Link,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match (&args.from, &args.source) {
        (Some(from), _) => run_folders(args, from),
        (None, Some(source)) => run_kaggle(args, source),
        (None, None) => unreachable!("clap requires --from or --source"),
    }
}

fn run_folders(args: &Args, from: &Path) -> anyhow::Result<()> {
    let fractions = Fractions { validation: args.validation.unwrap_or(0.15), test: args.test };
    fractions.check().map_err(sd_cli::usage)?;
    let s = split_folders(from, &args.out, fractions, args.seed, args.link)
        .with_context(|| format!("split {} into {}", from.display(), args.out.display()))?;
    if s.copied {
        tracing::warn!("hard links were not possible: copied the files instead");
    }
    sd_cli::summary(&args.log, format!("split: {s} -> {}", args.out.display()));
    Ok(())
}

fn run_kaggle(args: &Args, source: &Path) -> anyhow::Result<()> {
    let validation = args.validation.unwrap_or(400.0);
    if validation < 0.0 || validation.fract() != 0.0 {
        return Err(sd_cli::usage(format!(
            "--validation {validation}: with --source it is a number of images per class (fractions go with --from)"
        )));
    }
    let s = split(source, &args.out, args.train as usize, validation as usize, args.link)
        .with_context(|| format!("split {} into {}", source.display(), args.out.display()))?;
    if s.copied {
        tracing::warn!("hard links were not possible: copied the files instead");
    }
    let counts: Vec<String> = s.classes.iter().map(|(c, (t, v))| format!("{c} {}+{}", t.len(), v.len())).collect();
    sd_cli::summary(&args.log, format!("split: {} (train+validation) -> {}", counts.join(", "), args.out.display()));
    Ok(())
}
