//! The fuzzing loop ([`worker`], in a child process) and its [`supervise`]or, which restarts it
//! when an input kills it (an abort, a stack overflow) or hangs it, and records that input.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mutate::{Rng, mutate};
use crate::targets::Target;
use crate::{BOUND_BASE, BOUND_FACTOR, SLOW_SECONDS, alloc};

/// What a run found and did; the worker writes it as JSON, the supervisor adds its workers' up.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    /// Inputs the reader accepted.
    pub accepted: u64,
    /// Distinct outcomes (error messages with numbers and quoted text taken out, or "ok"): the
    /// coverage proxy, with how often each was reached.
    pub outcomes: BTreeMap<String, u64>,
    /// The corpus at the end (seeds plus inputs that reached a new outcome).
    pub corpus: usize,
    /// The largest peak allocation seen, as (bytes, input bytes).
    pub peak_alloc: (usize, usize),
    /// The largest peak allocation per input byte seen (inputs of at least 64 bytes).
    pub peak_ratio: f64,
    pub slowest_seconds: f64,
    pub findings: Vec<Finding>,
    /// Worker restarts after a crash or hang.
    pub restarts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// panic, alloc, unnamed-error, slow, crash, hang
    pub kind: String,
    pub detail: String,
    /// The input, saved under the output folder.
    pub input: String,
}

/// The outcome with what varies from input to input taken out: digits, quoted text, paths.
pub fn signature(outcome: &Result<(), String>, work: &Path) -> String {
    let Err(msg) = outcome else { return "ok".into() };
    let msg = msg.replace(&work.display().to_string(), "DIR");
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in msg.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => {}
            None if matches!(c, '\'' | '"' | '`') => {
                quote = Some(c);
                out.push(c);
            }
            None if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            None => out.push(c),
        }
    }
    out.chars().take(160).collect()
}

/// Fuzzes `target` for `seconds`, writing its stats to `stats_path` (every half second and at
/// the end) and findings under `out`. `work` is the target's folder: the input is written there.
pub fn worker(
    target: &Target,
    seeds: &Path,
    work: &Path,
    out: &Path,
    seconds: f64,
    seed: u64,
    stats_path: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    std::fs::create_dir_all(out)?;
    (target.setup)(work)?;
    let mut corpus = read_seeds(seeds)?;
    anyhow::ensure!(!corpus.is_empty(), "no seed files in {}", seeds.display());
    let seed_count = corpus.len();
    let input_path = work.join(target.file);
    let panic_message = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let m = panic_message.clone();
        std::panic::set_hook(Box::new(move |info| {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = info.to_string();
        }));
    }
    let mut rng = Rng::new(seed);
    let mut stats = Stats { target: target.name.into(), ..Default::default() };
    let start = Instant::now();
    let mut last_write = Instant::now();
    let mut i = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        // Every seed once as it is, then mutations of the corpus.
        let input = if (i as usize) < seed_count {
            corpus[i as usize].clone()
        } else {
            let base = rng.below(corpus.len());
            mutate(&corpus[base], &corpus, target.dict, &mut rng)
        };
        i += 1;
        std::fs::write(&input_path, &input)?;
        let base = alloc::start();
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (target.read)(&input_path)));
        let took = t.elapsed().as_secs_f64();
        let (peak, _largest) = alloc::since(base);
        stats.executions += 1;
        stats.slowest_seconds = stats.slowest_seconds.max(took);
        if peak > stats.peak_alloc.0 {
            stats.peak_alloc = (peak, input.len());
        }
        if input.len() >= 64 {
            stats.peak_ratio = stats.peak_ratio.max(peak as f64 / input.len() as f64);
        }
        let finding = |kind: &str, detail: String, stats: &mut Stats| -> anyhow::Result<()> {
            let name = format!("{kind}-s{seed}-{}-{}", stats.findings.len(), target.file);
            std::fs::write(out.join(&name), &input)?;
            stats.findings.push(Finding { kind: kind.into(), detail, input: name });
            Ok(())
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(_) => {
                let msg = panic_message.lock().unwrap_or_else(|e| e.into_inner()).clone();
                finding("panic", msg.clone(), &mut stats)?;
                Err(format!("panic: {msg}"))
            }
        };
        let bound = BOUND_FACTOR * input.len() + BOUND_BASE + target.extra_alloc;
        if peak > bound {
            finding(
                "alloc",
                format!("{peak} bytes at peak for {} input bytes (bound {bound})", input.len()),
                &mut stats,
            )?;
        }
        if let Err(msg) = &outcome {
            if !msg.contains(target.file) && !msg.starts_with("panic: ") {
                finding("unnamed-error", msg.clone(), &mut stats)?;
            }
        }
        if took > SLOW_SECONDS {
            finding("slow", format!("{took:.1} s"), &mut stats)?;
        }
        if outcome.is_ok() {
            stats.accepted += 1;
        }
        let sig = signature(&outcome, work);
        let count = stats.outcomes.entry(sig).or_insert(0);
        *count += 1;
        if *count == 1 && corpus.len() < 4096 {
            corpus.push(input);
        }
        if stats.findings.len() > 50 {
            break; // enough to fix first
        }
        if last_write.elapsed() > Duration::from_millis(500) {
            stats.seconds = start.elapsed().as_secs_f64();
            stats.corpus = corpus.len();
            write_stats(stats_path, &stats)?;
            last_write = Instant::now();
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    stats.corpus = corpus.len();
    write_stats(stats_path, &stats)
}

