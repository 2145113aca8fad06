//! What a classifier ONNX says about itself, in its `metadata_props`: how its input was made
//! (size, resize filter, preprocessing) and what its output means (the class map). `finetune`
//! writes it; `predict` reads it so that the defaults match training.

use std::collections::BTreeMap;

use sd_data::Preprocess;
use sd_data::image::{ImageSize, ResizeFilter};
use sd_onnx::proto::StringStringEntryProto;

pub const PREPROCESS: &str = "smalldata.preprocess";
pub const SIZE: &str = "smalldata.size";
pub const RESIZE_FILTER: &str = "smalldata.resize_filter";
/// JSON class-name -> label map; the output is the probability of label 1.
pub const CLASSES: &str = "smalldata.classes";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifierMeta {
    pub preprocess: Option<Preprocess>,
    pub size: Option<ImageSize>,
    pub resize_filter: Option<ResizeFilter>,
    pub classes: Option<BTreeMap<String, i64>>,
}

impl ClassifierMeta {
    /// As ONNX `metadata_props` entries.
    pub fn props(&self) -> Vec<StringStringEntryProto> {
        let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
        let mut props = Vec::new();
        props.extend(self.preprocess.map(|p| entry(PREPROCESS, p.to_string())));
        props.extend(self.size.map(|s| entry(SIZE, s.to_string())));
        props.extend(self.resize_filter.map(|f| entry(RESIZE_FILTER, f.to_string())));
        props.extend(self.classes.as_ref().map(|c| entry(CLASSES, serde_json::to_string(c).expect("a string map"))));
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
            classes: Some(BTreeMap::from([("cats".into(), 0), ("dogs".into(), 1)])),
        };
        let map = meta.props().into_iter().map(|e| (e.key.unwrap(), e.value.unwrap())).collect();
        assert_eq!(ClassifierMeta::from_map(&map).unwrap(), meta);
        assert_eq!(ClassifierMeta::from_map(&BTreeMap::new()).unwrap(), ClassifierMeta::default());
        let bad = BTreeMap::from([(SIZE.to_string(), "tiny".to_string())]);
        assert!(ClassifierMeta::from_map(&bad).unwrap_err().contains("smalldata.size"));
    }
}
