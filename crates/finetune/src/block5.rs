//! Block 5 at run time: its weights (as `prepare-model` writes them, `sd_data::layout::model`),
//! the three ONNX Runtime sessions built from [`crate::graphs`], and its parameters as
//! `sd-train`'s optimisers see them, so the block and the head move by exactly the same rule.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array4, ArrayD, ArrayView4, ArrayViewD, CowArray, Ix1, Ix4, IxDyn};
use sd_data::layout::model::WeightFiles;
use sd_runtime::{Session, SessionConfig};
use sd_train::optim::Param;

use crate::conv_layout::{ConvLayout, hwoi, oihw};
use crate::graphs::{self, Block5Shape};

/// One 3x3 convolution's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// HWOI `[3, 3, Cout, Cin]`, taps outermost: the backward graph writes the kernel gradient
    /// in this layout without an interleaving copy (one `[Cout, Cin]` GEMM result per tap), and
    /// kernel and gradient meet the optimiser element for element. Files and ONNX graphs hold
    /// OIHW ([`oihw`], [`hwoi`]).
    pub kernel: Array4<f32>,
    /// `[Cout]`.
    pub bias: Array1<f32>,
}

/// What [`Conv::kernel`]'s layout adds to a checkpoint's fingerprint: a checkpoint written with
/// OIHW kernels is another run's, never read as HWOI.
pub const KERNEL_LAYOUT: &str = "HWOI";

/// Block 5's three convolutions (also used for their gradients and optimiser slots).
#[derive(Debug, Clone, PartialEq)]
pub struct Block5Weights {
    pub convs: [Conv; 3],
}

/// Kernel then bias of each convolution.
impl sd_train::checkpoint::Parameters for Block5Weights {
    fn tensors(&self) -> Vec<&[f32]> {
        let standard = "standard layout";
        self.convs
            .iter()
            .flat_map(|c| [c.kernel.as_slice().expect(standard), c.bias.as_slice().expect(standard)])
            .collect()
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let standard = "standard layout";
        self.convs
            .iter_mut()
            .flat_map(|c| [c.kernel.as_slice_mut().expect(standard), c.bias.as_slice_mut().expect(standard)])
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Npy(#[from] sd_data::npy::NpyError),
    #[error("{path}: {reason}")]
    Shape { path: PathBuf, reason: String },
}

impl Block5Weights {
    /// Reads `block5/block5_conv{1,2,3}_{kernel,bias}.npy` under `dir` and checks that they
    /// chain (each layer's input channels are the previous one's outputs).
    pub fn load(dir: &Path) -> Result<Block5Weights, WeightsError> {
        let mut convs = Vec::with_capacity(3);
        let mut cin: Option<usize> = None;
        for i in 0..3 {
            let files = WeightFiles::block5(i);
            let (kp, bp) = (dir.join(files.kernel), dir.join(files.bias));
            let bad = |path: &Path, reason: String| WeightsError::Shape { path: path.into(), reason };
            let kernel = sd_data::npy::read::<f32>(&kp)?;
            let kernel = match kernel.into_dimensionality::<Ix4>() {
                Ok(k) if k.shape()[2..] == [3, 3] && cin.is_none_or(|c| c == k.shape()[1]) => k,
                Ok(k) => {
                    return Err(bad(
                        &kp,
                        format!(
                            "kernel shape {:?}, expected [Cout, {}, 3, 3] (OIHW)",
                            k.shape(),
                            cin.map_or("Cin".to_string(), |c| c.to_string())
                        ),
                    ));
                }
                Err(_) => return Err(bad(&kp, "expected a 4-d kernel [Cout, Cin, 3, 3] (OIHW)".into())),
            };
            let cout = kernel.shape()[0];
            let bias = sd_data::npy::read::<f32>(&bp)?
                .into_dimensionality::<Ix1>()
                .ok()
                .filter(|b| b.len() == cout)
                .ok_or_else(|| bad(&bp, format!("expected a bias of shape [{cout}]")))?;
            cin = Some(cout);
            convs.push(Conv { kernel: hwoi(kernel.view()), bias });
        }
        Ok(Block5Weights { convs: convs.try_into().expect("three layers") })
    }

    /// Writes the weights under `dir` in the layout [`Block5Weights::load`] reads.
    pub fn save(&self, dir: &Path) -> Result<(), sd_data::npy::NpyError> {
        for (i, c) in self.convs.iter().enumerate() {
            let files = WeightFiles::block5(i);
            sd_data::npy::write(dir.join(files.kernel), &oihw(c.kernel.view()))?;
            sd_data::npy::write(dir.join(files.bias), &c.bias)?;
        }
        Ok(())
    }

    /// Zeros shaped like `self`.
    pub fn zeros_like(&self) -> Block5Weights {
        Block5Weights {
            convs: self
                .convs
                .clone()
                .map(|c| Conv { kernel: Array4::zeros(c.kernel.raw_dim()), bias: Array1::zeros(c.bias.len()) }),
        }
    }

    /// Channels of the input and of each layer's output.
    pub fn channels(&self) -> [usize; 4] {
        let k = |i: usize| self.convs[i].kernel.shape()[2];
        [self.convs[0].kernel.shape()[3], k(0), k(1), k(2)]
    }

    /// The block's shape for a `height` x `width` input.
    pub fn shape(&self, height: usize, width: usize) -> Block5Shape {
        Block5Shape { channels: self.channels(), height, width }
    }

    /// The block's shape for VGG16 images of `size`: `block4_pool` is 1/16 of them (four 2x2
    /// pools, floored).
    pub fn shape_for(&self, size: sd_data::image::ImageSize) -> Block5Shape {
        self.shape(size.height as usize / 16, size.width as usize / 16)
    }

    /// Sizes of every tensor, kernel then bias per layer (the optimiser's order).
    pub fn sizes(&self) -> Vec<usize> {
        self.convs.iter().flat_map(|c| [c.kernel.len(), c.bias.len()]).collect()
    }

    /// Every tensor with its gradient in `grads`, kernel then bias per layer.
    pub fn params<'a>(&'a mut self, grads: &'a Block5Weights) -> impl Iterator<Item = Param<'a, f32>> {
        self.convs.iter_mut().zip(&grads.convs).flat_map(|(c, g)| {
            [
                Param {
                    value: c.kernel.as_slice_mut().expect("standard layout"),
                    grad: g.kernel.as_slice().expect("standard layout"),
                    kernel: true,
                },
                Param {
                    value: c.bias.as_slice_mut().expect("standard layout"),
                    grad: g.bias.as_slice().expect("standard layout"),
                    kernel: false,
                },
            ]
        })
    }

    /// The weights as ONNX initializers, kernels OIHW (for the exported classifier).
    pub fn initializers(&self) -> Vec<sd_onnx::TensorProto> {
        self.convs
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                [
                    sd_onnx::tensor_from_array(&graphs::weight_name(i, false), &oihw(c.kernel.view()).into_dyn()),
                    sd_onnx::tensor_from_array(&graphs::weight_name(i, true), &c.bias.clone().into_dyn()),
                ]
            })
            .collect()
    }
}

