//! How the head reads a feature map `[h, w, C]`: Keras' `Flatten` (the recipe: every position's
//! features, `h·w·C` values) or `GlobalAveragePooling2D` (the mean over positions, `C` values).
//!
//! Flatten keeps where things are; the average keeps what is there, with 49x fewer weights in
//! the first dense layer at 224x224. On flowers (5 classes, subjects anywhere in the frame) the
//! average is 3 points better (crates/head/README.md); on Dogs vs Cats the recipe's Flatten stays.
//! Pooling has no parameters: `train-head` pools each split once, `finetune` pools block 5's
//! output every step and sends the gradient back through [`Pool::backward`].

use ndarray::{Array2, ArrayView2, Axis, CowArray, Ix2};
use serde::{Deserialize, Serialize};

use super::model::Real;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Keras `Flatten`: h·w·C values (the recipe).
    #[default]
    Flatten,
    /// Keras `GlobalAveragePooling2D`: the mean of each channel over the map, C values.
    Avg,
}

impl Pool {
    pub fn is_flatten(&self) -> bool {
        *self == Pool::Flatten
    }

    /// Values per sample that the first dense layer reads, for maps of per-sample `shape`.
    pub fn width(self, shape: &[usize]) -> usize {
        match self {
            Pool::Flatten => shape.iter().product(),
            Pool::Avg => shape.last().copied().unwrap_or(0),
        }
    }

    /// Positions in a map of per-sample `shape` (`[h, w, C]`: h·w).
    fn positions(shape: &[usize]) -> usize {
        shape[..shape.len().saturating_sub(1)].iter().product()
    }

    /// Why maps of per-sample `shape` cannot be pooled this way, if they cannot.
    pub fn check(self, shape: &[usize]) -> Result<(), String> {
        match self {
            Pool::Avg if shape.len() != 3 => {
                Err(format!("average pooling needs feature maps [h, w, C], the features are {shape:?}"))
            }
            _ => Ok(()),
        }
    }

    /// The head's input `[n, width]` from flattened maps `[n, h·w·C]` (C order, NHWC).
    pub fn forward<'a, T: Real>(self, maps: ArrayView2<'a, T>, shape: &[usize]) -> CowArray<'a, T, Ix2> {
        match self {
            Pool::Flatten => maps.into(),
            Pool::Avg => {
                let (n, c, positions) = (maps.nrows(), self.width(shape), Pool::positions(shape));
                let cells = maps.into_shape_with_order((n, positions, c)).expect("rows of [h·w, C] maps");
                let scale = T::of(1.0 / positions as f64);
                (cells.sum_axis(Axis(1)) * scale).into()
            }
        }
    }

    /// The gradient at the flattened maps `[n, h·w·C]` from the gradient at the head's input.
    pub fn backward<T: Real>(self, d_input: Array2<T>, shape: &[usize]) -> Array2<T> {
        match self {
            Pool::Flatten => d_input,
            Pool::Avg => {
                let positions = Pool::positions(shape);
                let scale = T::of(1.0 / positions as f64);
                let (n, c) = d_input.dim();
                let spread = (d_input * scale).insert_axis(Axis(1));
                let maps = spread.broadcast((n, positions, c)).expect("one row per position").to_owned();
                maps.into_shape_with_order((n, positions * c)).expect("standard layout")
            }
        }
    }

    /// ONNX nodes (opset 13) from the NHWC maps `input` to the head's input `output` `[N, width]`.
    pub fn onnx_nodes(self, input: &str, output: &str) -> Vec<sd_onnx::NodeProto> {
        use sd_onnx::{attr_int, attr_ints, node};
        match self {
            Pool::Flatten => vec![node("Flatten", "flatten", &[input], &[output], vec![attr_int("axis", 1)])],
            Pool::Avg => vec![node(
                "ReduceMean",
                "global_average_pool",
                &[input],
                &[output],
                vec![attr_ints("axes", &[1, 2]), attr_int("keepdims", 0)],
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn average_pooling_means_each_channel_over_the_map() {
        // Two samples of 2x1 maps with 3 channels, flattened in C order (positions, then channels).
        let maps = array![[1.0, 2.0, 3.0, 3.0, 6.0, 9.0], [0.0, 0.0, 1.0, 2.0, 2.0, 1.0]];
        let pooled = Pool::Avg.forward(maps.view(), &[2, 1, 3]);
        assert_eq!(pooled, array![[2.0, 4.0, 6.0], [1.0, 1.0, 1.0]]);
        assert_eq!(Pool::Avg.width(&[2, 1, 3]), 3);
        assert_eq!(Pool::Flatten.forward(maps.view(), &[2, 1, 3]), maps);
        assert_eq!(Pool::Flatten.width(&[2, 1, 3]), 6);
    }

    #[test]
    fn average_pooling_gradient_matches_finite_differences() {
        let shape = [2, 2, 3];
        let maps = Array2::from_shape_fn((2, 12), |(i, j)| ((i * 12 + j) as f64 * 0.37).sin());
        let weights = Array2::from_shape_fn((2, 3), |(i, j)| (i as f64 - j as f64 * 0.5).cos());
        // loss = Σ pooled ⊙ weights, so d loss / d pooled = weights.
        let loss = |m: &Array2<f64>| (&Pool::Avg.forward(m.view(), &shape) * &weights).sum();
        let grad = Pool::Avg.backward(weights.clone(), &shape);
        let h = 1e-6;
        for i in 0..2 {
            for j in 0..12 {
                let (mut up, mut down) = (maps.clone(), maps.clone());
                up[[i, j]] += h;
                down[[i, j]] -= h;
                let numeric = (loss(&up) - loss(&down)) / (2.0 * h);
                assert!((numeric - grad[[i, j]]).abs() < 1e-8, "[{i}, {j}]: {numeric} vs {}", grad[[i, j]]);
            }
        }
    }

    #[test]
    fn average_pooling_needs_maps() {
        assert!(Pool::Avg.check(&[25088]).unwrap_err().contains("[h, w, C]"));
        assert!(Pool::Avg.check(&[7, 7, 512]).is_ok() && Pool::Flatten.check(&[25088]).is_ok());
    }
}
