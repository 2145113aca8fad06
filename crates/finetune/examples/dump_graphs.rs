//! Writes block 5's graphs for VGG16 at a given input size to a folder, for inspection (Netron)
//! or profiling (benches/finetune/profile.py), in the convolution layout `finetune` picks on this
//! machine (`auto`) or in plain ONNX `Conv` (`onnx`):
//! `cargo run --release -p sd-finetune --example dump_graphs -- OUT_DIR [SIZE, 150] [auto|onnx]`.

use sd_finetune::conv_layout::ConvLayout;
use sd_finetune::graphs::{self, Block5Shape};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "block5-graphs".into()));
    let size: usize = args.next().map_or(Ok(150), |s| s.parse())?;
    let layout = match args.next().as_deref() {
        None | Some("auto") => {
            ConvLayout::detect(&sd_runtime::SessionConfig { device: sd_runtime::Device::Cpu, threads: None })
        }
        Some("onnx") => ConvLayout::Onnx,
        Some(other) => anyhow::bail!("layout '{other}': expected auto or onnx"),
    };
    // block4_pool is 1/16 of the input (four 2x2 pools, floored).
    let shape = Block5Shape { channels: [512; 4], height: size / 16, width: size / 16 };
    sd_onnx::save(&graphs::forward(&shape, false, layout), out.join("forward.onnx"))?;
    sd_onnx::save(&graphs::forward(&shape, true, layout), out.join("forward_train.onnx"))?;
    sd_onnx::save(&graphs::backward(&shape, layout), out.join("backward.onnx"))?;
    println!("{layout:?}");
    Ok(())
}