/// What the training forward pass keeps for the backward pass.
pub struct Trace {
    /// `block4_pool`, NHWC.
    input: Array4<f32>,
    /// The three ReLU outputs, NHWC.
    activations: Vec<ArrayD<f32>>,
}

/// A graph input: borrowed, or made for the call (a kernel in the convolution layout).
type Input<'a> = CowArray<'a, f32, IxDyn>;

/// Block 5's forward (inference and training) and backward passes on ONNX Runtime.
pub struct Block5 {
    shape: Block5Shape,
    layout: ConvLayout,
    forward: Session,
    train: Session,
    backward: Session,
}

impl Block5 {
    /// Builds the graphs for `shape` and their sessions, in the fastest convolution layout that
    /// `config`'s device runs correctly ([`ConvLayout::detect`]).
    pub fn new(shape: Block5Shape, config: &SessionConfig) -> Result<Block5, sd_runtime::RuntimeError> {
        let layout = Some(ConvLayout::detect(config)).filter(|l| l.fits(&shape.channels)).unwrap_or(ConvLayout::Onnx);
        Block5::with_layout(shape, config, layout)
    }

    /// Builds the graphs for `shape` in `layout`.
    pub fn with_layout(
        shape: Block5Shape,
        config: &SessionConfig,
        layout: ConvLayout,
    ) -> Result<Block5, sd_runtime::RuntimeError> {
        use prost::Message;
        let session = |name: &str, m: sd_onnx::ModelProto| Session::from_bytes(name, &m.encode_to_vec(), config);
        Ok(Block5 {
            shape,
            layout,
            forward: session("block5 forward graph", graphs::forward(&shape, false, layout))?,
            train: session("block5 training forward graph", graphs::forward(&shape, true, layout))?,
            backward: session("block5 backward graph", graphs::backward(&shape, layout))?,
        })
    }

    pub fn shape(&self) -> &Block5Shape {
        &self.shape
    }

    pub fn layout(&self) -> ConvLayout {
        self.layout
    }

    /// Where the sessions run.
    pub fn device(&self) -> sd_runtime::Device {
        self.forward.device
    }

