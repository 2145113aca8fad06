//! A stage's fingerprint now (command, params, program, deps and outs) and why it differs from
//! the one in the lock file.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cache::{self, Cache};
use crate::dag::{Dag, overlaps};
use crate::hash::HashCache;
use crate::lock::{Lock, Program, StageLock};
use crate::spec::{ConfigError, Pipeline, Stage};

/// Why a stage has to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    NeverRun,
    Forced,
    CmdChanged,
    ParamChanged {
        param: String,
        old: Option<String>,
        new: Option<String>,
    },
    ProgramChanged {
        program: String,
    },
    DepMissing {
        path: String,
    },
    DepChanged {
        path: String,
    },
    OutMissing {
        path: String,
    },
    OutChanged {
        path: String,
    },
    /// An upstream stage is out of date (status) or will run first (dry run).
    Upstream {
        stage: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        match self {
            Reason::NeverRun => write!(f, "never run"),
            Reason::Forced => write!(f, "forced"),
            Reason::CmdChanged => write!(f, "command changed"),
            Reason::ParamChanged { param, old, new } => write!(f, "param {param}: {} -> {}", show(old), show(new)),
            Reason::ProgramChanged { program } => write!(f, "program {program} changed"),
            Reason::DepMissing { path } => write!(f, "dep {path} missing"),
            Reason::DepChanged { path } => write!(f, "dep {path} changed"),
            Reason::OutMissing { path } => write!(f, "out {path} missing"),
            Reason::OutChanged { path } => write!(f, "out {path} changed"),
            Reason::Upstream { stage } => write!(f, "upstream {stage} out of date"),
        }
    }
}

/// What fingerprints are computed with.
pub struct Context<'p> {
    pub pipeline: &'p Pipeline,
    pub hashes: HashCache,
    /// The folder of the running `pipeline` executable: stage programs are looked up there first.
    pub bin_dir: Option<PathBuf>,
}

impl<'p> Context<'p> {
    pub fn new(pipeline: &'p Pipeline, hashes: HashCache) -> Context<'p> {
        let bin_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        Context { pipeline, hashes, bin_dir }
    }

    /// The `PATH` stage commands run with: the executable's folder first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = self.bin_dir.iter().cloned().chain(std::env::split_paths(&path));
        std::env::join_paths(dirs).unwrap_or_default()
    }

    /// The stage's fingerprint now (without metrics).
    pub fn fingerprint(&mut self, stage: &Stage) -> anyhow::Result<StageLock> {
        let p = self.pipeline;
        let mut digests = |paths: &mut dyn Iterator<Item = &PathBuf>| -> anyhow::Result<_> {
            paths
                .map(|path| Ok((path.to_string_lossy().into_owned(), self.hashes.digest(&p.resolve(path))?)))
                .collect::<anyhow::Result<_>>()
        };
        let deps = digests(&mut stage.deps.iter().map(|d| &d.path))?;
        let outs = digests(&mut stage.written().map(|o| &o.path))?;
        let program = match self.program(&stage.cmd) {
            Some((name, path)) => self.hashes.digest(&path)?.map(|d| Program { name: name.to_string(), hash: d.hash }),
            None => None,
        };
        Ok(StageLock {
            cmd: stage.cmd.clone(),
            params: stage.params.clone(),
            program,
            deps,
            outs,
            ..Default::default()
        })
    }

