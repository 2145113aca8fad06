//! `bottleneck --merge`: joins the outputs of `--shard 0/n ... n-1/n` into the files a single
//! run gives (byte for byte), after checking that the shards belong together and cover the
//! data set exactly once.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use sd_data::artifact::StagingDir;
use sd_data::layout::features::{
    CLASSES, FEATURES, FILES, FeatureMeta as Meta, FeatureWriter, LABELS, META, read_classes, read_meta,
};
use sd_data::npy;

/// Merges shard folders (any order) into `out`; returns the number of images.
pub fn merge(shard_dirs: &[PathBuf], out: &Path) -> Result<usize> {
    ensure!(!shard_dirs.is_empty(), "--merge needs the shard folders to join");
    let mut shards: Vec<(PathBuf, Meta)> =
        shard_dirs.iter().map(|d| Ok((d.clone(), read_meta(d)?))).collect::<Result<_>>()?;
    for (dir, meta) in &shards {
        ensure!(meta.shard.is_some(), "{} is a complete run, not a shard (no \"shard\" in its {META})", dir.display());
    }
    shards.sort_by_key(|(_, m)| m.shard.as_ref().map(|s| s.index));

    let (first_dir, first) = &shards[0];
    let info = first.shard.clone().expect("checked");
    ensure!(
        shards.len() == info.count,
        "{} shards given, but they are shards of {} (missing: {})",
        shards.len(),
        info.count,
        missing(&shards, info.count)
    );
    let classes_json = std::fs::read(first_dir.join(CLASSES))
        .with_context(|| format!("reading {}", first_dir.join(CLASSES).display()))?;
    let mut next = 0;
    for (i, (dir, meta)) in shards.iter().enumerate() {
        let s = meta.shard.as_ref().expect("checked");
        ensure!(s.index == i, "two shards have index {} ({} and another); each shard once", s.index, dir.display());
        ensure!(
            s.start == next && s.count == info.count && s.total == info.total,
            "{}: shard {}/{} covers {}..{} of {}, expected to start at {next} of {}",
            dir.display(),
            s.index,
            s.count,
            s.start,
            s.end,
            s.total,
            info.total
        );
        let mut same = meta.clone();
        same.shard = first.shard.clone();
        same.count = first.count;
        ensure!(
            same == *first,
            "{} was made with other parameters than {} (compare their {META})",
            dir.display(),
            first_dir.display()
        );
        ensure!(
            std::fs::read(dir.join(CLASSES)).ok().as_deref() == Some(&classes_json[..]),
            "{}: {CLASSES} differs from {}",
            dir.display(),
            first_dir.display()
        );
        next = s.end;
    }
    ensure!(next == info.total, "the shards cover {next} of {} images", info.total);

    let staging = StagingDir::create(out)?;
    let mut writer = FeatureWriter::create(staging.path(), info.total)?;
    writer.set_shape(&first.feature_shape)?;
    for (shard_dir, meta) in &shards {
        copy_features(&shard_dir.join(FEATURES), meta, &mut writer)?;
        let l = npy::read::<i64>(shard_dir.join(LABELS))?;
        ensure!(
            l.len() == meta.count,
            "{}: {} labels for {} images",
            shard_dir.join(LABELS).display(),
            l.len(),
            meta.count
        );
        let labels: Vec<u32> = l.iter().map(|&v| v as u32).collect();
        let list = std::fs::read_to_string(shard_dir.join(FILES))
            .with_context(|| format!("reading {}", shard_dir.join(FILES).display()))?;
        let names: Vec<&str> = list.lines().collect();
        ensure!(
            names.len() == meta.count,
            "{}: line count differs from {}",
            shard_dir.join(FILES).display(),
            meta.count
        );
        writer.write_index(&labels, &names)?;
    }
    let merged = Meta { count: info.total, shard: None, ..first.clone() };
    writer.finish(&read_classes(first_dir)?, &merged)?;
    staging.commit()?;
    Ok(info.total)
}

fn missing(shards: &[(PathBuf, Meta)], count: usize) -> String {
    let have: Vec<usize> = shards.iter().filter_map(|(_, m)| m.shard.as_ref().map(|s| s.index)).collect();
    (0..count).filter(|i| !have.contains(i)).map(|i| format!("{i}/{count}")).collect::<Vec<_>>().join(", ")
}

/// Streams one shard's features into the merged file, 1 MiB at a time.
fn copy_features(path: &Path, meta: &Meta, out: &mut FeatureWriter) -> Result<()> {
    let header = npy::read_header(path)?;
    let mut want = vec![meta.count];
    want.extend(&meta.feature_shape);
    if header.descr != "<f4" || header.shape != want {
        bail!("{}: holds {} {:?}, expected <f4 {:?}", path.display(), header.descr, header.shape, want);
    }
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(header.data_offset))?;
    let row = meta.feature_shape.iter().product::<usize>() * 4;
    // Whole rows per read; a shape with a zero in it has no data (and no row to divide by).
    let mut buf = vec![0u8; row * ((1 << 20) / row.max(1)).max(1)];
    let mut values = Vec::new();
    let mut left = meta.count * row;
    while left > 0 {
        let n = left.min(buf.len());
        f.read_exact(&mut buf[..n]).with_context(|| format!("{} is truncated", path.display()))?;
        values.clear();
        values.extend(buf[..n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        out.write_features(&values)?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sd_data::image::{ImageSize, ResizeFilter};

    #[test]
    fn a_feature_shape_with_a_zero_is_no_division_by_zero() {
        // A shard's bottleneck.json and features.npy agreeing on rows of zero values: nothing to
        // copy, and no panic sizing the copy buffer from the row length.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.npy");
        npy::write(&path, &ndarray::Array2::<f32>::zeros((2, 0))).unwrap();
        let meta = Meta {
            data: "d".into(),
            model: "m".into(),
            size: ImageSize::square(32),
            resize_filter: ResizeFilter::Bilinear,
            preprocess: sd_data::Preprocess::Caffe,
            batch_size: 2,
            classes: vec!["a".into(), "b".into()],
            count: 2,
            feature_shape: vec![0],
            shard: None,
        };
        let mut out = FeatureWriter::create(&dir.path().join("out"), 2).unwrap();
        out.set_shape(&[0]).unwrap();
        copy_features(&path, &meta, &mut out).unwrap();
    }
}
