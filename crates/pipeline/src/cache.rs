//! The run cache, `.pipeline/cache/`: the outs of every successful stage, content-addressed,
//! keyed by the stage's signature (its command after substitution, its params, its program's hash,
//! its deps' content hashes and the paths it writes). A stage that is out of date but whose
//! signature is here gets its outs back instead of running: `size` 150 -> 224 -> 150 computes
//! nothing the third time.
//!
//! - `objects/ab/cdef...`: one file per distinct content (its blake3 hash), hard-linked to the
//!   artifact it came from where the file system allows, else a copy. Identical files are stored
//!   once, and an entry costs no space while its artifacts still exist.
//! - `entries/SIGNATURE.json`: the stage's lock entry as its run recorded it (outs' digests,
//!   metrics, seconds), and the files of each out (path, hash, size, permissions).
//!
//! Storing puts every object first, each under a temporary name, synced, then renamed; then the
//! entry file, atomically: that rename is the commit point. A kill at any moment leaves a complete
//! entry or none (stray objects are what `pipeline gc` removes). Restoring first checks the
//! entry's digests against its file list and every object's hash (through the stat cache,
//! [`HashCache`]): an entry whose files changed or vanished is ignored with a warning. Outs come
//! back as a run writes them: a folder is staged beside its target and renamed into place.
//!
//! Hard links share the file with the artifact: a file edited in place (no stage does that: outs
//! are deleted before their stage runs, and written by rename) changes the cached copy too, which
//! the hash check then catches.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::hash::{Digest, FileHash, HashCache, folder_digest};
use crate::lock::StageLock;
use crate::spec::{Pipeline, Stage};

const ENTRY_VERSION: u32 = 1;

/// For tests of a kill while storing: `pipeline` SIGKILLs itself after putting this many
/// objects of an entry (all of them: just before the entry file).
pub const TEST_KILL_ENV: &str = "SD_PIPELINE_TEST_KILL_STORE_AFTER";

/// A stored run of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    pub stage: String,
    /// When it was stored (Unix time, nanoseconds).
    pub created_ns: u64,
    /// The stage's lock entry as its run recorded it.
    pub lock: StageLock,
    /// The files of each out, by the out's path (as in the lock).
    pub files: BTreeMap<String, Vec<FileHash>>,
}

impl Entry {
    /// What `path` (a pipeline path) would hold once this entry is restored: `Some(None)` for
    /// nothing, `None` when it is not one of the entry's outs nor inside one.
    pub fn digest_of(&self, path: &Path) -> Option<Option<Digest>> {
        for (out, files) in &self.files {
            let Ok(rel) = path.strip_prefix(out) else { continue };
            if rel.as_os_str().is_empty() {
                return Some(self.lock.outs[out].clone());
            }
            if let Some(f) = files.iter().find(|f| f.path == rel) {
                return Some(Some(Digest { hash: f.hash.clone(), size: f.size, files: None }));
            }
            let inside: Vec<FileHash> = files
                .iter()
                .filter_map(|f| Some(FileHash { path: f.path.strip_prefix(rel).ok()?.to_path_buf(), ..f.clone() }))
                .collect();
            return Some((!inside.is_empty()).then(|| folder_digest(&inside)));
        }
        None
    }
}

/// The run cache of a pipeline folder.
pub struct Cache {
    dir: PathBuf,
}

/// The signature a stage's run is stored under, from its fingerprint before it runs; `None` when
/// it writes nothing or a dep is missing.
pub fn signature(stage: &Stage, now: &StageLock) -> Option<String> {
    let written: Vec<String> = stage.written().map(|o| o.path.to_string_lossy().into_owned()).collect();
    if written.is_empty() {
        return None;
    }
    let mut deps = BTreeMap::new();
    for (path, d) in &now.deps {
        deps.insert(path, &d.as_ref()?.hash);
    }
    let key = serde_json::json!({
        "version": ENTRY_VERSION,
        "cmd": now.cmd,
        "params": now.params,
        "program": now.program.as_ref().map(|p| &p.hash),
        "deps": deps,
        "outs": written,
    });
    Some(blake3::hash(key.to_string().as_bytes()).to_hex().to_string())
}

