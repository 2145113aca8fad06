//! Seconds per epoch of the Keras recipe (batch 16, 8192 -> 256 -> 1, RMSprop) on real features:
//! FEATURES holds `train/` and `validation/` bottleneck folders (the default pipeline writes them
//! to artifacts/features).
//!
//!     cargo run --release -p sd-head --example speed -- [FEATURES] [epochs] [ftz]
use std::time::Instant;

use sd_head::{Preset, Split, TrainConfig, train};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(args.get(1).map(String::as_str).unwrap_or("artifacts/features"));
    let epochs = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    // `ftz`: flush denormals to zero, as TensorFlow does, to measure what that would be worth
    // (the library does not do it: changing MXCSR under LLVM is undefined behaviour).
    #[cfg(target_arch = "x86_64")]
    if args.iter().any(|a| a == "ftz") {
        #[allow(deprecated)]
        // SAFETY: only sets the FTZ and DAZ bits; a measurement, not library code.
        unsafe {
            use std::arch::x86_64::*;
            _mm_setcsr(_mm_getcsr() | 0x8040);
        }
    }
    let (tr, va) = (Split::load(dir.join("train")).unwrap(), Split::load(dir.join("validation")).unwrap());
    let cfg = TrainConfig { epochs, ..Preset::Keras.config() };
    let t = Instant::now();
    let cpu = cpu_seconds();
    let r = train(&cfg, &tr, &va, |_| {}).unwrap();
    println!(
        "{epochs} epochs: {:.3} s/epoch wall, {:.3} s/epoch cpu, final val_acc {:.4}",
        t.elapsed().as_secs_f64() / epochs as f64,
        (cpu_seconds() - cpu) / epochs as f64,
        r.history.last().unwrap().val_acc
    );
}

/// This process' user+system CPU time (Linux), less sensitive than wall time to other load.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
