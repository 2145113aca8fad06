//! `audit`: the command line.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use sd_cli::args::{count, fraction, non_negative, positive};

use sd_data::layout::audit as output;

use crate::{Config, CrossValidation, DEFAULT_THRESHOLD};

/// Check a data set before training on it: duplicate photos (and leaks, the same photo in two
/// splits), photos whose label is likely wrong, unreadable files, class balance.
///
/// Reads bottleneck's output folder of each split (named by folder: train, validation, test)
/// and the photos they list. Writes into --out (replaced as a whole when complete):
/// duplicates.csv (file_a,file_b,similarity,kind: kind is exact or near, plus " cross-split"
/// for a leak), suspects.csv (file,label,suggested,score, the most suspicious first) and
/// summary.json. It never moves or deletes a photo.
#[derive(Debug, Parser)]
#[command(name = "audit", version)]
pub struct Args {
    /// bottleneck's output folder of each split, e.g. artifacts/features/train
    /// artifacts/features/validation.
    #[arg(long, required = true, num_args = 1.., value_name = "FEATURES_DIR")]
    pub features: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "artifacts/audit")]
    pub out: PathBuf,
    /// Near duplicates: cosine similarity of the square-rooted pooled features at or above this
    /// (README: 0.95 finds resized and re-encoded copies; lower it for cropped ones).
    #[arg(long, default_value_t = DEFAULT_THRESHOLD, value_parser = fraction)]
    pub threshold: f64,
    /// Duplicate pairs listed at most (the most similar; all are counted).
    #[arg(long, default_value_t = 10_000, value_parser = count)]
    pub max_pairs: usize,
    /// Folds of the cross-validation that judges the labels (at least 2).
    #[arg(long, default_value_t = CrossValidation::default().folds, value_parser = folds)]
    pub folds: usize,
    /// Epochs of each fold's logistic regression.
    #[arg(long, default_value_t = CrossValidation::default().epochs, value_parser = count)]
    pub epochs: usize,
    /// Learning rate of each fold's logistic regression (RMSprop, cosine decay).
    #[arg(long, default_value_t = CrossValidation::default().learning_rate, value_parser = positive)]
    pub lr: f64,
    /// L2 penalty of each fold's logistic regression.
    #[arg(long, default_value_t = CrossValidation::default().l2, value_parser = non_negative)]
    pub l2: f64,
    /// Seed of the folds and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A duplicate across splits is an error (exit 1, the pairs named): for CI.
    #[arg(long)]
    pub fail_on_leak: bool,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

fn folds(s: &str) -> Result<usize, String> {
    count(s).and_then(|n| if n >= 2 { Ok(n) } else { Err(format!("{n} fold cannot hold a photo out; use 2 or more")) })
}

/// Pairs named in the `--fail-on-leak` error at most.
const LEAKS_NAMED: usize = 20;

pub fn run(args: &Args) -> Result<()> {
    let config = Config {
        features: args.features.clone(),
        out: args.out.clone(),
        threshold: args.threshold,
        max_pairs: args.max_pairs,
        cross_validation: CrossValidation {
            folds: args.folds,
            epochs: args.epochs,
            batch_size: CrossValidation::default().batch_size,
            learning_rate: args.lr,
            l2: args.l2,
            seed: args.seed,
        },
    };
    let start = std::time::Instant::now();
    let outcome = crate::audit(&config)?;
    let s = &outcome.summary;
    sd_cli::summary(
        &args.log,
        format_args!(
            "audit: {} photos, {} duplicate pairs ({} across splits), {} suspect labels, {} unreadable in {:.1} s -> {}",
            s.photos,
            s.duplicates.pairs,
            s.leaks,
            s.suspects,
            s.unreadable.len(),
            start.elapsed().as_secs_f64(),
            args.out.display()
        ),
    );
    if args.fail_on_leak && s.leaks > 0 {
        let named: Vec<String> = outcome
            .leaks
            .iter()
            .take(LEAKS_NAMED)
            .map(|d| format!("{} = {} ({}, {:.3})", d.file_a, d.file_b, d.kind(), d.similarity))
            .collect();
        let more = s.leaks.saturating_sub(named.len());
        bail!(
            "{} duplicate pair{} across splits (--fail-on-leak):\n  {}{}\nremove one photo of each pair from one split (all pairs in {})",
            s.leaks,
            if s.leaks == 1 { "" } else { "s" },
            named.join("\n  "),
            if more > 0 { format!("\n  and {more} more") } else { String::new() },
            args.out.join(output::DUPLICATES).display()
        );
    }
    Ok(())
}
