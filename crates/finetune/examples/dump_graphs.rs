//! Writes block 5's graphs for 150x150 VGG16 to a folder, for inspection (Netron) or profiling:
//! `cargo run --release -p sd-finetune --example dump_graphs -- OUT_DIR`.

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "block5-graphs".into()));
    let shape = sd_finetune::graphs::Block5Shape { channels: [512; 4], height: 9, width: 9 };
    sd_onnx::save(&sd_finetune::graphs::forward(&shape, false), out.join("forward.onnx"))?;
    sd_onnx::save(&sd_finetune::graphs::forward(&shape, true), out.join("forward_train.onnx"))?;
    sd_onnx::save(&sd_finetune::graphs::backward(&shape), out.join("backward.onnx"))?;
    Ok(())
}
