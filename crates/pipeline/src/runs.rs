//! Recording runs in `.pipeline/runs/` (the format and the table: `sd_data::layout::runs`), and
//! `pipeline checkout RUN`, which brings a recorded run's outs back from the run cache.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;
use sd_data::layout::runs::{self, RunRecord, RunStatus, StageRun, StageState};

use crate::cache::Cache;
use crate::lock::Lock;
use crate::runner::Summary;
use crate::spec::Pipeline;
use crate::state::Context;

/// A run being recorded: written as `running` when it starts, rewritten when it ends.
pub struct Recorder {
    dir: std::path::PathBuf,
    record: RunRecord,
    start: Instant,
}

impl Recorder {
    /// Records the start of a run of `p` (its params as the run uses them). Call it holding the
    /// run lock: ids are taken in order.
    pub fn start(p: &Pipeline, param_set: Option<String>) -> Recorder {
        let dir = runs::runs_dir(&p.dir);
        let record = RunRecord {
            id: runs::next_id(&dir),
            pid: std::process::id(),
            started: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            seconds: 0.0,
            status: RunStatus::Running,
            param_set,
            params: p.params.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
            // Every stage, until the run ends and says what each did (`report`, running as one
            // of them, shows them in this order).
            stages: p
                .stages
                .iter()
                .map(|s| StageRun { stage: s.name.clone(), state: StageState::NotRun, seconds: None, signature: None })
                .collect(),
            metrics: BTreeMap::new(),
        };
        let recorder = Recorder { dir, record, start: Instant::now() };
        recorder.write();
        recorder
    }

    pub fn id(&self) -> u64 {
        self.record.id
    }

    /// Records how the run ended: what each stage did, and the metrics of the stages that are
    /// done, from the lock.
    pub fn finish(mut self, summary: Option<&Summary>, lock: &Lock) -> RunRecord {
        let r = &mut self.record;
        r.seconds = self.start.elapsed().as_secs_f64();
        r.stages = summary.map(|s| s.stages.clone()).unwrap_or_default();
        let failed = summary.is_none_or(|s| !s.failed.is_empty() || !s.not_run.is_empty());
        r.status = if crate::runner::stopped_by().is_some() {
            RunStatus::Interrupted
        } else if failed {
            RunStatus::Failed
        } else {
            RunStatus::Ok
        };
        for s in
            r.stages.iter().filter(|s| matches!(s.state, StageState::Ran | StageState::Restored | StageState::UpToDate))
        {
            let merged = lock.stage_metrics(&s.stage);
            if !merged.is_empty() {
                r.metrics.insert(s.stage.clone(), merged);
            }
        }
        self.write();
        self.record
    }

    /// Forgets a run that did not start (a usage error, e.g. an unknown stage).
    pub fn discard(self) {
        let _ = std::fs::remove_file(self.dir.join(format!("{}.json", self.record.id)));
    }

    fn write(&self) {
        if let Err(e) = self.record.write(&self.dir) {
            tracing::warn!("cannot record the run: {e}");
        }
    }
}

/// `pipeline checkout RUN`: puts back the outs of every stage that run brought up to date, from
/// the run cache, and their lock entries as that run recorded them. If any is no longer in the
/// cache, nothing changes and the error says which. Returns the stages restored.
pub fn checkout(cx: &mut Context, run: &RunRecord) -> anyhow::Result<Vec<String>> {
    let p = cx.pipeline;
    let store = Cache::of(p);
    let mut entries = Vec::new();
    let mut gone = Vec::new();
    for s in &run.stages {
        let Some(sig) = &s.signature else { continue };
        let found = p.stage_index(&s.stage).and_then(|i| Some((i, store.load(sig, &mut cx.hashes, &s.stage)?)));
        match found {
            Some(found) => entries.push(found),
            None => gone.push(s.stage.clone()),
        }
    }
    if !gone.is_empty() {
        bail!(
            "run {}'s outs are no longer all in the run cache (removed by `pipeline gc`, or damaged): {} ({}); \
             nothing was changed",
            run.id,
            if gone.len() == 1 { "stage" } else { "stages" },
            gone.join(", ")
        );
    }
    if entries.is_empty() {
        bail!("run {} brought no stage up to date: nothing to check out", run.id);
    }
    for (i, _) in &entries {
        crate::guard::check(p, &p.stages[*i])?;
    }
    let mut lock = crate::lock::load(&p.lock_path())?;
    let mut restored = Vec::new();
    for (i, entry) in entries {
        let stage = &p.stages[i];
        for out in stage.written() {
            let path = p.resolve(&out.path);
            cx.hashes.forget(&path);
            match sd_data::scratch::discard(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    bail!("cannot remove {}: {e}", path.display())
                }
                _ => {}
            }
        }
        store.restore(p, &mut cx.hashes, &entry)?;
        let previous_metrics = lock.stages.get(&stage.name).map(|l| l.metrics.clone()).unwrap_or_default();
        lock.stages.insert(stage.name.clone(), crate::lock::StageLock { previous_metrics, ..entry.lock });
        lock.save(&p.lock_path())?;
        restored.push(stage.name.clone());
    }
    Ok(restored)
}