fn read_seeds(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot list the seeds {}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    paths.iter().filter(|p| p.is_file()).map(|p| Ok(std::fs::read(p)?)).collect()
}

fn write_stats(path: &Path, stats: &Stats) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(stats)?)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// Runs workers (this executable with `worker_args`) until `seconds` have passed, restarting
/// one that dies or stops making progress, and returns the stats of them all.
pub fn supervise(
    target: &Target,
    exe: &Path,
    worker_args: &[String],
    out: &Path,
    seconds: f64,
    seed: u64,
) -> anyhow::Result<Stats> {
    std::fs::create_dir_all(out)?;
    let work = out.join("work");
    let stats_path = out.join("worker-stats.json");
    let mut total = Stats { target: target.name.into(), ..Default::default() };
    let start = Instant::now();
    let mut round = 0u64;
    loop {
        let left = seconds - start.elapsed().as_secs_f64();
        if left <= 0.0 && round > 0 {
            break;
        }
        let _ = std::fs::remove_file(&stats_path);
        let mut child = Command::new(exe)
            .args(worker_args)
            .args(["--worker", "--seconds", &format!("{:.3}", left.max(0.5)), "--seed", &(seed + round).to_string()])
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        round += 1;
        // Progress: the stats file's execution count moves at least every few seconds.
        let (mut seen, mut since) = (0u64, Instant::now());
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
            let now = read_stats(&stats_path).map_or(0, |s| s.executions);
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
            if since.elapsed().as_secs_f64() > 5.0 * SLOW_SECONDS + 5.0 {
                child.kill()?;
                child.wait()?;
                break None;
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        if let Some(s) = read_stats(&stats_path) {
            add(&mut total, s);
        }
        match status {
            Some(s) if s.success() => {}
            Some(s) if s.code() == Some(2) => anyhow::bail!("the worker could not start: {}", stderr.trim()),
            died => {
                let kind = if died.is_none() { "hang" } else { "crash" };
                let name = format!("{kind}-s{}-{}", seed + round - 1, target.file);
                let input = work.join(target.file);
                if input.exists() {
                    std::fs::create_dir_all(out.join("findings"))?;
                    std::fs::copy(&input, out.join("findings").join(&name))?;
                }
                let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                let detail = match died {
                    Some(s) => format!("worker exited with {s}: {tail}"),
                    None => "no progress for over 15 s".to_string(),
                };
                total.findings.push(Finding { kind: kind.into(), detail, input: name });
                total.restarts += 1;
                anyhow::ensure!(total.restarts <= 20, "the worker died 20 times: {}", stderr.trim());
            }
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    Ok(total)
}

fn read_stats(path: &Path) -> Option<Stats> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn add(total: &mut Stats, s: Stats) {
    total.executions += s.executions;
    total.accepted += s.accepted;
    for (k, v) in s.outcomes {
        *total.outcomes.entry(k).or_insert(0) += v;
    }
    total.corpus = total.corpus.max(s.corpus);
    if s.peak_alloc.0 > total.peak_alloc.0 {
        total.peak_alloc = s.peak_alloc;
    }
    total.peak_ratio = total.peak_ratio.max(s.peak_ratio);
    total.slowest_seconds = total.slowest_seconds.max(s.slowest_seconds);
    total.findings.extend(s.findings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_drop_numbers_quoted_text_and_the_folder() {
        let work = Path::new("/tmp/w");
        let a = signature(&Err("/tmp/w/x.npy: shape [3, 4] of '<f4' is 48 bytes".into()), work);
        let b = signature(&Err("/tmp/w/x.npy: shape [100, 2] of '<i8' is 1600 bytes".into()), work);
        assert_eq!(a, b);
        assert_eq!(a, "DIR/x.npy: shape [#, #] of '' is # bytes");
        assert_eq!(signature(&Ok(()), work), "ok");
    }
}
