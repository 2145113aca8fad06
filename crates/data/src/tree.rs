//! Walking a folder tree, the one way every stage does it: symlinks are followed (a link to a
//! folder elsewhere is walked like a folder), but a link back to a folder the walk is already
//! inside (`train/cats/up -> ../..`) is an error naming it, never an endless or repeated walk.
//! Loops are found by the (device, inode) of the folders on the current path, so every spelling
//! of a folder is the same folder.
//!
//! [`files`] lists everything below a folder: what the pipeline hashes and what a training
//! checkpoint fingerprints; [`Walker`] serves walks that choose what to keep (a data set's images).

use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} leads back to {ancestor}, a folder it is inside: a symlink loop through {links}; remove the link or point it outside {ancestor}"
    )]
    Loop {
        /// Where the walk found itself again.
        path: PathBuf,
        /// The folder it found.
        ancestor: PathBuf,
        /// The symlinks on the way, as text.
        links: String,
    },
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> io::Error {
        let kind = match &e {
            WalkError::Io { source, .. } => source.kind(),
            WalkError::Loop { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Every file under `dir` with its metadata, following symlinks (in directory order).
pub fn files(dir: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
    let mut out = Vec::new();
    Walker::new().walk(dir, &mut |path, meta| -> io::Result<()> {
        let meta = meta.map_err(|e| WalkError::Io { path: path.clone(), source: e })?;
        if meta.is_file() {
            out.push((path, meta));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The folders a walk is inside, outermost first.
#[derive(Debug, Default)]
pub struct Walker {
    inside: Vec<(FolderId, PathBuf)>,
}

impl Walker {
    pub fn new() -> Walker {
        Walker::default()
    }

    /// A walker already inside `dir`: walks of its sub-folders treat a link back to `dir` as a loop.
    pub fn inside(dir: &Path) -> Result<Walker, WalkError> {
        let mut w = Walker::new();
        w.inside.push((folder_id(dir)?, dir.to_path_buf()));
        Ok(w)
    }

    /// Calls `visit` with every entry below `dir` that is not a folder (following symlinks), and
    /// the entry's metadata (an error for a dangling link), in directory order.
    pub fn walk<E: From<WalkError>>(
        &mut self,
        dir: &Path,
        visit: &mut dyn FnMut(PathBuf, io::Result<Metadata>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk_where(dir, &|_| false, visit)
    }

    /// [`Walker::walk`], skipping every entry (file or folder) for which `skip(path)` holds.
    pub fn walk_where<E: From<WalkError>>(
        &mut self,
        dir: &Path,
        skip: &dyn Fn(&Path) -> bool,
        visit: &mut dyn FnMut(PathBuf, io::Result<Metadata>) -> Result<(), E>,
    ) -> Result<(), E> {
        let id = folder_id(dir)?;
        if let Some((_, ancestor)) = self.inside.iter().find(|(i, _)| *i == id) {
            return Err(self.loop_error(dir, ancestor).into());
        }
        self.inside.push((id, dir.to_path_buf()));
        let io = |source| WalkError::Io { path: dir.to_path_buf(), source };
        let result = (|| {
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if skip(&path) {
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => self.walk_where(&path, skip, visit)?,
                    meta => visit(path, meta)?,
                }
            }
            Ok(())
        })();
        self.inside.pop();
        result
    }
}

impl Walker {
    /// The error for `dir`, which is `ancestor` again: it names the symlinks on the walk's path.
    fn loop_error(&self, dir: &Path, ancestor: &Path) -> WalkError {
        let start = self.inside.first().map_or(dir, |(_, p)| p.as_path());
        let links: Vec<String> = dir
            .ancestors()
            .take_while(|p| p.starts_with(start) && *p != start)
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink()))
            .map(|p| match std::fs::read_link(p) {
                Ok(to) => format!("{} -> {}", p.display(), to.display()),
                Err(_) => p.display().to_string(),
            })
            .collect();
        let links = if links.is_empty() { "hard-linked folders".to_string() } else { links.join(", ") };
        WalkError::Loop { path: dir.to_path_buf(), ancestor: ancestor.to_path_buf(), links }
    }
}

/// A folder's identity, whatever path reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FolderId(u64, u64);

fn folder_id(dir: &Path) -> Result<FolderId, WalkError> {
    let meta = std::fs::metadata(dir).map_err(|source| WalkError::Io { path: dir.to_path_buf(), source })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(FolderId(meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        // Without inodes, the canonical path names the folder.
        let _ = meta;
        let canonical =
            std::fs::canonicalize(dir).map_err(|source| WalkError::Io { path: dir.to_path_buf(), source })?;
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&canonical, &mut h);
        Ok(FolderId(0, std::hash::Hasher::finish(&h)))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    fn names(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = files(root)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_link_to_a_folder_elsewhere_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "elsewhere/x.jpg");
        touch(dir.path(), "data/a/1.jpg");
        symlink(dir.path().join("elsewhere"), dir.path().join("data/a/more")).unwrap();
        // Two links to the same folder are two folders of the walk, not a loop.
        symlink("../elsewhere", dir.path().join("data/again")).unwrap();
        assert_eq!(names(&dir.path().join("data")), ["a/1.jpg", "a/more/x.jpg", "again/x.jpg"]);
    }

    #[test]
    fn a_link_back_up_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "train/a/1.jpg");
        touch(dir.path(), "train/b/2.jpg");
        symlink("../..", dir.path().join("train/a/up")).unwrap();
        // `up` is the folder above `train`, which holds `train` again.
        let err = files(&dir.path().join("train")).unwrap_err().to_string();
        assert!(err.contains("train/a/up/train leads back to") && err.contains("symlink loop through"), "{err}");
        assert!(err.contains("train/a/up -> ../.."), "{err}");
        // A link to itself, and a loop through two links.
        std::fs::remove_file(dir.path().join("train/a/up")).unwrap();
        symlink(".", dir.path().join("train/b/self")).unwrap();
        let err = files(&dir.path().join("train")).unwrap_err().to_string();
        assert!(err.contains("train/b/self leads back to") && err.contains("train/b/self -> ."), "{err}");
        std::fs::remove_file(dir.path().join("train/b/self")).unwrap();
        symlink(dir.path().join("train/b"), dir.path().join("train/a/to_b")).unwrap();
        symlink(dir.path().join("train/a"), dir.path().join("train/b/to_a")).unwrap();
        let err = files(&dir.path().join("train")).unwrap_err().to_string();
        assert!(err.contains("symlink loop"), "{err}");
    }

    #[test]
    fn a_walker_inside_a_folder_sees_a_link_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/1.jpg");
        symlink("..", dir.path().join("a/root")).unwrap();
        let mut seen = 0;
        let mut count = |_: PathBuf, _: io::Result<Metadata>| -> Result<(), WalkError> {
            seen += 1;
            Ok(())
        };
        // Walked alone, `a` links to a folder outside it (its parent), which holds `a` again.
        let err = Walker::new().walk(&dir.path().join("a"), &mut count).unwrap_err();
        assert!(matches!(&err, WalkError::Loop { path, .. } if path.ends_with("a/root/a")), "{err}");
        // Walked as a class folder of its parent, the link itself closes the loop.
        let err = Walker::inside(dir.path()).unwrap().walk(&dir.path().join("a"), &mut count).unwrap_err();
        assert!(matches!(&err, WalkError::Loop { path, .. } if path.ends_with("a/root")), "{err}");
    }

    #[test]
    fn dangling_links_are_visited_with_their_error() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "ok.txt");
        symlink("nowhere", dir.path().join("dangling.jpg")).unwrap();
        let err = files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dangling.jpg"), "{err}");
    }
}