    /// The file the command starts: its first word (after `VAR=value` assignments), found in the
    /// executable's folder, then on `PATH`; relative to the pipeline folder if it has a `/`.
    /// `None` for shell builtins and syntax.
    pub fn program<'c>(&self, cmd: &'c str) -> Option<(&'c str, PathBuf)> {
        let name = crate::shell::program_word(cmd)?;
        if name.contains('/') {
            let path = self.pipeline.resolve(Path::new(name));
            return is_executable(&path).then_some((name, path));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path_dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        self.bin_dir.iter().chain(&path_dirs).map(|d| d.join(name)).find(|p| is_executable(p)).map(|p| (name, p))
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why `now` (the fingerprint of `stage`) differs from what the lock recorded (empty: up to date).
pub fn compare(stage: &Stage, now: &StageLock, locked: Option<&StageLock>) -> Vec<Reason> {
    let mut reasons = Vec::new();
    for (path, d) in &now.deps {
        if d.is_none() {
            reasons.push(Reason::DepMissing { path: path.clone() });
        }
    }
    for (path, d) in &now.outs {
        if d.is_none() {
            reasons.push(Reason::OutMissing { path: path.clone() });
        }
    }
    let Some(old) = locked else {
        // Outs missing before the first run go without saying.
        reasons.retain(|r| !matches!(r, Reason::OutMissing { .. }));
        reasons.insert(0, Reason::NeverRun);
        return reasons;
    };
    // A command that differs only by its params is reported as the params that changed.
    if now.cmd != old.cmd && stage.cmd_with(&old.params).as_ref() != Some(&old.cmd) {
        reasons.push(Reason::CmdChanged);
    }
    let names: std::collections::BTreeSet<&String> = now.params.keys().chain(old.params.keys()).collect();
    for name in names {
        let (new, old) = (now.params.get(name), old.params.get(name));
        if new != old {
            reasons.push(Reason::ParamChanged { param: name.clone(), old: old.cloned(), new: new.cloned() });
        }
    }
    if let (Some(p), Some(o)) = (&now.program, &old.program)
        && p.hash != o.hash
    {
        reasons.push(Reason::ProgramChanged { program: p.name.clone() });
    }
    let hash = |d: Option<&Option<crate::hash::Digest>>| d.and_then(|d| d.as_ref().map(|d| d.hash.clone()));
    for (path, d) in &now.deps {
        if d.is_some() && hash(Some(d)) != hash(old.deps.get(path)) {
            reasons.push(Reason::DepChanged { path: path.clone() });
        }
    }
    for path in old.deps.keys().filter(|p| !now.deps.contains_key(*p)) {
        reasons.push(Reason::DepChanged { path: path.clone() });
    }
    for (path, d) in &now.outs {
        if d.is_some() && hash(Some(d)) != hash(old.outs.get(path)) {
            reasons.push(Reason::OutChanged { path: path.clone() });
        }
    }
    reasons
}

/// Every dep must exist or be written by a stage.
pub fn check_sources(p: &Pipeline) -> Result<(), ConfigError> {
    for stage in &p.stages {
        for dep in &stage.deps {
            let written = p.stages.iter().flat_map(Stage::written).any(|o| overlaps(&dep.path, &o.path));
            if !written && std::fs::metadata(p.resolve(&dep.path)).is_err() {
                return Err(p.error(
                    dep.loc,
                    format!(
                        "dep `{}` of stage `{}` does not exist and no stage writes it",
                        dep.path.display(),
                        stage.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What `status` or a dry run, which look at stages before their upstream stages run, expect a
/// stage to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Nothing: it is up to date.
    Unchanged,
    /// Run: what it writes is known only once it has run.
    Run,
    /// Restore this entry's outs from the run cache.
    Restore(Box<cache::Entry>),
}

/// Sets the deps in `now` (stage `s`'s fingerprint) that an upstream stage would restore from the
/// run cache (its outs, or paths inside them) to what they would hold. Returns the upstream
/// stages whose effect on those deps cannot be known before they run: those that would run, and
/// those that would restore an out lying inside a dep.
pub fn foresee(p: &Pipeline, dag: &Dag, s: usize, now: &mut StageLock, expect: &[Expect]) -> Vec<usize> {
    let mut unknown = Vec::new();
    for &u in &dag.upstream[s] {
        match &expect[u] {
            Expect::Unchanged => {}
            Expect::Run => unknown.push(u),
            Expect::Restore(entry) => {
                let mut known = true;
                for (path, digest) in now.deps.iter_mut() {
                    if let Some(d) = entry.digest_of(Path::new(path)) {
                        *digest = d;
                    } else if p.stages[u].written().any(|o| overlaps(Path::new(path), &o.path)) {
                        known = false;
                    }
                }
                if !known {
                    unknown.push(u);
                }
            }
        }
    }
    unknown
}

/// A stage's state in `pipeline status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    /// The stage's index in the pipeline.
    #[serde(skip)]
    pub index: usize,
    pub stage: String,
    pub up_to_date: bool,
    pub reasons: Vec<Reason>,
    /// Out of date, but a run would restore its outs from the run cache.
    pub restore_from_cache: bool,
}

/// The status of every stage, in topological order: out of date when its own fingerprint
/// changed or an upstream stage is out of date (unless what that stage would restore from the
/// run cache leaves it up to date).
pub fn status(cx: &mut Context, dag: &Dag, lock: &Lock) -> anyhow::Result<Vec<StageStatus>> {
    let p = cx.pipeline;
    let store = Cache::of(p);
    let mut expect = vec![Expect::Unchanged; p.stages.len()];
    let mut out = Vec::new();
    for &s in &dag.order {
        let stage = &p.stages[s];
        let mut now = cx.fingerprint(stage)?;
        let unknown = foresee(p, dag, s, &mut now, &expect);
        let mut reasons = compare(stage, &now, lock.stages.get(&stage.name));
        for &u in &unknown {
            reasons.push(Reason::Upstream { stage: p.stages[u].name.clone() });
        }
        let mut restore_from_cache = false;
        if !reasons.is_empty() {
            let sig = cache::signature(stage, &now).filter(|_| unknown.is_empty());
            expect[s] = match sig.and_then(|sig| store.load(&sig, &mut cx.hashes, &stage.name)) {
                Some(entry) => {
                    restore_from_cache = true;
                    Expect::Restore(Box::new(entry))
                }
                None => Expect::Run,
            };
        }
        out.push(StageStatus {
            index: s,
            stage: stage.name.clone(),
            up_to_date: reasons.is_empty(),
            reasons,
            restore_from_cache,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn compare_names_every_difference() {
        let d = |h: &str| Some(crate::hash::Digest { hash: h.into(), size: 1, files: None });
        let p =
            Pipeline::parse(Path::new("p.yaml"), "params: {x: 3}\nstages:\n  s:\n    cmd: a ${x}\n    params: [x]\n")
                .unwrap();
        let stage = &p.stages[0];
        let old = StageLock {
            cmd: "a".into(),
            params: BTreeMap::from([("x".into(), "1".into()), ("y".into(), "2".into())]),
            program: Some(Program { name: "p".into(), hash: "1".into() }),
            deps: BTreeMap::from([("d1".into(), d("1")), ("d2".into(), d("2"))]),
            outs: BTreeMap::from([("o1".into(), d("1")), ("o2".into(), d("2"))]),
            ..Default::default()
        };
        assert_eq!(compare(stage, &old, Some(&old)), vec![]);
        let now = StageLock {
            cmd: "b".into(),
            params: BTreeMap::from([("x".into(), "3".into())]),
            program: Some(Program { name: "p".into(), hash: "2".into() }),
            deps: BTreeMap::from([("d1".into(), d("9")), ("d3".into(), None)]),
            outs: BTreeMap::from([("o1".into(), None), ("o2".into(), d("9"))]),
            ..Default::default()
        };
        let reasons: Vec<String> = compare(stage, &now, Some(&old)).iter().map(ToString::to_string).collect();
        assert_eq!(
            reasons,
            [
                "dep d3 missing",
                "out o1 missing",
                "command changed",
                "param x: 1 -> 3",
                "param y: 2 -> (none)",
                "program p changed",
                "dep d1 changed",
                "dep d2 changed",
                "out o2 changed"
            ]
        );
        assert_eq!(compare(stage, &old, None), vec![Reason::NeverRun]);
        // `a 1` -> `a 3` is the param x changing, not the command.
        let old =
            StageLock { cmd: "a 1".into(), params: BTreeMap::from([("x".into(), "1".into())]), ..Default::default() };
        let now =
            StageLock { cmd: "a 3".into(), params: BTreeMap::from([("x".into(), "3".into())]), ..Default::default() };
        assert_eq!(
            compare(stage, &now, Some(&old)).iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["param x: 1 -> 3"]
        );
    }

    #[test]
    fn program_is_found_next_to_the_executable_then_on_path() {
        let t = tempfile::tempdir().unwrap();
        let p = Pipeline::parse(&t.path().join("p.yaml"), "stages:\n  a:\n    cmd: x\n").unwrap();
        let mut cx = Context::new(&p, HashCache::in_memory());
        cx.bin_dir = Some(t.path().to_path_buf());
        let tool = t.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert_eq!(cx.program("FOO=1 tool --x"), None, "not executable");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(cx.program("FOO=1 tool --x"), Some(("tool", tool.clone())));
        assert_eq!(cx.program("./tool"), Some(("./tool", t.path().join("./tool"))));
        assert_eq!(cx.program("sh -c 'x'").map(|(n, p)| (n, p.is_absolute())), Some(("sh", true)));
        assert_eq!(cx.program("cd x && y"), None);
    }
}
