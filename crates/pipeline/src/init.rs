//! `pipeline init`: a `pipeline.yaml` for the user's own data, in their own folder. It is the
//! recipe this repository runs (its `pipeline.yaml`, built in) with its params set: `data`, the
//! user's folder; `backbone`, the network; `weights`, its weights found where the binaries find
//! ONNX Runtime (the set-up's `.cache`), so that nothing points into the checkout; and for a
//! backbone other than VGG16, the image input it expects.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sd_cli::{paths, usage};
use sd_data::layout::model::{Backbone, SETUP_SOURCE};

use crate::spec::Pipeline;

/// The recipe: the repository's own pipeline file.
pub const RECIPE: &str = include_str!("../../../pipeline.yaml");

/// What `pipeline init` was asked for.
#[derive(Debug, Clone)]
pub struct Init {
    /// The file to write.
    pub file: PathBuf,
    /// DATA/train/<class>/ and DATA/validation/<class>/.
    pub data: PathBuf,
    /// The network under the head.
    pub backbone: Backbone,
    /// Its weights; the set-up's when `None`.
    pub weights: Option<PathBuf>,
    /// Replace an existing file.
    pub force: bool,
}

/// Writes the pipeline file and returns the line that says what was written and what to run.
pub fn init(args: &Init) -> Result<String> {
    if args.file.exists() && !args.force {
        return Err(usage(format!(
            "{} already exists; pass --force to replace it, or --file OTHER.yaml to write another",
            args.file.display()
        )));
    }
    let classes = check_data(&args.data)?;
    // Where scripts/setup.sh puts each backbone's weights in its .cache.
    let setup = match args.backbone {
        Backbone::Vgg16 => SETUP_SOURCE.to_string(),
        other => format!("models/{other}.pth"),
    };
    let weights = match &args.weights {
        Some(w) => {
            paths::file("--weights", w, &[], &format!("the weights of {} (e.g. the set-up's {setup})", args.backbone))?;
            w.clone()
        }
        None => sd_runtime::find_in_cache(Path::new(&setup)).ok_or_else(|| {
            usage(format!(
                "the set-up's {setup} is not found where the binaries look for .cache (run scripts/setup.sh in \
                 the checkout, set SMALLDATA_CACHE to its .cache folder, or pass --weights FILE)"
            ))
        })?,
    };
    let dir = match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (data, weights, backbone) = (relative_to(&args.data, &dir)?, absolute(&weights)?, args.backbone.to_string());
    let mut values = vec![("data", data), ("backbone", backbone), ("weights", weights)];
    if args.backbone != Backbone::Vgg16 {
        // The backbone's own input; the VGG16 recipe's params are its already.
        let input = args.backbone.image_input();
        values.push(("size", input.size.width.to_string()));
        values.push(("preprocess", input.preprocess.to_string()));
        values.push(("resize", input.resize.to_string()));
    }
    let text = render(&values.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())?;
    sd_data::artifact::write_bytes(&args.file, text.as_bytes())
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    let file = match args.file == Path::new(crate::cli::DEFAULT_FILE) {
        true => String::new(),
        false => format!(" --file {}", args.file.display()),
    };
    Ok(format!(
        "wrote {} for {} on {} ({}: {}); next: pipeline{file} run (pipeline{file} run --dry-run lists the stages first)",
        args.file.display(),
        args.data.display(),
        args.backbone,
        sd_cli::count(classes.len(), "class"),
        classes.join(", ")
    ))
}

/// The recipe with `values` in place of its params' values (plain, `size: 150`, or in a
/// declaration, `size: {value: 150, type: int}`), each line otherwise as it was; each value is
/// checked against its param's type.
pub fn render(values: &[(&str, &str)]) -> Result<String> {
    let recipe = Pipeline::parse(Path::new("pipeline.yaml"), RECIPE).context("the built-in recipe")?;
    let mut lines: Vec<String> = RECIPE.lines().map(String::from).collect();
    for (name, value) in values {
        let param = recipe.params.get(*name).with_context(|| format!("the recipe has no param `{name}`"))?;
        param.kind.check(value).map_err(|e| usage(format!("{name}: {e}")))?;
        let line = &mut lines[param.loc.line - 1];
        let after_key = param.loc.col - 1 + name.len() + 1;
        let (start, end) = match line[after_key..].trim_start().starts_with('{') {
            // `{value: X, ...}`: X runs to the next `,` or `}`.
            true => {
                let start = after_key + line[after_key..].find("value:").context("no `value:`")? + "value:".len();
                (start, start + line[start..].find([',', '}']).context("an unclosed `{`")?)
            }
            // `X  # comment`: X runs to the comment or the end of the line.
            false => (after_key, line[after_key..].find(" #").map_or(line.len(), |i| after_key + i)),
        };
        anyhow::ensure!(line[start..end].trim() == param.value, "the recipe's param `{name}` is not where it was read");
        // A comment after the value stays in its column where the new value leaves room.
        let mut new = format!(" {}", quote(value));
        if line[end..].starts_with(" #") {
            new = format!("{new:<width$}", width = end - start);
        }
        line.replace_range(start..end, &new);
    }
    let header = "# Written by `pipeline init` from smalldata's recipe (its pipeline.yaml): `data` is your data,\n\
                  # `weights` the set-up's. Change a param here, or for one run with --set NAME=VALUE.\n";
    Ok(format!("{header}{}\n", lines.join("\n")))
}

