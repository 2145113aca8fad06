//! Content hashes (blake3) of files and folders, with a cache keyed by path, size, modification
//! time (ns) and inode: a file whose stat is unchanged is never read again, so a no-op status
//! over thousands of images costs one `stat` per file.
//!
//! A folder's hash is the hash of its manifest, one `<file hash>  <relative path>` line per file
//! in byte order of the paths (empty folders do not count, symlinks are followed).

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use sd_data::layout::pipeline::Digest;

/// One file of a hashed file or folder: its path inside the folder (empty for a file), content
/// hash, size and permission bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub mode: u32,
}

/// A file's or folder's digest with the files it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub digest: Digest,
    /// Sorted by path (a file: one entry with an empty path).
    pub files: Vec<FileHash>,
}

/// A folder's digest: the hash of its manifest, one `<file hash>  <relative path>` line per file,
/// in byte order of the paths (`files` sorted so).
pub fn folder_digest(files: &[FileHash]) -> Digest {
    let mut manifest = Vec::with_capacity(files.len() * 100);
    for f in files {
        manifest.extend_from_slice(f.hash.as_bytes());
        manifest.extend_from_slice(b"  ");
        manifest.extend_from_slice(f.path.as_os_str().as_bytes());
        manifest.push(b'\n');
    }
    let hash = blake3::hash(&manifest).to_hex().to_string();
    Digest { hash, size: files.iter().map(|f| f.size).sum(), files: Some(files.len() as u64) }
}

/// What the cache trusts a file by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    inode: u64,
}

impl Stat {
    fn of(m: &Metadata) -> Stat {
        Stat { size: m.len(), mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(), inode: m.ino() }
    }
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: HashMap<String, (Stat, String)>,
}

const CACHE_VERSION: u32 = 1;

/// A file modified this recently may be modified again within the same timestamp tick without
/// its stat changing; such files are hashed again next time instead of being trusted.
const RACY: Duration = Duration::from_secs(2);

pub struct HashCache {
    file: Option<PathBuf>,
    /// Keys are relative to this folder, so that the cache holds wherever `pipeline` runs from.
    base: PathBuf,
    entries: HashMap<String, (Stat, String)>,
    used: HashSet<String>,
    dirty: bool,
    /// Listings computed during this run, until [`HashCache::forget`].
    memo: HashMap<PathBuf, Option<Listing>>,
}

