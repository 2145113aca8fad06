//! What values a param may take, declared in `pipeline.yaml` beside its value:
//!
//! ```yaml
//! params:
//!   size: {value: 150, type: int}
//!   preprocess: {value: caffe, choices: [caffe, rescale]}
//!   data: data/sample                 # a plain value: any text
//! ```
//!
//! The value in the file, every `param_sets` value and every `--set` are checked against it, so
//! a mistyped value stops before any stage runs, with the file, line and column.

use std::fmt;

/// The values a param may take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ParamType {
    /// Any text (a param written as a plain value, or `type: str`).
    #[default]
    Any,
    /// A whole number, e.g. `150` or `-1`.
    Int,
    /// A number, e.g. `1e-3` or `0.5`.
    Float,
    /// `true` or `false`.
    Bool,
    /// One of the listed values.
    Choices(Vec<String>),
}

/// The names `type:` takes.
pub const TYPES: &str = "int, float, bool, str";

impl ParamType {
    /// The type called `name` in `type:`.
    pub fn named(name: &str) -> Option<ParamType> {
        Some(match name {
            "int" => ParamType::Int,
            "float" => ParamType::Float,
            "bool" => ParamType::Bool,
            "str" | "string" => ParamType::Any,
            _ => return None,
        })
    }

    /// `Err` says what `value` should have been.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let ok = match self {
            ParamType::Any => true,
            ParamType::Int => value.trim().parse::<i64>().is_ok(),
            ParamType::Float => value.trim().parse::<f64>().is_ok_and(f64::is_finite),
            ParamType::Bool => matches!(value.trim(), "true" | "false"),
            ParamType::Choices(c) => c.iter().any(|c| c == value),
        };
        if ok { Ok(()) } else { Err(format!("`{value}` is not {self}")) }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Any => f.write_str("any text"),
            ParamType::Int => f.write_str("a whole number (type: int)"),
            ParamType::Float => f.write_str("a number (type: float)"),
            ParamType::Bool => f.write_str("true or false (type: bool)"),
            ParamType::Choices(c) => write!(f, "one of {}", c.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_their_type() {
        assert!(ParamType::Int.check("150").is_ok() && ParamType::Int.check("-3").is_ok());
        assert_eq!(ParamType::Int.check("abc").unwrap_err(), "`abc` is not a whole number (type: int)");
        assert!(ParamType::Int.check("1.5").is_err());
        assert!(ParamType::Float.check("1e-3").is_ok() && ParamType::Float.check("nan").is_err());
        assert!(ParamType::Bool.check("true").is_ok() && ParamType::Bool.check("yes").is_err());
        let c = ParamType::Choices(vec!["caffe".into(), "rescale".into()]);
        assert!(c.check("caffe").is_ok());
        assert_eq!(c.check("Caffe").unwrap_err(), "`Caffe` is not one of caffe, rescale");
        assert!(ParamType::Any.check("anything at all").is_ok());
        assert_eq!(ParamType::named("string"), Some(ParamType::Any));
        assert_eq!(ParamType::named("integer"), None);
    }
}
