//! Listing a folder tree: what the pipeline hashes and what a training checkpoint fingerprints.

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

/// Every file under `dir` with its metadata, following symlinks (in directory order).
pub fn files(dir: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Metadata)>) -> io::Result<()> {
    let with_path = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display()));
    for entry in std::fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry.map_err(|e| with_path(e, dir))?;
        let path = entry.path();
        let meta = if entry.file_type().map_err(|e| with_path(e, &path))?.is_symlink() {
            std::fs::metadata(&path)
        } else {
            entry.metadata()
        }
        .map_err(|e| with_path(e, &path))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() {
            out.push((path, meta));
        }
    }
    Ok(())
}