impl HashCache {
    /// The cache of the pipeline in folder `base`, stored in `base/.pipeline/hashes.json` (an
    /// unreadable or outdated file gives an empty cache).
    pub fn open(base: &Path) -> HashCache {
        let file = base.join(crate::spec::STATE_DIR).join("hashes.json");
        let entries = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(c) if c.version == CACHE_VERSION => c.entries,
                _ => {
                    tracing::warn!("ignoring unreadable hash cache {} (files will be hashed again)", file.display());
                    HashMap::new()
                }
            },
            Err(_) => HashMap::new(),
        };
        HashCache { file: Some(file), base: base.to_path_buf(), entries, ..HashCache::in_memory() }
    }

    pub fn in_memory() -> HashCache {
        HashCache {
            file: None,
            base: PathBuf::new(),
            entries: HashMap::new(),
            used: HashSet::new(),
            dirty: false,
            memo: HashMap::new(),
        }
    }

    /// The digest of a file or folder, `None` if it does not exist.
    pub fn digest(&mut self, path: &Path) -> io::Result<Option<Digest>> {
        Ok(self.listing(path)?.map(|l| l.digest))
    }

    /// The digest of a file or folder with the hash of every file in it, `None` if it does not
    /// exist.
    pub fn listing(&mut self, path: &Path) -> io::Result<Option<Listing>> {
        if let Some(l) = self.memo.get(path) {
            return Ok(l.clone());
        }
        let l = self.compute(path)?;
        self.memo.insert(path.to_path_buf(), l.clone());
        Ok(l)
    }

    /// Records that `path` (a file just put there, e.g. restored from the run cache) holds
    /// content `hash`, so that it is not read again; like a hashed file, only once it is older
    /// than the racy window.
    pub fn remember(&mut self, path: &Path, hash: &str) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        if meta.modified().is_ok_and(|m| m < SystemTime::now() - RACY) {
            let key = path.strip_prefix(&self.base).unwrap_or(path).to_string_lossy().into_owned();
            self.entries.insert(key.clone(), (Stat::of(&meta), hash.to_string()));
            self.used.insert(key);
            self.dirty = true;
        }
        Ok(())
    }

    /// Forgets the digests of this run for everything inside or around `path` (it was rewritten).
    pub fn forget(&mut self, path: &Path) {
        self.memo.retain(|p, _| !crate::dag::overlaps(p, path));
    }

    fn compute(&mut self, path: &Path) -> io::Result<Option<Listing>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_dir() {
            let hash = self.hash_files(&[(path.to_path_buf(), meta.clone())])?.remove(0);
            let file =
                FileHash { path: PathBuf::new(), hash: hash.clone(), size: meta.len(), mode: meta.mode() & 0o7777 };
            return Ok(Some(Listing { digest: Digest { hash, size: meta.len(), files: None }, files: vec![file] }));
        }
        let mut files = sd_data::tree::files(path)?;
        files.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
        let hashes = self.hash_files(&files)?;
        let files: Vec<FileHash> = files
            .iter()
            .zip(hashes)
            .map(|((file, meta), hash)| FileHash {
                path: file.strip_prefix(path).unwrap_or(file).to_path_buf(),
                hash,
                size: meta.len(),
                mode: meta.mode() & 0o7777,
            })
            .collect();
        Ok(Some(Listing { digest: folder_digest(&files), files }))
    }

    /// Hashes of `files`, from the cache where their stat is unchanged, else read (in parallel).
    fn hash_files(&mut self, files: &[(PathBuf, Metadata)]) -> io::Result<Vec<String>> {
        let keys: Vec<String> =
            files.iter().map(|(p, _)| p.strip_prefix(&self.base).unwrap_or(p).to_string_lossy().into_owned()).collect();
        let stats: Vec<Stat> = files.iter().map(|(_, m)| Stat::of(m)).collect();
        let mut hashes: Vec<Option<String>> = keys
            .iter()
            .zip(&stats)
            .map(|(k, s)| self.entries.get(k).filter(|(cached, _)| cached == s).map(|(_, h)| h.clone()))
            .collect();
        let todo: Vec<usize> = (0..files.len()).filter(|&i| hashes[i].is_none()).collect();
        let fresh: Vec<io::Result<String>> = todo.par_iter().map(|&i| hash_file(&files[i].0)).collect();
        let racy = SystemTime::now() - RACY;
        for (i, h) in todo.into_iter().zip(fresh) {
            let h = h.map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", files[i].0.display())))?;
            if files[i].1.modified().is_ok_and(|m| m < racy) {
                self.entries.insert(keys[i].clone(), (stats[i], h.clone()));
                self.dirty = true;
            }
            hashes[i] = Some(h);
        }
        self.used.extend(keys);
        Ok(hashes.into_iter().map(|h| h.expect("hashed")).collect())
    }

    /// Writes the cache back if it changed. `prune` drops the entries this run did not use
    /// (pass it only when the run looked at every path of the pipeline).
    pub fn save(&mut self, prune: bool) -> Result<(), sd_data::artifact::WriteError> {
        let Some(file) = &self.file else { return Ok(()) };
        if prune {
            let before = self.entries.len();
            self.entries.retain(|k, _| self.used.contains(k));
            self.dirty |= self.entries.len() != before;
        }
        if !self.dirty {
            return Ok(());
        }
        let cache = CacheFile { version: CACHE_VERSION, entries: std::mem::take(&mut self.entries) };
        let bytes = serde_json::to_vec(&cache).expect("serialisable");
        self.entries = cache.entries;
        sd_data::artifact::write_bytes(file, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn folder_hash_depends_on_names_and_contents_only() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("sub/empty")).unwrap();
            fs::write(d.join("x.txt"), "x").unwrap();
            fs::write(d.join("sub/y.txt"), "yy").unwrap();
        }
        let mut cache = HashCache::in_memory();
        let da = cache.digest(&a).unwrap().unwrap();
        assert_eq!(da, cache.digest(&b).unwrap().unwrap());
        assert_eq!((da.size, da.files), (3, Some(2)));
        fs::write(b.join("sub/y.txt"), "yz").unwrap();
        assert_eq!(cache.digest(&b).unwrap().unwrap(), da, "memoised until forgotten");
        cache.forget(&b.join("sub"));
        assert_ne!(cache.digest(&b).unwrap().unwrap().hash, da.hash);
        assert_eq!(cache.digest(&t.path().join("none")).unwrap(), None);
        let file = cache.digest(&a.join("x.txt")).unwrap().unwrap();
        assert_eq!((file.hash, file.files), (blake3::hash(b"x").to_hex().to_string(), None));
    }

    #[test]
    fn cache_trusts_unchanged_stat_and_rehashes_otherwise() {
        let t = tempfile::tempdir().unwrap();
        let (f, cache_file) = (t.path().join("f"), t.path().join(".pipeline/hashes.json"));
        fs::write(&f, "one").unwrap();
        age(&f);
        let mut cache = HashCache::open(t.path());
        let one = cache.digest(&f).unwrap().unwrap().hash;
        cache.save(true).unwrap();

        // Same size, same mtime, same inode: the cache is trusted (this is what makes no-ops fast).
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, "two").unwrap();
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        assert_eq!(HashCache::open(t.path()).digest(&f).unwrap().unwrap().hash, one);

        // A new mtime: hashed again.
        age(&f);
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime + Duration::from_secs(1)).unwrap();
        let mut cache = HashCache::open(t.path());
        assert_eq!(cache.digest(&f).unwrap().unwrap().hash, blake3::hash(b"two").to_hex().to_string());

        // A file written just now is not trusted yet.
        let g = t.path().join("g");
        fs::write(&g, "g").unwrap();
        cache.digest(&g).unwrap();
        cache.save(false).unwrap();
        let saved: CacheFile = serde_json::from_slice(&fs::read(&cache_file).unwrap()).unwrap();
        assert!(saved.entries.contains_key("f"), "keys are relative to the pipeline folder");
        assert!(!saved.entries.contains_key("g"));
    }
}
