//! Rebuilds a fine-tuned `classifier.onnx` around another frozen part, from a `finetune` output
//! folder (its `block5/`, `head/`, `metrics.json` and the classifier's metadata), block 5 in
//! float: the same trained weights through the fp32 and the int8 frozen part, the paired accuracy
//! check of `benches/int8/finetune-accuracy.sh`.
//! `cargo run --release -p sd-finetune --example reexport -- FINETUNE_OUT FROZEN_BASE OUT.onnx`

use std::path::PathBuf;

use anyhow::Context;
use sd_data::layout::classifier::ClassifierMeta;
use sd_finetune::Block5Weights;
use sd_finetune::export::{CLASSIFIER, ClassifierInput};
use sd_train::summary::METRICS;

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [finetuned, frozen_base, out] = args.as_slice() else {
        anyhow::bail!("usage: reexport FINETUNE_OUT FROZEN_BASE OUT.onnx");
    };
    let original = sd_onnx::load(finetuned.join(CLASSIFIER))?;
    let meta = ClassifierMeta::from_map(&sd_onnx::metadata(&original)).map_err(anyhow::Error::msg)?;
    let size = meta.size.context("the classifier records no image size")?;
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(finetuned.join(METRICS))?)?;
    let input: ClassifierInput = serde_json::from_value(metrics["config"]["classifier_input"].clone())?;
    let weights = Block5Weights::load(finetuned)?;
    let shape = weights.shape_for(size);
    let (head, _) = sd_finetune::inputs::load_head(&finetuned.join(sd_finetune::outputs::HEAD_DIR))?;
    let classifier = sd_finetune::export::classifier(frozen_base, &weights, &shape, &head, &meta, input, None)?;
    sd_onnx::save(&classifier, out)?;
    Ok(())
}