impl Cache {
    pub fn of(p: &Pipeline) -> Cache {
        Cache { dir: p.state_dir().join("cache") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entries_dir(&self) -> PathBuf {
        self.dir.join("entries")
    }

    fn entry_path(&self, signature: &str) -> PathBuf {
        self.entries_dir().join(format!("{signature}.json"))
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    fn object_path(&self, hash: &str) -> PathBuf {
        let split = hash.len().min(2);
        self.objects_dir().join(&hash[..split]).join(&hash[split..])
    }

    /// Whether an entry file exists for `signature` (unchecked).
    pub fn has(&self, signature: &str) -> bool {
        self.entry_path(signature).is_file()
    }

    /// Stores the outs `stage` just wrote, whose lock entry is `lock`, under `signature`.
    pub fn store(
        &self,
        p: &Pipeline,
        hashes: &mut HashCache,
        stage: &Stage,
        signature: &str,
        lock: &StageLock,
    ) -> anyhow::Result<()> {
        let mut kill_after: Option<usize> = std::env::var(TEST_KILL_ENV).ok().and_then(|v| v.parse().ok());
        let mut files = BTreeMap::new();
        for out in stage.written() {
            let path = p.resolve(&out.path);
            let key = out.path.to_string_lossy().into_owned();
            let listing = hashes.listing(&path)?.with_context(|| format!("{} is gone", path.display()))?;
            if lock.outs.get(&key).and_then(Option::as_ref) != Some(&listing.digest) {
                bail!("{} changed since the stage wrote it", path.display());
            }
            for f in &listing.files {
                kill_if_due(&mut kill_after);
                let src = if f.path.as_os_str().is_empty() { path.clone() } else { path.join(&f.path) };
                self.put_object(hashes, &src, &f.hash)
                    .with_context(|| format!("cannot store {} in {}", src.display(), self.dir.display()))?;
            }
            files.insert(key, listing.files);
        }
        kill_if_due(&mut kill_after);
        let lock = StageLock { previous_metrics: BTreeMap::new(), ..lock.clone() };
        let entry = Entry { version: ENTRY_VERSION, stage: stage.name.clone(), created_ns: now_ns(), lock, files };
        sd_data::artifact::write_json(self.entry_path(signature), &entry)?;
        Ok(())
    }

    /// Puts `src`'s content under its hash (a hard link, else a copy), unless it is there already.
    fn put_object(&self, hashes: &mut HashCache, src: &Path, hash: &str) -> io::Result<()> {
        let obj = self.object_path(hash);
        if hashes.digest(&obj)?.is_some_and(|d| d.hash == hash) {
            return Ok(());
        }
        let dir = sd_data::scratch::parent_dir(&obj);
        std::fs::create_dir_all(&dir)?;
        let tmp =
            dir.join(format!(".{}.tmp-{}", obj.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(src, &tmp).is_err() {
            std::fs::copy(src, &tmp)?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &obj)?;
        hashes.forget(&obj);
        Ok(())
    }

    /// The entry stored under `signature`, if there is one and its files are intact; a damaged
    /// one is reported (`stage` names it) and ignored.
    pub fn load(&self, signature: &str, hashes: &mut HashCache, stage: &str) -> Option<Entry> {
        let path = self.entry_path(signature);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read the run cache's entry {}: {e}", path.display());
                return None;
            }
        };
        match self.check(&bytes, hashes) {
            Ok(entry) => Some(entry),
            Err(why) => {
                tracing::warn!(
                    "ignoring the run cache's entry for stage {stage}: {why} ({}; the stage runs instead)",
                    path.display()
                );
                None
            }
        }
    }

    fn check(&self, bytes: &[u8], hashes: &mut HashCache) -> Result<Entry, String> {
        let entry: Entry = serde_json::from_slice(bytes).map_err(|e| format!("it is not readable: {e}"))?;
        if entry.version != ENTRY_VERSION {
            return Err(format!("its version {} is not {ENTRY_VERSION}", entry.version));
        }
        if entry.lock.outs.keys().ne(entry.files.keys()) {
            return Err("its outs do not match its lock entry".into());
        }
        for (out, files) in &entry.files {
            let Some(want) = entry.lock.outs[out].as_ref() else {
                return Err(format!("it has no digest for {out}"));
            };
            let got = match (&want.files, &files[..]) {
                (Some(_), _) => folder_digest(files),
                (None, [f]) if f.path.as_os_str().is_empty() => {
                    Digest { hash: f.hash.clone(), size: f.size, files: None }
                }
                (None, _) => return Err(format!("its file list of {out} is not one file")),
            };
            if &got != want {
                return Err(format!("its file list of {out} does not match the digest"));
            }
            for f in files {
                let name =
                    if f.path.as_os_str().is_empty() { out.clone() } else { format!("{out}/{}", f.path.display()) };
                match hashes.digest(&self.object_path(&f.hash)) {
                    Ok(Some(d)) if d.hash == f.hash => {}
                    Ok(Some(_)) => return Err(format!("the stored copy of {name} changed")),
                    Ok(None) => return Err(format!("the stored copy of {name} is gone")),
                    Err(e) => return Err(format!("the stored copy of {name} cannot be read: {e}")),
                }
            }
        }
        Ok(entry)
    }

    /// Puts the entry's outs back in place, each atomically, as its run left them.
    pub fn restore(&self, p: &Pipeline, hashes: &mut HashCache, entry: &Entry) -> anyhow::Result<()> {
        for (out, files) in &entry.files {
            let target = p.resolve(Path::new(out));
            hashes.forget(&target);
            let folder = entry.lock.outs[out].as_ref().is_some_and(|d| d.files.is_some());
            let err = |e: io::Error| anyhow::anyhow!("cannot restore {} from the run cache: {e}", target.display());
            if folder {
                let staging = sd_data::artifact::StagingDir::create(&target)?;
                for f in files {
                    let dest = staging.path().join(&f.path);
                    std::fs::create_dir_all(sd_data::scratch::parent_dir(&dest)).map_err(err)?;
                    self.put_out(f, &dest).map_err(err)?;
                }
                staging.commit()?;
            } else {
                let scratch = sd_data::scratch::ScratchDir::next_to(&target, "partial").map_err(err)?;
                let dest = scratch.path().join("file");
                self.put_out(&files[0], &dest).map_err(err)?;
                std::fs::rename(&dest, &target).map_err(err)?;
            }
            for f in files {
                let path = if f.path.as_os_str().is_empty() { target.clone() } else { target.join(&f.path) };
                hashes.remember(&path, &f.hash).map_err(err)?;
            }
        }
        Ok(())
    }

    /// An out's file from its object: a hard link when the permissions match, else a copy.
    fn put_out(&self, f: &FileHash, dest: &Path) -> io::Result<()> {
        let obj = self.object_path(&f.hash);
        let same_mode = std::fs::metadata(&obj)?.mode() & 0o7777 == f.mode;
        if !(same_mode && std::fs::hard_link(&obj, dest).is_ok()) {
            std::fs::copy(&obj, dest)?;
            sd_data::artifact::set_mode(dest, f.mode)?;
        }
        Ok(())
    }

    /// Every entry's signature and file, unchecked, newest first (unreadable ones: `None`).
    fn entries(&self) -> io::Result<Vec<(PathBuf, Option<Entry>)>> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(self.entries_dir()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for item in dir {
            let path = item?.path();
            let entry = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            out.push((path, entry));
        }
        out.sort_by(|a, b| {
            let created = |e: &Option<Entry>| e.as_ref().map_or(0, |e| e.created_ns);
            created(&b.1).cmp(&created(&a.1)).then_with(|| a.0.cmp(&b.0))
        });
        Ok(out)
    }

    /// Removes entries (the oldest first) beyond the newest `keep_last`, and beyond `max_size`
    /// bytes of distinct files, then every object no remaining entry uses, and what interrupted
    /// stores left. Call it holding the run lock.
    pub fn gc(&self, keep_last: Option<usize>, max_size: Option<u64>) -> io::Result<GcSummary> {
        let mut summary = GcSummary::default();
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut size = 0;
        for (i, (path, entry)) in self.entries()?.into_iter().enumerate() {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let keep = match &entry {
                None => false,
                Some(_) if name.starts_with('.') || !name.ends_with(".json") => false,
                Some(_) if keep_last.is_some_and(|n| i >= n) => false,
                Some(e) => {
                    let new: BTreeMap<&str, u64> = e
                        .files
                        .values()
                        .flatten()
                        .filter(|f| !used.contains(&f.hash))
                        .map(|f| (f.hash.as_str(), f.size))
                        .collect();
                    let grown = size + new.values().sum::<u64>();
                    if max_size.is_some_and(|max| grown > max) {
                        false
                    } else {
                        size = grown;
                        used.extend(new.into_keys().map(String::from));
                        true
                    }
                }
            };
            if keep {
                summary.entries_kept += 1;
            } else {
                std::fs::remove_file(&path)?;
                summary.entries_removed += usize::from(entry.is_some());
            }
        }
        summary.bytes_kept = size;
        let objects = match std::fs::read_dir(self.objects_dir()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(summary),
            Err(e) => return Err(e),
        };
        for sub in objects {
            let sub = sub?.path();
            if !sub.is_dir() {
                continue;
            }
            let prefix = sub.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for item in std::fs::read_dir(&sub)? {
                let path = item?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if !used.contains(&format!("{prefix}{name}")) {
                    let meta = std::fs::symlink_metadata(&path)?;
                    std::fs::remove_file(&path)?;
                    if !name.starts_with('.') {
                        summary.objects_removed += 1;
                        summary.bytes_removed += meta.len();
                    }
                }
            }
            let _ = std::fs::remove_dir(&sub);
        }
        Ok(summary)
    }
}

/// What `pipeline gc` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    pub entries_kept: usize,
    pub entries_removed: usize,
    pub objects_removed: usize,
    pub bytes_removed: u64,
    /// The distinct files of the entries kept.
    pub bytes_kept: u64,
}

/// `--max-size`: bytes, or with a unit: `500M`, `2G`, `10k` (powers of 1024; a trailing `B` or
/// `iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (number, unit) = t.find(|c: char| c.is_ascii_alphabetic()).map_or((t, ""), |i| t.split_at(i));
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}' is not a size (e.g. 500M, 2G, 1048576)")),
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 500M, 2G, 1048576)"))?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("'{s}' is not a size (e.g. 500M, 2G, 1048576)"));
    }
    Ok((n * (1u64 << shift) as f64) as u64)
}

