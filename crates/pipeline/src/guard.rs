//! Where a stage may write. Its outs are deleted before it runs, so each must resolve, after
//! symlinks, inside the pipeline folder and not onto the pipeline's own files: `outs:
//! [link/x]` with `link -> /home` would otherwise delete `/home/x`. `spec` rejects such paths
//! as written; this checks them on the file system, just before they are deleted.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::dag::overlaps;
use crate::spec::{ConfigError, Pipeline, Stage, own_files};

/// Every stage's outs (see [`check`]), before a run or an export starts.
pub fn check_all(p: &Pipeline) -> Result<(), ConfigError> {
    p.stages.iter().try_for_each(|s| check(p, s))
}

/// The stage's outs and metrics files, resolved through every symlink on their way, lie inside
/// the pipeline folder and are none of its own files.
pub fn check(p: &Pipeline, stage: &Stage) -> Result<(), ConfigError> {
    let root = std::fs::canonicalize(&p.dir).map_err(|e| ConfigError {
        file: p.file.clone(),
        loc: None,
        msg: format!("cannot resolve the pipeline folder {}: {e}", p.dir.display()),
    })?;
    let own: Vec<(PathBuf, &str)> =
        own_files(&p.file).into_iter().map(|(f, what)| (resolve(&root, &f).unwrap_or(root.join(&f)), what)).collect();
    for out in stage.written() {
        let at = |msg: String| p.error(out.loc, msg);
        let field = if stage.outs.iter().any(|o| o.path == out.path) { "outs" } else { "metrics" };
        let shown = out.path.display();
        let resolved = resolve(&root, &out.path)
            .map_err(|e| at(format!("`{field}` path `{shown}` of stage `{}` cannot be resolved: {e}", stage.name)))?;
        if !resolved.starts_with(&root) {
            return Err(at(format!(
                "`{field}` path `{shown}` of stage `{}` leads through a symlink to {}, outside the pipeline folder {} \
                 (outs are deleted before their stage runs); write it inside the folder, or replace the symlink \
                 by a real folder or a bind mount",
                stage.name,
                resolved.display(),
                root.display()
            )));
        }
        if let Some((file, what)) = own.iter().find(|(f, _)| overlaps(&resolved, f)) {
            return Err(at(format!(
                "`{field}` path `{shown}` of stage `{}` leads through a symlink to {what} {} (outs are deleted \
                 before their stage runs)",
                stage.name,
                file.display()
            )));
        }
    }
    Ok(())
}

/// `root/rel` with every symlink on the way resolved, the final component too; components that
/// do not exist yet are kept as written. A dangling symlink is an error: what it points to
/// could be created anywhere.
fn resolve(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut at = root.to_path_buf();
    let mut parts = rel.components();
    for c in parts.by_ref() {
        match c {
            Component::Normal(name) => at.push(name),
            Component::ParentDir => {
                at.pop();
            }
            Component::RootDir | Component::Prefix(_) => at = PathBuf::from(c.as_os_str()),
            Component::CurDir => {}
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                at = std::fs::canonicalize(&at).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{} is a symlink to a path that does not exist ({e})", at.display()),
                    )
                })?
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    at.extend(parts);
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn check_outs(dir: &Path, outs: &str) -> Result<(), String> {
        let src = format!("stages:\n  a:\n    cmd: x\n    outs: [{outs}]\n");
        let p = Pipeline::parse(&dir.join("pipeline.yaml"), &src).unwrap();
        check_all(&p).map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"))
    }

    #[test]
    fn outs_through_symlinks_must_stay_inside_and_off_the_pipelines_files() {
        let t = tempfile::tempdir().unwrap();
        let (dir, outside) = (t.path().join("p"), t.path().join("outside"));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(dir.join("pipeline.yaml"), "").unwrap();
        symlink(&outside, dir.join("away")).unwrap();
        symlink("real", dir.join("here")).unwrap();
        symlink("pipeline.yaml", dir.join("alias")).unwrap();
        symlink(".pipeline", dir.join("state")).unwrap();
        symlink("nowhere", dir.join("dangling")).unwrap();

        assert_eq!(check_outs(&dir, "not/yet/made, real/x, here/y, here"), Ok(()));
        let err = check_outs(&dir, "ok, away/file").unwrap_err();
        let outside = std::fs::canonicalize(&outside).unwrap();
        assert!(
            err.starts_with(&format!(
                "DIR/pipeline.yaml:4:16: `outs` path `away/file` of stage `a` leads through a symlink to {}/file, outside",
                outside.display()
            )),
            "{err}"
        );
        assert!(check_outs(&dir, "away").unwrap_err().contains("4:12: `outs` path `away` of stage `a` leads through"));
        let err = check_outs(&dir, "alias").unwrap_err();
        assert!(err.contains("leads through a symlink to the pipeline file"), "{err}");
        std::fs::create_dir(dir.join(".pipeline")).unwrap();
        let err = check_outs(&dir, "state/run.lock").unwrap_err();
        assert!(err.contains("to its run lock and hash cache"), "{err}");
        let err = check_outs(&dir, "dangling/x").unwrap_err();
        assert!(
            err.contains("`dangling/x` of stage `a` cannot be resolved") && err.contains("does not exist"),
            "{err}"
        );
    }
}
