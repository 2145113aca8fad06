//! How block 5's convolutions reach ONNX Runtime's kernels.
//!
//! Block 5's kernels change every step, so they are graph inputs, and ONNX Runtime's CPU provider
//! then runs `Conv` through im2col and a GEMM per image. For constant kernels it uses MLAS's NCHWc
//! convolutions instead (activations in blocks of 8 or 16 channels, kernels pre-arranged to
//! match), about 1.4x faster at block 5's sizes. Those operators (`com.microsoft.nchwc`
//! `ReorderInput`, `Conv`, `ReorderOutput`) take their kernel as an ordinary input too, so block
//! 5's graphs can call them directly with kernels this module arranges on the host each step. The
//! block size belongs to the CPU's MLAS build (16 with AVX-512, 8 with AVX2): [`ConvLayout::detect`]
//! asks ONNX Runtime by running one small convolution both ways, and falls back to plain `Conv`
//! (always right, every execution provider) when no NCHWc layout reproduces it.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;
use sd_onnx::ModelProto;
use sd_runtime::{Session, SessionConfig};

use crate::graphs;

/// ONNX Runtime's domain of the NCHWc operators.
pub const NCHWC_DOMAIN: &str = "com.microsoft.nchwc";

/// The layout of block 5's convolutions and of the kernels fed to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvLayout {
    /// ONNX `Conv` on OIHW kernels.
    Onnx,
    /// ONNX Runtime's CPU NCHWc `Conv` on kernels arranged `[O/b, I/b, kh, kw, b(in), b(out)]`
    /// (still declared `[O, I, kh, kw]`).
    Nchwc { block: usize },
}

impl ConvLayout {
    /// The fastest layout that reproduces ONNX `Conv` in sessions made with `config`.
    pub fn detect(config: &SessionConfig) -> ConvLayout {
        match Self::probe(config) {
            Ok(layout) => layout,
            Err(e) => {
                tracing::debug!("NCHWc convolutions unavailable ({e}); block 5 runs ONNX Conv");
                ConvLayout::Onnx
            }
        }
    }

    fn probe(config: &SessionConfig) -> Result<ConvLayout, sd_runtime::RuntimeError> {
        use prost::Message;
        const CHANNELS: usize = 32; // a multiple of every block size, so a wrong one shows
        const SIDE: usize = 5;
        let run = |layout: ConvLayout, x: &Array4<f32>, w: &Array4<f32>| {
            let model = graphs::single_conv(CHANNELS, SIDE, layout).encode_to_vec();
            let mut session = Session::from_bytes("convolution layout probe", &model, config)?;
            if session.device != sd_runtime::Device::Cpu {
                return Ok(None); // NCHWc is a CPU provider layout
            }
            let w = layout.kernel(w.view());
            let out = session.run(&[("x", x.view().into_dyn()), ("w", w.view().into_dyn())])?;
            Ok::<_, sd_runtime::RuntimeError>(out.into_iter().next())
        };
        // Small integers: every product and sum is exact, so the layouts must agree exactly.
        let x = Array4::from_shape_fn((1, SIDE, SIDE, CHANNELS), |(_, h, w, c)| ((c * 7 + h * 3 + w) % 5) as f32 - 2.0);
        let w = Array4::from_shape_fn((3, 3, CHANNELS, CHANNELS), |(h, w, o, i)| {
            ((o * 5 + i * 3 + h * 2 + w) % 7) as f32 - 3.0
        });
        let Some(want) = run(ConvLayout::Onnx, &x, &w)? else { return Ok(ConvLayout::Onnx) };
        for block in [16, 8] {
            let layout = ConvLayout::Nchwc { block };
            // A build without this layout fails to make the session: try the next one.
            if run(layout, &x, &w).ok().flatten().is_some_and(|got| got == want) {
                tracing::debug!(?layout, "block 5 runs NCHWc convolutions");
                return Ok(layout);
            }
        }
        Ok(ConvLayout::Onnx)
    }

    /// Whether the layout can run convolutions of `channels` in and out.
    pub fn fits(self, channels: &[usize]) -> bool {
        match self {
            ConvLayout::Onnx => true,
            ConvLayout::Nchwc { block } => channels.iter().all(|c| c % block == 0),
        }
    }

    /// An HWOI kernel ([`crate::block5::Conv::kernel`]) as this layout's convolutions take it.
    pub fn kernel(self, w: ArrayView4<'_, f32>) -> Array4<f32> {
        match self {
            ConvLayout::Onnx => oihw(w),
            ConvLayout::Nchwc { block } => arrange(w, block, false),
        }
    }

    /// The adjoint of an HWOI kernel, in OIHW terms `W*[i, o, kh, kw] = W[o, i, 2 - kh, 2 - kw]`
    /// (the kernel whose "same" convolution is the gradient of `W`'s with respect to its input),
    /// as this layout's convolutions take it.
    pub fn adjoint_kernel(self, w: ArrayView4<'_, f32>) -> Array4<f32> {
        match self {
            ConvLayout::Onnx => arrange(w, 1, true),
            ConvLayout::Nchwc { block } => arrange(w, block, true),
        }
    }

    /// A model around `graph`, importing the NCHWc domain when the layout uses it.
    pub fn model(self, graph: sd_onnx::GraphProto) -> ModelProto {
        let mut model = sd_onnx::model(graph, graphs::OPSET, "smalldata finetune");
        if let ConvLayout::Nchwc { .. } = self {
            model
                .opset_import
                .push(sd_onnx::OperatorSetIdProto { domain: Some(NCHWC_DOMAIN.into()), version: Some(1) });
        }
        model
    }
}