fn kill_if_due(countdown: &mut Option<usize>) {
    match countdown {
        Some(0) => {
            // SAFETY: raise(2) has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        Some(n) => *n -= 1,
        None => {}
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Context;

    fn pipeline(dir: &Path) -> Pipeline {
        let src = "params: {n: 1}\nstages:\n  s:\n    cmd: make ${n}\n    params: [n]\n    outs: [out, one.txt]\n";
        std::fs::write(dir.join("pipeline.yaml"), src).unwrap();
        Pipeline::load(&dir.join("pipeline.yaml")).unwrap()
    }

    /// Writes the stage's outs and returns its lock entry as a run records it.
    fn run_stage(cx: &mut Context, content: &str) -> StageLock {
        let dir = &cx.pipeline.dir;
        // As the runner does: outs are deleted before their stage runs (never edited in place).
        let _ = std::fs::remove_dir_all(dir.join("out"));
        let _ = std::fs::remove_file(dir.join("one.txt"));
        std::fs::create_dir_all(dir.join("out/sub")).unwrap();
        std::fs::write(dir.join("out/a.txt"), content).unwrap();
        std::fs::write(dir.join("out/sub/b.txt"), "same").unwrap();
        std::fs::write(dir.join("one.txt"), "same").unwrap();
        let stage = &cx.pipeline.stages[0];
        for o in stage.written() {
            cx.hashes.forget(&cx.pipeline.resolve(&o.path));
        }
        cx.fingerprint(stage).unwrap()
    }

    #[test]
    fn stores_identical_files_once_restores_byte_identical_and_ignores_a_damaged_entry() {
        let t = tempfile::tempdir().unwrap();
        let p = pipeline(t.path());
        let mut cx = Context::new(&p, HashCache::open(&p.dir));
        let stage = &p.stages[0];
        let lock = run_stage(&mut cx, "first");
        let sig = signature(stage, &lock).unwrap();
        let cache = Cache::of(&p);
        cache.store(&p, &mut cx.hashes, stage, &sig, &lock).unwrap();
        let objects: usize = std::fs::read_dir(cache.objects_dir())
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        assert_eq!(objects, 2, "`same` is stored once");

        // What restoring it would put where, as the hashing of the files sees it.
        let entry = cache.load(&sig, &mut cx.hashes, "s").unwrap();
        for path in ["out", "out/sub", "out/a.txt", "one.txt"] {
            assert_eq!(
                entry.digest_of(Path::new(path)),
                Some(cx.hashes.digest(&t.path().join(path)).unwrap()),
                "{path}"
            );
        }
        assert_eq!(entry.digest_of(Path::new("out/none")), Some(None));
        assert_eq!(entry.digest_of(Path::new("other")), None);

        // Another run wrote other outs; the entry brings the first ones back.
        run_stage(&mut cx, "second");
        std::fs::write(t.path().join("out/extra"), "x").unwrap();
        let entry = cache.load(&sig, &mut cx.hashes, "s").unwrap();
        cache.restore(&p, &mut cx.hashes, &entry).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("out/a.txt")).unwrap(), "first");
        assert!(!t.path().join("out/extra").exists());
        assert_eq!(cx.fingerprint(stage).unwrap().outs, lock.outs);

        // The stored copy of a file changed (an artifact edited in place, through the hard link).
        let obj = cache.object_path(&entry.files["out"].iter().find(|f| f.path == Path::new("a.txt")).unwrap().hash);
        std::fs::write(&obj, "tampered").unwrap();
        let mut fresh = HashCache::open(&p.dir);
        assert!(cache.load(&sig, &mut fresh, "s").is_none());
        std::fs::remove_file(&obj).unwrap();
        assert!(cache.load(&sig, &mut HashCache::open(&p.dir), "s").is_none());
    }

    #[test]
    fn signatures_follow_command_params_program_and_deps() {
        let t = tempfile::tempdir().unwrap();
        let p = pipeline(t.path());
        let stage = &p.stages[0];
        let base = StageLock { cmd: "make 1".into(), ..Default::default() };
        let sig = signature(stage, &base).unwrap();
        let d = |h: &str| Some(Digest { hash: h.into(), size: 1, files: None });
        let with_dep = StageLock { deps: BTreeMap::from([("d".into(), d("1"))]), ..base.clone() };
        assert_ne!(signature(stage, &with_dep).unwrap(), sig);
        let other_dep = StageLock { deps: BTreeMap::from([("d".into(), d("2"))]), ..base.clone() };
        assert_ne!(signature(stage, &other_dep), signature(stage, &with_dep));
        let missing = StageLock { deps: BTreeMap::from([("d".into(), None)]), ..base.clone() };
        assert_eq!(signature(stage, &missing), None);
        let cmd = StageLock { cmd: "make 2".into(), ..base.clone() };
        assert_ne!(signature(stage, &cmd).unwrap(), sig);
        // Outs and metrics are results, not inputs.
        let outs = StageLock { outs: BTreeMap::from([("out".into(), d("9"))]), ..base.clone() };
        assert_eq!(signature(stage, &outs).unwrap(), sig);
    }

    #[test]
    fn gc_keeps_the_newest_entries() {
        let t = tempfile::tempdir().unwrap();
        let p = pipeline(t.path());
        let mut cx = Context::new(&p, HashCache::open(&p.dir));
        let stage = &p.stages[0];
        let cache = Cache::of(&p);
        let mut sigs = Vec::new();
        for (i, content) in ["one", "two", "three"].into_iter().enumerate() {
            let lock = run_stage(&mut cx, content);
            let lock = StageLock { cmd: format!("make {i}"), ..lock };
            let sig = signature(stage, &lock).unwrap();
            cache.store(&p, &mut cx.hashes, stage, &sig, &lock).unwrap();
            sigs.push(sig);
        }
        std::fs::create_dir_all(cache.objects_dir().join("zz")).unwrap();
        std::fs::write(cache.objects_dir().join("zz/stray"), "stray").unwrap();
        std::fs::write(cache.objects_dir().join("zz/.stray.tmp-1"), "left by a killed store").unwrap();
        let s = cache.gc(Some(2), None).unwrap();
        assert_eq!((s.entries_kept, s.entries_removed), (2, 1));
        assert_eq!(s.objects_removed, 2, "`one` and `stray` are used by no kept entry: {s:?}");
        assert!(!cache.objects_dir().join("zz").exists());
        assert!(!cache.has(&sigs[0]) && cache.has(&sigs[1]) && cache.has(&sigs[2]));
        let mut hashes = HashCache::open(&p.dir);
        assert!(cache.load(&sigs[2], &mut hashes, "s").is_some());
        // A size limit below the newest entry's files keeps nothing.
        let s = cache.gc(None, Some(3)).unwrap();
        assert_eq!((s.entries_kept, s.entries_removed, s.bytes_kept), (0, 2, 0));
        assert!(cache.entries().unwrap().is_empty());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10kB"), Ok(10 << 10));
        assert!(parse_size("ten").is_err() && parse_size("5X").is_err() && parse_size("-1").is_err());
    }
}