    /// The forward graphs' inputs: `x`, then each layer's kernel (in the layout) and bias.
    fn forward_inputs<'a>(&self, x: ArrayViewD<'a, f32>, w: &'a Block5Weights) -> Vec<(String, Input<'a>)> {
        let mut inputs = vec![(graphs::INPUT.to_string(), x.into())];
        for (i, c) in w.convs.iter().enumerate() {
            inputs.push((graphs::weight_name(i, false), self.layout.kernel(c.kernel.view()).into_dyn().into()));
            inputs.push((graphs::weight_name(i, true), c.bias.view().into_dyn().into()));
        }
        inputs
    }

    fn run(session: &mut Session, inputs: &[(String, Input<'_>)]) -> sd_runtime::Result<Vec<ArrayD<f32>>> {
        let refs: Vec<(&str, ArrayViewD<'_, f32>)> = inputs.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        session.run(&refs)
    }

    /// `block5_pool` (NHWC) of a batch of `block4_pool` maps (NHWC).
    pub fn forward(&mut self, x: ArrayView4<f32>, w: &Block5Weights) -> sd_runtime::Result<Array4<f32>> {
        let inputs = self.forward_inputs(x.into_dyn(), w);
        let mut out = Self::run(&mut self.forward, &inputs)?;
        Ok(into4(out.swap_remove(0)))
    }

    /// The forward pass keeping what [`Block5::backward`] needs.
    pub fn forward_train(&mut self, x: Array4<f32>, w: &Block5Weights) -> sd_runtime::Result<(Array4<f32>, Trace)> {
        let inputs = self.forward_inputs(x.view().into_dyn(), w);
        let mut out = Self::run(&mut self.train, &inputs)?;
        let activations = out.split_off(1);
        Ok((into4(out.swap_remove(0)), Trace { input: x, activations }))
    }

    /// Weight gradients from the gradient of the loss with respect to `block5_pool` (NHWC).
    pub fn backward(
        &mut self,
        trace: &Trace,
        w: &Block5Weights,
        d_output: ArrayView4<f32>,
    ) -> sd_runtime::Result<Block5Weights> {
        let mut inputs: Vec<(String, Input<'_>)> = vec![(graphs::INPUT.into(), trace.input.view().into_dyn().into())];
        inputs.extend(trace.activations.iter().enumerate().map(|(i, a)| (graphs::activation_name(i), a.view().into())));
        for (i, c) in w.convs.iter().enumerate().skip(1) {
            let kernel = self.layout.adjoint_kernel(c.kernel.view());
            inputs.push((graphs::adjoint_name(i), kernel.into_dyn().into()));
        }
        inputs.push((graphs::OUTPUT_GRAD.into(), d_output.into_dyn().into()));
        let out = Self::run(&mut self.backward, &inputs)?;
        let mut out = out.into_iter();
        let mut conv = |i: usize| Conv {
            // `[9, Cout, Cin]` in standard layout: the reshape to HWOI moves nothing.
            kernel: out
                .next()
                .expect("kernel gradient")
                .into_shape_with_order(hwoi_shape(self.shape.kernel(i)))
                .expect("HWOI kernel gradient"),
            bias: out.next().expect("bias gradient").into_dimensionality().expect("1-d bias gradient"),
        };
        Ok(Block5Weights { convs: [conv(0), conv(1), conv(2)] })
    }
}

/// `[O, I, H, W]` -> `[H, W, O, I]`.
fn hwoi_shape([o, i, h, w]: [usize; 4]) -> [usize; 4] {
    [h, w, o, i]
}

fn into4(a: ArrayD<f32>) -> Array4<f32> {
    a.into_dimensionality().expect("the graphs declare 4-d outputs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_hwoi_in_memory_and_oihw_on_disk() {
        let conv = |cin: usize, cout: usize| Conv {
            kernel: Array4::from_shape_fn((3, 3, cout, cin), |(h, w, o, i)| (o * 1000 + i * 100 + h * 10 + w) as f32),
            bias: Array1::from_shape_fn(cout, |o| o as f32),
        };
        let weights = Block5Weights { convs: [conv(2, 3), conv(3, 4), conv(4, 5)] };
        assert_eq!(weights.channels(), [2, 3, 4, 5]);
        let dir = tempfile::tempdir().unwrap();
        weights.save(dir.path()).unwrap();
        let file = sd_data::npy::read::<f32>(&dir.path().join(WeightFiles::block5(1).kernel)).unwrap();
        assert_eq!(file.shape(), [4, 3, 3, 3]);
        assert_eq!(file[[3, 2, 0, 1]], 3201.0); // OIHW: o 3, i 2, kh 0, kw 1
        assert_eq!(Block5Weights::load(dir.path()).unwrap(), weights);
        // The exported initializers are OIHW too.
        let kernel = &weights.initializers()[2];
        assert_eq!(kernel.dims, [4, 3, 3, 3]);
    }
}
