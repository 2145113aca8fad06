//! What a classifier ONNX says about itself, in its `metadata_props`: how its input was made
//! (size, resize filter, preprocessing) and what its output means (the class map). `finetune`
//! writes it; `predict` reads it so that the defaults match training.

use std::collections::BTreeMap;

use super::Classes;
use super::model::Backbone;
use crate::Preprocess;
use crate::image::{ImageSize, ResizeFilter, ResizeMode};

/// The classifier's file in `finetune`'s output folder.
pub const FILE: &str = "classifier.onnx";

pub const PREPROCESS: &str = "smalldata.preprocess";
pub const SIZE: &str = "smalldata.size";
pub const RESIZE_FILTER: &str = "smalldata.resize_filter";
/// squash or crop (`sd_data::image::ResizeMode`).
pub const RESIZE: &str = "smalldata.resize";
/// The network under the head (`sd_data::layout::model::Backbone`).
pub const BACKBONE: &str = "smalldata.backbone";
/// JSON class-name -> label map, in label order.
pub const CLASSES: &str = "smalldata.classes";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifierMeta {
    pub preprocess: Option<Preprocess>,
    pub size: Option<ImageSize>,
    pub resize_filter: Option<ResizeFilter>,
    pub classes: Option<Classes>,
    pub resize: Option<ResizeMode>,
    pub backbone: Option<Backbone>,
}

impl ClassifierMeta {
    /// As `metadata_props` entries (key, value), in a fixed order.
    pub fn props(&self) -> Vec<(String, String)> {
        let mut props = Vec::new();
        props.extend(self.preprocess.map(|p| (PREPROCESS.to_string(), p.to_string())));
        props.extend(self.size.map(|s| (SIZE.to_string(), s.to_string())));
        props.extend(self.resize_filter.map(|f| (RESIZE_FILTER.to_string(), f.to_string())));
        props.extend(self.resize.map(|r| (RESIZE.to_string(), r.to_string())));
        props.extend(self.backbone.map(|b| (BACKBONE.to_string(), b.to_string())));
        props.extend(
            self.classes.as_ref().map(|c| (CLASSES.to_string(), serde_json::to_string(c).expect("a string map"))),
        );
        props
    }

    /// Reads the entries from a model's custom metadata (unknown keys are ignored).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<ClassifierMeta, String> {
        let get = |k: &str| map.get(k).map(String::as_str);
        let bad = |k: &str, e: String| format!("metadata '{k}': {e}");
        Ok(ClassifierMeta {
            preprocess: get(PREPROCESS).map(str::parse).transpose().map_err(|e| bad(PREPROCESS, e))?,
            size: get(SIZE).map(str::parse).transpose().map_err(|e| bad(SIZE, e))?,
            resize_filter: get(RESIZE_FILTER).map(str::parse).transpose().map_err(|e| bad(RESIZE_FILTER, e))?,
            classes: get(CLASSES).map(serde_json::from_str).transpose().map_err(|e| bad(CLASSES, e.to_string()))?,
            resize: get(RESIZE).map(str::parse).transpose().map_err(|e| bad(RESIZE, e))?,
            backbone: get(BACKBONE).map(str::parse).transpose().map_err(|e| bad(BACKBONE, e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_props() {
        let meta = ClassifierMeta {
            preprocess: Some(Preprocess::Rescale),
            size: Some(ImageSize { width: 64, height: 48 }),
            resize_filter: Some(ResizeFilter::Nearest),
            classes: Some(Classes::new(vec!["cats".into(), "dogs".into()])),
            resize: Some(ResizeMode::Crop),
            backbone: Some(Backbone::EfficientnetLite0),
        };
        let map = meta.props().into_iter().collect();
        assert_eq!(ClassifierMeta::from_map(&map).unwrap(), meta);
        assert_eq!(ClassifierMeta::from_map(&BTreeMap::new()).unwrap(), ClassifierMeta::default());
        let bad = BTreeMap::from([(SIZE.to_string(), "tiny".to_string())]);
        assert!(ClassifierMeta::from_map(&bad).unwrap_err().contains("smalldata.size"));
    }
}
