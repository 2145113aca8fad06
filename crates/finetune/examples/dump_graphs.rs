//! Writes block 5's graphs for VGG16 at a given input size to a folder, for inspection (Netron)
//! or profiling (benches/finetune/profile.py):
//! `cargo run --release -p sd-finetune --example dump_graphs -- OUT_DIR [SIZE, default 150]`.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "block5-graphs".into()));
    let size: usize = args.next().map_or(Ok(150), |s| s.parse())?;
    // block4_pool is 1/16 of the input (four 2x2 pools, floored).
    let side = size / 16;
    let shape = sd_finetune::graphs::Block5Shape { channels: [512; 4], height: side, width: side };
    sd_onnx::save(&sd_finetune::graphs::forward(&shape, false), out.join("forward.onnx"))?;
    sd_onnx::save(&sd_finetune::graphs::forward(&shape, true), out.join("forward_train.onnx"))?;
    sd_onnx::save(&sd_finetune::graphs::backward(&shape), out.join("backward.onnx"))?;
    Ok(())
}
