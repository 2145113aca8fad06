//! The images `predict` classifies when they carry no labels: files and folders given as
//! arguments (folders searched recursively for image files, in sorted path order), then the
//! paths listed in a file (one per line; `-` reads standard input), each in the order given.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sd_data::dataset::collect_images;

/// Every image named by `args` and the list file, in a stable order.
pub fn collect(args: &[PathBuf], list: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found = Vec::new();
            collect_images(arg, &mut found)?;
            if found.is_empty() {
                bail!("{} holds no image files; pass image files or folders of them", arg.display());
            }
            found.sort();
            out.extend(found);
        } else if arg.exists() {
            // A file named explicitly is classified whatever its extension: its content decides.
            out.push(arg.clone());
        } else {
            bail!("{} does not exist; pass image files, folders of them, or --list FILE", arg.display());
        }
    }
    if let Some(list) = list {
        let lines: Vec<String> = if list == Path::new("-") {
            std::io::stdin().lock().lines().collect::<Result<_, _>>().context("reading the list from standard input")?
        } else {
            let file = std::fs::File::open(list).with_context(|| format!("cannot open the list {}", list.display()))?;
            std::io::BufReader::new(file)
                .lines()
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading {}", list.display()))?
        };
        out.extend(lines.iter().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).map(PathBuf::from));
    }
    if out.is_empty() {
        bail!("no images to classify: pass image files or folders, --list FILE, or --data DIR for a labelled set");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_folders_and_lists_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["b/2.jpg", "b/sub/1.png", "b/notes.txt", "a.jpeg", "c.bin"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::write(
            d.join("list.txt"),
            format!("{}\n\n{}\r\n", d.join("c.bin").display(), d.join("a.jpeg").display()),
        )
        .unwrap();
        let got = collect(&[d.join("a.jpeg"), d.join("b")], Some(&d.join("list.txt"))).unwrap();
        let rel: Vec<String> = got.iter().map(|p| p.strip_prefix(d).unwrap().display().to_string()).collect();
        assert_eq!(rel, ["a.jpeg", "b/2.jpg", "b/sub/1.png", "c.bin", "a.jpeg"]);
        let e = collect(&[d.join("nope.jpg")], None).unwrap_err().to_string();
        assert!(e.contains("nope.jpg") && e.contains("does not exist"), "{e}");
        std::fs::create_dir(d.join("empty")).unwrap();
        assert!(collect(&[d.join("empty")], None).unwrap_err().to_string().contains("holds no image files"));
        assert!(collect(&[], None).is_err());
    }
}
