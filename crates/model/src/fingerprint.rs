//! Checking conv weights against a fingerprint of the ImageNet VGG16 weights: per layer the
//! kernel shape, the first bias values and the sums of kernel and bias. Cheap, and enough to
//! tell the ImageNet weights from any other training or a mangled export.

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The Keras ImageNet VGG16 fingerprint (a copy of `shared/vgg16/imagenet-fingerprint.json`).
pub const KERAS_IMAGENET: &str = include_str!("../fingerprints/vgg16-keras-imagenet.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fingerprint {
    #[serde(default)]
    pub source: String,
    pub layers: Vec<LayerFingerprint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFingerprint {
    pub name: String,
    pub kernel_shape: Vec<usize>,
    pub bias_first4: Vec<f64>,
    pub kernel_sum: f64,
    pub bias_sum: f64,
}

impl LayerFingerprint {
    /// The fingerprint of one layer's weights (kernel OIHW, bias).
    pub fn of(name: &str, kernel: &ArrayD<f32>, bias: &ArrayD<f32>) -> Self {
        LayerFingerprint {
            name: name.into(),
            kernel_shape: kernel.shape().to_vec(),
            bias_first4: bias.iter().take(4).map(|&v| v as f64).collect(),
            kernel_sum: kernel.iter().map(|&v| v as f64).sum(),
            bias_sum: bias.iter().map(|&v| v as f64).sum(),
        }
    }

    /// What differs from `expected`, if anything. Sums are compared with a tolerance that
    /// covers summation order, not a retrained or rounded weight.
    pub fn differences(&self, expected: &LayerFingerprint) -> Vec<String> {
        let close = |a: f64, b: f64, scale: f64| (a - b).abs() <= 1e-6 * scale.max(1.0) + 1e-4;
        let mut diffs = Vec::new();
        if self.kernel_shape != expected.kernel_shape {
            diffs.push(format!("kernel shape {:?} vs {:?}", self.kernel_shape, expected.kernel_shape));
            return diffs;
        }
        let n = self.kernel_shape.iter().product::<usize>() as f64;
        if !close(self.kernel_sum, expected.kernel_sum, n) {
            diffs.push(format!("kernel sum {:.4} vs {:.4}", self.kernel_sum, expected.kernel_sum));
        }
        if !close(self.bias_sum, expected.bias_sum, self.kernel_shape[0] as f64) {
            diffs.push(format!("bias sum {:.4} vs {:.4}", self.bias_sum, expected.bias_sum));
        }
        if self.bias_first4.len() != expected.bias_first4.len()
            || self.bias_first4.iter().zip(&expected.bias_first4).any(|(a, b)| (a - b).abs() > 1e-6)
        {
            diffs.push(format!("first biases {:?} vs {:?}", self.bias_first4, expected.bias_first4));
        }
        diffs
    }
}

impl Fingerprint {
    pub fn parse(text: &str) -> Result<Fingerprint, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Compares `actual` layers by name; returns one line per differing or missing layer.
    pub fn compare(&self, actual: &[LayerFingerprint]) -> Vec<String> {
        let mut report = Vec::new();
        for expected in &self.layers {
            match actual.iter().find(|l| l.name == expected.name) {
                None => report.push(format!("{}: missing", expected.name)),
                Some(l) => {
                    let d = l.differences(expected);
                    if !d.is_empty() {
                        report.push(format!("{}: {}", expected.name, d.join("; ")));
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    #[test]
    fn embedded_fingerprint_has_all_13_layers() {
        let f = Fingerprint::parse(KERAS_IMAGENET).unwrap();
        assert_eq!(f.layers.len(), 13);
        assert_eq!(f.layers[0].kernel_shape, [64, 3, 3, 3]);
        assert_eq!(f.layers[12].name, "block5_conv3");
    }

    #[test]
    fn identical_weights_match_and_a_changed_weight_is_named() {
        let k = Array::from_shape_fn(IxDyn(&[2, 1, 3, 3]), |d| d[2] as f32 * 0.5 - d[3] as f32);
        let b = Array::from_shape_vec(IxDyn(&[2]), vec![0.25f32, -1.0]).unwrap();
        let reference =
            Fingerprint { source: String::new(), layers: vec![LayerFingerprint::of("block1_conv1", &k, &b)] };
        assert!(reference.compare(&[LayerFingerprint::of("block1_conv1", &k, &b)]).is_empty());

        let mut k2 = k.clone();
        k2[[1, 0, 2, 2]] += 0.01;
        let report = reference.compare(&[LayerFingerprint::of("block1_conv1", &k2, &b)]);
        assert_eq!(report.len(), 1);
        assert!(report[0].starts_with("block1_conv1: kernel sum"), "{report:?}");

        let report = reference.compare(&[]);
        assert_eq!(report, ["block1_conv1: missing"]);
    }
}
