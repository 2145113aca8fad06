//! Where a fine-tuning step's time goes, on random 150x150 batches through the real model:
//! `cargo run --release -p sd-finetune --example timing -- artifacts/model [batch] [reps] [threads] [fp32|int8]`.

use std::time::Instant;

use ndarray::Array4;
use rand::{Rng, SeedableRng};
use sd_finetune::block5::Block5;
use sd_finetune::inputs::PreparedModel;
use sd_runtime::{Device, Model, SessionConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map_or("artifacts/model", String::as_str));
    let batch: usize = args.get(2).map_or(Ok(16), |s| s.parse()).map_err(anyhow::Error::msg)?;
    let reps: usize = args.get(3).map_or(Ok(5), |s| s.parse()).map_err(anyhow::Error::msg)?;
    let threads = args.get(4).map(|s| s.parse()).transpose()?;
    let precision: sd_data::layout::model::Precision =
        args.get(5).map_or(Ok(Default::default()), |s| s.parse()).map_err(anyhow::Error::msg)?;
    let session = SessionConfig { device: Device::Auto, threads };
    let model = PreparedModel::load(&dir, precision)?;
    let size = sd_data::image::ImageSize::square(150);
    let shape = model.block5_shape(size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let images = Array4::from_shape_simple_fn((batch, 150, 150, 3), || rng.random_range(-120.0f32..130.0));
    let mut frozen = Model::load(&model.frozen_base, &session)?;
    let mut b5 = Block5::new(shape, &session)?;
    let w = model.weights.clone();

    let time = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        f()?; // warm-up
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        let per_image = t.elapsed().as_secs_f64() / (reps * batch) as f64 * 1e3;
        println!("{name:<28} {per_image:8.2} ms/image");
        Ok(per_image)
    };
    let x: Array4<f32> = frozen.run(images.view().into_dyn())?.into_dimensionality()?;
    println!("device {}, batch {batch}, {reps} reps, block4_pool {:?}", frozen.device, x.shape());
    let f = time("frozen part (blocks 1-4)", &mut || Ok(frozen.run(images.view().into_dyn()).map(drop)?))?;
    let i = time("block 5 forward (inference)", &mut || Ok(b5.forward(x.view(), &w).map(drop)?))?;
    let t = time("block 5 forward (training)", &mut || Ok(b5.forward_train(x.clone(), &w).map(drop)?))?;
    let (out, trace) = b5.forward_train(x.clone(), &w)?;
    let d = out.mapv(|v| v * 1e-3);
    let b = time("block 5 backward", &mut || Ok(b5.backward(&trace, &w, d.view()).map(drop)?))?;
    let layout = b5.layout();
    time(&format!("kernels to {layout:?}"), &mut || {
        for c in &w.convs {
            drop(layout.kernel(c.kernel.view()));
            drop(layout.adjoint_kernel(c.kernel.view()));
        }
        Ok(())
    })?;
    println!(
        "exact-mode step ~ {:.2} ms/image; cached-round step ~ {:.2} ms/image; validation ~ {i:.2} ms/image",
        f + t + b,
        t + b
    );
    Ok(())
}