/// An OIHW kernel in HWOI (`[3, 3, Cout, Cin]`, how block 5 keeps its kernels).
pub fn hwoi(oihw: ArrayView4<'_, f32>) -> Array4<f32> {
    swap_taps_and_channels(oihw)
}

/// An HWOI kernel in OIHW (files, ONNX `Conv`).
pub fn oihw(hwoi: ArrayView4<'_, f32>) -> Array4<f32> {
    swap_taps_and_channels(hwoi)
}

/// `[a, b, c, d] -> [c, d, a, b]`: HWOI to OIHW and back.
fn swap_taps_and_channels(k: ArrayView4<'_, f32>) -> Array4<f32> {
    k.permuted_axes([2, 3, 0, 1]).as_standard_layout().into_owned()
}

/// HWOI `W` (or its adjoint) in blocks of `block` channels: `out[ob, ib, kh, kw, bi, bo] =
/// K[ob·block + bo, ib·block + bi, kh, kw]` where `K` is `W` or `W*` in OIHW; `block` 1 is plain
/// OIHW. On the host every step, so the output blocks are filled in parallel.
fn arrange(w: ArrayView4<'_, f32>, block: usize, adjoint: bool) -> Array4<f32> {
    let w = w.as_standard_layout();
    let (kh, kw, o, i) = w.dim();
    let src = w.as_slice().expect("standard layout");
    let (out_o, out_i) = if adjoint { (i, o) } else { (o, i) };
    assert!(out_o % block == 0 && out_i % block == 0, "channels are a multiple of the block");
    let taps = kh * kw;
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(out_i * taps * block).enumerate().for_each(|(ob, chunk)| {
        for (ib, tile) in chunk.chunks_mut(taps * block * block).enumerate() {
            for tap in 0..taps {
                // The tap K reads: rotated by 180 degrees for the adjoint.
                let from = if adjoint { taps - 1 - tap } else { tap };
                for bi in 0..block {
                    for bo in 0..block {
                        let (ko, ki) = (ob * block + bo, ib * block + bi);
                        let (wo, wi) = if adjoint { (ki, ko) } else { (ko, ki) };
                        tile[(tap * block + bi) * block + bo] = src[(from * o + wo) * i + wi];
                    }
                }
            }
        }
    });
    Array4::from_shape_vec((out_o, out_i, kh, kw), out).expect("same element count")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OIHW kernel whose values spell their indices.
    fn spelled(o: usize, i: usize) -> Array4<f32> {
        Array4::from_shape_fn((o, i, 3, 3), |(o, i, h, w)| (o * 1000 + i * 100 + h * 10 + w) as f32)
    }

    #[test]
    fn the_adjoint_swaps_channels_and_rotates_the_kernel() {
        let w = spelled(2, 3);
        let a = ConvLayout::Onnx.adjoint_kernel(hwoi(w.view()).view());
        assert_eq!(a.dim(), (3, 2, 3, 3));
        assert_eq!(a[[2, 1, 0, 1]], w[[1, 2, 2, 1]]);
        assert_eq!(a[[0, 0, 2, 0]], w[[0, 0, 0, 2]]);
        assert_eq!(ConvLayout::Onnx.adjoint_kernel(hwoi(a.view()).view()), w);
        // Blocked, the adjoint is the blocked layout of the plain adjoint.
        let w = hwoi(spelled(4, 6).view());
        let nchwc = ConvLayout::Nchwc { block: 2 };
        let plain_adjoint = hwoi(ConvLayout::Onnx.adjoint_kernel(w.view()).view());
        assert_eq!(nchwc.adjoint_kernel(w.view()), nchwc.kernel(plain_adjoint.view()));
    }

    #[test]
    fn nchwc_kernels_are_blocked_by_output_then_input_channels() {
        let w = spelled(4, 4);
        let k = ConvLayout::Nchwc { block: 2 }.kernel(hwoi(w.view()).view());
        let flat = k.as_slice().unwrap();
        // [O/2, I/2, kh, kw, i, o]: the first 4 values are (kh 0, kw 0) of i 0..2 x o 0..2.
        assert_eq!(&flat[..4], &[w[[0, 0, 0, 0]], w[[1, 0, 0, 0]], w[[0, 1, 0, 0]], w[[1, 1, 0, 0]]]);
        // The next block of 2x2 is kw 1.
        assert_eq!(flat[4], w[[0, 0, 0, 1]]);
        // The second input block comes after all 9 taps of the first.
        assert_eq!(flat[9 * 4], w[[0, 2, 0, 0]]);
        assert_eq!(ConvLayout::Onnx.kernel(hwoi(w.view()).view()), w);
        // An independent statement of the layout: a 6-d permutation of the kernel.
        let permuted = w.view().into_shape_with_order((2, 2, 2, 2, 3, 3)).unwrap().permuted_axes([0, 2, 4, 5, 3, 1]);
        assert_eq!(flat, permuted.iter().copied().collect::<Vec<_>>());
        assert!(ConvLayout::Nchwc { block: 16 }.fits(&[512, 512]));
        assert!(!ConvLayout::Nchwc { block: 16 }.fits(&[512, 40]));
    }
}
