//! The class map every labelled artifact carries: class names by label, written as
//! `{"cats": 0, "dogs": 1}` (Keras' `class_indices`).

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Class names; the index of a name is its label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classes(Vec<String>);

impl Classes {
    pub fn new(names: Vec<String>) -> Classes {
        Classes(names)
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of label `label`.
    pub fn name(&self, label: u32) -> &str {
        &self.0[label as usize]
    }

    /// The label of `name`.
    pub fn label(&self, name: &str) -> Option<u32> {
        self.0.iter().position(|n| n == name).map(|i| i as u32)
    }
}

impl fmt::Display for Classes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// As a name -> label map, in label order.
impl Serialize for Classes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().enumerate().map(|(i, n)| (n, i as u32)))
    }
}

/// From a name -> label map whose labels are 0..N-1, each once.
impl<'de> Deserialize<'de> for Classes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Classes, D::Error> {
        let map = std::collections::BTreeMap::<String, i64>::deserialize(d)?;
        let mut names: Vec<Option<String>> = vec![None; map.len()];
        for (name, &label) in &map {
            match usize::try_from(label).ok().and_then(|l| names.get_mut(l)) {
                Some(slot @ None) => *slot = Some(name.clone()),
                _ => {
                    return Err(D::Error::custom(format!(
                        "class map {map:?}: labels must be 0..{} with each used once, like {{\"cats\": 0, \"dogs\": 1}}",
                        map.len().saturating_sub(1)
                    )));
                }
            }
        }
        Ok(Classes(names.into_iter().map(|n| n.expect("every label filled")).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_a_map_in_label_order_and_read_back() {
        let c = Classes::new(vec!["cats".into(), "dogs".into()]);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"cats":0,"dogs":1}"#);
        assert_eq!(serde_json::from_str::<Classes>(r#"{"dogs": 1, "cats": 0}"#).unwrap(), c);
        // Label order, not name order.
        let c = Classes::new(vec!["zebra".into(), "ant".into()]);
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"zebra":0,"ant":1}"#);
        assert_eq!(serde_json::from_str::<Classes>(r#"{"ant": 1, "zebra": 0}"#).unwrap(), c);
        assert_eq!((c.label("ant"), c.name(0)), (Some(1), "zebra"));
    }

    #[test]
    fn labels_must_be_0_to_n_minus_1_once_each() {
        for bad in [r#"{"a": 0, "b": 2}"#, r#"{"a": 1, "b": 1}"#, r#"{"a": -1}"#, r#"["a", "b"]"#] {
            assert!(serde_json::from_str::<Classes>(bad).is_err(), "{bad}");
        }
    }
}
