//! `sd-fuzz --target NAME --seconds N [--seed S] [--out DIR]`: fuzzes one reader (see the
//! crate's docs) and prints its stats as JSON; exit 1 when it found anything.
//! `sd-fuzz --list` names the targets; `sd-fuzz --make-seeds` rewrites the generated seeds.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sd_fuzz::{run, targets};

#[global_allocator]
static ALLOC: sd_fuzz::alloc::Counting = sd_fuzz::alloc::Counting;

/// The seed corpora, in the repository.
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn main() {
    match real_main() {
        Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--list") {
        for t in targets::all() {
            println!("{}", t.name);
        }
        return Ok(true);
    }
    if args.iter().any(|a| a == "--make-seeds") {
        targets::make_seeds(&corpus())?;
        return Ok(true);
    }
    let name = flag("--target").context("usage: sd-fuzz --target NAME --seconds N [--seed S] [--out DIR] (--list)")?;
    let all = targets::all();
    let Some(target) = all.iter().find(|t| t.name == name) else {
        bail!("unknown target '{name}'; one of: {}", all.iter().map(|t| t.name).collect::<Vec<_>>().join(", "));
    };
    let seconds: f64 = flag("--seconds").unwrap_or("10".into()).parse().context("--seconds takes a number")?;
    let seed: u64 = flag("--seed").unwrap_or("1".into()).parse().context("--seed takes a whole number")?;
    let out = match flag("--out") {
        Some(o) => PathBuf::from(o),
        None => std::env::temp_dir().join(format!("sd-fuzz-{name}-{}", std::process::id())),
    };
    let seeds = corpus().join(target.name);
    if args.iter().any(|a| a == "--worker") {
        run::worker(
            target,
            &seeds,
            &out.join("work"),
            &out.join("findings"),
            seconds,
            seed,
            &out.join("worker-stats.json"),
        )?;
        return Ok(true);
    }
    let exe = std::env::current_exe()?;
    let stats = run::supervise(target, &exe, &["--target".into(), name.clone()], &out, seconds, seed)?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(stats.findings.is_empty())
}
