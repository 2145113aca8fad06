//! A naive double-precision block 5 (loops, no ONNX), the yardstick for the graphs: its forward
//! pass is checked against ONNX Runtime's, and finite differences of it (accurate in f64)
//! against the hand-derived backward graph.

use ndarray::{Array1, Array4};

use crate::block5::Block5Weights;

/// Block 5's weights in f64, in `Block5Weights`' layouts.
#[derive(Clone)]
pub struct RefWeights {
    pub kernels: Vec<Array4<f64>>,
    pub biases: Vec<Array1<f64>>,
}

impl RefWeights {
    pub fn of(w: &Block5Weights) -> RefWeights {
        RefWeights {
            kernels: w.convs.iter().map(|c| c.kernel.mapv(f64::from)).collect(),
            biases: w.convs.iter().map(|c| c.bias.mapv(f64::from)).collect(),
        }
    }
}

/// 3x3 convolution, stride 1, zero padding 1, NCHW input, HWOI kernel (as `Block5Weights`').
fn conv(x: &Array4<f64>, k: &Array4<f64>, b: &Array1<f64>) -> Array4<f64> {
    let (n, cin, h, w) = x.dim();
    let cout = k.shape()[2];
    Array4::from_shape_fn((n, cout, h, w), |(s, o, y, xx)| {
        let mut acc = b[o];
        for i in 0..cin {
            for kh in 0..3 {
                for kw in 0..3 {
                    let (yy, xw) = (y as isize + kh as isize - 1, xx as isize + kw as isize - 1);
                    if yy >= 0 && xw >= 0 && (yy as usize) < h && (xw as usize) < w {
                        acc += k[[kh, kw, o, i]] * x[[s, i, yy as usize, xw as usize]];
                    }
                }
            }
        }
        acc
    })
}

/// Block 5 on `block4_pool` (NHWC); returns `block5_pool` (NHWC).
pub fn block5(x_nhwc: &Array4<f64>, w: &RefWeights) -> Array4<f64> {
    let mut a = x_nhwc.view().permuted_axes([0, 3, 1, 2]).to_owned();
    for (k, b) in w.kernels.iter().zip(&w.biases) {
        a = conv(&a, k, b).mapv(|v| v.max(0.0));
    }
    let (n, c, h, wd) = a.dim();
    Array4::from_shape_fn((n, h / 2, wd / 2, c), |(s, y, x, ch)| {
        let at = |dy, dx| a[[s, ch, 2 * y + dy, 2 * x + dx]];
        at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1))
    })
}