/// A YAML scalar for `value`: as it is when plain YAML reads it back unchanged, else single-quoted.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+~".contains(c))
        && !value.starts_with(['-', '~'])
        && !matches!(value, "true" | "false" | "null" | "yes" | "no");
    if plain { value.to_string() } else { format!("'{}'", value.replace('\'', "''")) }
}

/// The data folder: class folders of images (the recipe's `split` stage splits them), or a tree
/// already split into `train/` and `validation/` with the same class folders. Its class names.
fn check_data(data: &Path) -> Result<Vec<String>> {
    let layouts = "DIR/<class>/<image>, or DIR/train/<class>/<image> and DIR/validation/<class>/<image>";
    paths::folder("--data", data, &[], &format!("the folder of your images: {layouts}"))?;
    let scan = |dir: &Path| sd_data::Dataset::scan(dir).map_err(|e| usage(e.to_string()));
    let classes = if paths::is_split_root(data) {
        let (train, validation) = (scan(&data.join("train"))?, scan(&data.join("validation"))?);
        let source = data.join("train").display().to_string();
        validation.expect_classes(&train.classes, &source).map_err(|e| usage(e.to_string()))?;
        train.classes
    } else if paths::holds_class_folders(data) {
        scan(data)?.classes
    } else {
        return Err(usage(format!(
            "--data {} holds no images in class folders; --data takes {layouts}",
            data.display()
        )));
    };
    let names: Vec<String> = classes.names().to_vec();
    if names.len() < 2 {
        return Err(usage(format!("--data {} has one class folder; a classifier needs at least two", data.display())));
    }
    Ok(names)
}

/// `path` as the pipeline in `dir` sees it: relative paths stay relative when `dir` is the
/// current folder, else they become absolute.
fn relative_to(path: &Path, dir: &Path) -> Result<String> {
    if path.is_relative() && dir == Path::new(".") {
        return Ok(path.to_string_lossy().trim_end_matches('/').to_string());
    }
    absolute(path)
}

fn absolute(path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(abs.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_with_other_values_parses_back_to_them() {
        let values = [("data", "/home/me/my photos"), ("weights", "/opt/vgg16.onnx"), ("size", "224")];
        let text = render(&values).unwrap();
        let p = Pipeline::parse(Path::new("pipeline.yaml"), &text).unwrap();
        assert_eq!(p.params["data"].value, "/home/me/my photos");
        assert_eq!(p.params["weights"].value, "/opt/vgg16.onnx");
        assert_eq!(p.params["size"].value, "224");
        let recipe = Pipeline::parse(Path::new("pipeline.yaml"), RECIPE).unwrap();
        assert_eq!(p.stages.len(), recipe.stages.len());
        let prepare = &p.stages[p.stage_index("prepare-model").unwrap()];
        assert!(prepare.deps.iter().any(|d| d.path == Path::new("/opt/vgg16.onnx")), "{:?}", prepare.deps);
        // The other params, their types and the comments are kept.
        assert_eq!(p.params["batch_size"].value, recipe.params["batch_size"].value);
        assert_eq!(p.params["size"].kind, crate::typed::ParamType::Int);
        assert!(text.contains("  data: '/home/me/my photos'"), "{text}");
        assert!(text.contains("  size: {value: 224, type: int}"), "{text}");
        // A value its type refuses is a usage error.
        assert!(render(&[("size", "big")]).unwrap_err().is::<sd_cli::UsageError>());
    }

    #[test]
    fn quoting_keeps_plain_paths_plain() {
        assert_eq!(quote("data/photos"), "data/photos");
        assert_eq!((quote("a b"), quote("it's"), quote("true")), ("'a b'".into(), "'it''s'".into(), "'true'".into()));
    }

    #[test]
    fn data_is_class_folders_or_a_split_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |files: &[&str]| {
            for f in files {
                std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
                std::fs::write(d.join(f), b"x").unwrap();
            }
        };
        write(&["flat/cats/1.jpg", "flat/dogs/1.jpg", "split/train/a/1.jpg", "split/train/b/1.jpg"]);
        assert_eq!(check_data(&d.join("flat")).unwrap(), ["cats", "dogs"]);
        assert!(check_data(&d.join("split")).unwrap_err().to_string().contains("validation"));
        write(&["split/validation/a/1.jpg", "split/validation/b/1.jpg"]);
        assert_eq!(check_data(&d.join("split")).unwrap(), ["a", "b"]);
        let e = check_data(&d.join("flat/cats")).unwrap_err();
        assert!(e.is::<sd_cli::UsageError>());
        assert!(e.to_string().contains("holds no images in class folders"), "{e}");
        let file = d.join("flat/cats/1.jpg");
        let args = Init { file, data: d.join("flat"), backbone: Backbone::Vgg16, weights: None, force: false };
        let e = init(&args).unwrap_err();
        assert!(e.to_string().contains("already exists; pass --force"), "{e}");
    }
}
