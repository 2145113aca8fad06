//! The photos of every split as the audit sees them: each one's file, split and label, and its
//! bottleneck features averaged over the map (`[h, w, C]` -> `[C]`, Keras'
//! `GlobalAveragePooling2D`). `features.npy` is streamed one photo at a time, so memory holds
//! `N x C` floats (6 MB for 3000 photos of VGG16), never the whole maps.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ndarray::Array2;
use sd_data::Classes;
use sd_data::layout::features::{self, FEATURES, FILES, LABELS};

/// One split: a bottleneck output folder and the data folder its photos came from.
#[derive(Debug, Clone)]
pub struct Split {
    /// The features folder's name (`train`, `validation`, `test`).
    pub name: String,
    pub features: PathBuf,
    /// The class-folder data set bottleneck read (`bottleneck.json`'s `data`).
    pub data: PathBuf,
    /// Photos per class, in class order.
    pub counts: Vec<usize>,
}

/// One photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    /// Index into [`Photos::splits`].
    pub split: usize,
    /// The image file: the split's data folder joined with its `files.txt` line.
    pub path: PathBuf,
    pub label: u32,
}

/// Every split's photos, in split order then `files.txt` order.
#[derive(Debug, Clone)]
pub struct Photos {
    pub splits: Vec<Split>,
    pub classes: Classes,
    pub photos: Vec<Photo>,
    /// `[N, C]`: each photo's features averaged over the map.
    pub pooled: Array2<f32>,
}

impl Photos {
    /// Reads the features folders (one per split); they must share the class map and feature
    /// shape, and have distinct folder names.
    pub fn load(dirs: &[PathBuf]) -> Result<Photos> {
        let mut splits: Vec<Split> = Vec::new();
        let mut classes: Option<(Classes, PathBuf)> = None;
        let mut photos = Vec::new();
        let mut rows: Vec<f32> = Vec::new();
        let mut channels = None;
        for dir in dirs {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if let Some(other) = splits.iter().find(|s| s.name == name) {
                bail!(
                    "{} and {} are both named {name:?}; the audit names each split by its features folder, so give them distinct names (train, validation, test)",
                    other.features.display(),
                    dir.display()
                );
            }
            let meta = features::read_meta(dir)?;
            let split_classes = features::read_classes(dir)?;
            match &classes {
                None => classes = Some((split_classes.clone(), dir.clone())),
                Some((c, first)) if *c != split_classes => bail!(
                    "{} has classes {split_classes}, but {} has {c}; audit splits of one data set (the same class folders in each)",
                    dir.join(features::CLASSES).display(),
                    first.join(features::CLASSES).display()
                ),
                Some(_) => {}
            }
            let labels = read_labels(dir, split_classes.len())?;
            let files = read_files(dir)?;
            if files.len() != labels.len() {
                bail!(
                    "{} lists {} files, but {} holds {} labels; run bottleneck again",
                    dir.join(FILES).display(),
                    files.len(),
                    dir.join(LABELS).display(),
                    labels.len()
                );
            }
            let (n, c) = read_pooled(&dir.join(FEATURES), &mut rows)?;
            if n != labels.len() {
                bail!(
                    "{} holds {n} photos, but {} holds {} labels; run bottleneck again",
                    dir.join(FEATURES).display(),
                    dir.join(LABELS).display(),
                    labels.len()
                );
            }
            match channels {
                Some(prev) if prev != c => bail!(
                    "{} has {c} feature channels, but the splits before it have {prev}; make every split's features with the same model",
                    dir.join(FEATURES).display()
                ),
                _ => channels = Some(c),
            }
            let data = PathBuf::from(&meta.data);
            let mut counts = vec![0; split_classes.len()];
            for (file, &label) in files.iter().zip(&labels) {
                counts[label as usize] += 1;
                photos.push(Photo { split: splits.len(), path: data.join(file), label });
            }
            splits.push(Split { name, features: dir.clone(), data, counts });
        }
        let (classes, _) = classes.context("no features folders given")?;
        let c = channels.unwrap_or(0);
        let pooled = Array2::from_shape_vec((photos.len(), c), rows).expect("one pooled row per photo");
        Ok(Photos { splits, classes, photos, pooled })
    }

    pub fn len(&self) -> usize {
        self.photos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.photos.is_empty()
    }

    pub fn labels(&self) -> Vec<u32> {
        self.photos.iter().map(|p| p.label).collect()
    }

    /// Photos per class over all splits.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.splits {
            counts.iter_mut().zip(&s.counts).for_each(|(a, b)| *a += b);
        }
        counts
    }
}

