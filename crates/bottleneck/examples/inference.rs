//! Inference alone: the conv base on preprocessed batches already in memory (no decoding),
//! through the same `sd_runtime::Model` the stage uses. Prints one JSON line.
//!
//!     cargo run --release -p sd-bottleneck --example inference -- MODEL [BATCH] [BATCHES] [SIZE]

use std::time::Instant;

use ndarray::Array4;
use sd_runtime::{Device, Model, SessionConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = args.first().map(String::as_str).unwrap_or("artifacts/model/conv_base.onnx");
    let batch: usize = args.get(1).map_or(Ok(16), |s| s.parse())?;
    let batches: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let size: usize = args.get(3).map_or(Ok(150), |s| s.parse())?;
    let device: Device = std::env::var("DEVICE").unwrap_or("auto".into()).parse().map_err(anyhow::Error::msg)?;

    let mut model = Model::load(model_path, &SessionConfig { device, threads: None })?;
    // Deterministic pseudo-pixels in the caffe range.
    let input = Array4::from_shape_fn((batch, size, size, 3), |(n, y, x, c)| {
        ((n * 31 + y * 7 + x * 3 + c) % 255) as f32 - 120.0
    });
    model.run(input.view().into_dyn())?; // warm-up: allocations, kernel selection
    let start = Instant::now();
    for _ in 0..batches {
        model.run(input.view().into_dyn())?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"images_per_second\": {:.3}, \"images\": {}, \"seconds\": {:.3}, \"batch\": {batch}, \"device\": \"{}\"}}",
        (batch * batches) as f64 / secs,
        batch * batches,
        secs,
        model.device
    );
    Ok(())
}