fn read_labels(dir: &Path, classes: usize) -> Result<Vec<u32>> {
    let path = dir.join(LABELS);
    let labels = sd_data::npy::read::<i64>(&path)?;
    if labels.ndim() != 1 {
        bail!("{}: shape {:?}, expected [N]; run bottleneck again", path.display(), labels.shape());
    }
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| match u32::try_from(l) {
            Ok(l) if (l as usize) < classes => Ok(l),
            _ => bail!(
                "{}: label {l} at index {i}, but there are {classes} classes; run bottleneck again",
                path.display()
            ),
        })
        .collect()
}

fn read_files(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(FILES);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; is {} a bottleneck output?", path.display(), dir.display()))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Appends the average over the map of each row of `features.npy` (`[N, ...spatial, C]`, float32)
/// to `out`; returns `(N, C)`.
fn read_pooled(path: &Path, out: &mut Vec<f32>) -> Result<(usize, usize)> {
    let header = sd_data::npy::read_header(path)?;
    if header.descr != "<f4" || header.shape.len() < 2 {
        bail!(
            "{}: {} {:?}, expected float32 features [N, h, w, C] from bottleneck",
            path.display(),
            header.descr,
            header.shape
        );
    }
    let (n, c) = (header.shape[0], *header.shape.last().expect("two dimensions at least"));
    let positions: usize = header.shape[1..header.shape.len() - 1].iter().product();
    if c == 0 || positions == 0 {
        bail!("{}: empty feature maps {:?}; run bottleneck again", path.display(), header.shape);
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let expected = header.data_offset + (n * positions * c * 4) as u64;
    let size = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
    if size != expected {
        bail!(
            "{}: {size} bytes, but its header {:?} needs {expected}: the file is truncated or damaged; run bottleneck again",
            path.display(),
            header.shape
        );
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(header.data_offset)).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = vec![0u8; positions * c * 4];
    let mut sum = vec![0f64; c];
    for row in 0..n {
        reader.read_exact(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        sum.fill(0.0);
        for (i, v) in bytes.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes(v.try_into().expect("4 bytes"));
            if !v.is_finite() {
                bail!("{}: photo {row} has a value {v}, which is not finite; run bottleneck again", path.display());
            }
            sum[i % c] += v as f64;
        }
        out.extend(sum.iter().map(|s| (s / positions as f64) as f32));
    }
    Ok((n, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sd_data::image::{ImageSize, ResizeFilter};
    use sd_data::layout::features::{FeatureMeta, FeatureWriter};

    /// A features folder of `[N, 2, 1, 2]` maps.
    pub fn write_split(dir: &Path, data: &str, maps: &[[f32; 4]], labels: &[u32], files: &[&str]) {
        let classes = Classes::new(vec!["a".into(), "b".into()]);
        let mut w = FeatureWriter::create(dir, labels.len()).unwrap();
        w.set_shape(&[2, 1, 2]).unwrap();
        w.write(&maps.concat(), labels, files).unwrap();
        let meta = FeatureMeta {
            data: data.into(),
            model: "m".into(),
            size: ImageSize::square(64),
            resize_filter: ResizeFilter::Bilinear,
            preprocess: sd_data::Preprocess::Caffe,
            batch_size: 2,
            classes: classes.names().to_vec(),
            count: labels.len(),
            feature_shape: vec![2, 1, 2],
            shard: None,
        };
        w.finish(&classes, &meta).unwrap();
    }

    #[test]
    fn splits_are_pooled_over_the_map_and_named_by_folder() {
        let t = tempfile::tempdir().unwrap();
        let (train, val) = (t.path().join("f/train"), t.path().join("f/validation"));
        write_split(&train, "d/train", &[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]], &[0, 1], &["a/x.jpg", "b/y.jpg"]);
        write_split(&val, "d/validation", &[[5.0, 5.0, 5.0, 7.0]], &[1], &["b/z.jpg"]);
        let p = Photos::load(&[train, val]).unwrap();
        assert_eq!(p.pooled, ndarray::array![[2.0, 3.0], [1.0, 1.0], [5.0, 6.0]]);
        assert_eq!(p.photos[2], Photo { split: 1, path: "d/validation/b/z.jpg".into(), label: 1 });
        assert_eq!((p.splits[0].name.as_str(), p.splits[1].name.as_str()), ("train", "validation"));
        assert_eq!(p.class_counts(), [1, 2]);
    }

    #[test]
    fn same_names_and_damaged_files_are_errors_that_say_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a/train"), t.path().join("b/train"));
        write_split(&a, "d", &[[1.0; 4]], &[0], &["a/x.jpg"]);
        write_split(&b, "d", &[[1.0; 4]], &[0], &["a/x.jpg"]);
        let e = Photos::load(&[a.clone(), b]).unwrap_err().to_string();
        assert!(e.contains("both named \"train\""), "{e}");
        let f = a.join(FEATURES);
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 4]).unwrap();
        let e = Photos::load(&[a]).unwrap_err().to_string();
        assert!(e.contains("features.npy") && e.contains("truncated"), "{e}");
    }
}
