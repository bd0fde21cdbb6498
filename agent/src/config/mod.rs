//! The configuration file: typed model, YAML parsing with located errors, JSON Schema.

mod model;
mod parse;

pub use model::*;
pub use parse::{load, parse, ConfigError, ConfigErrors};

/// JSON Schema of the config file. (Placeholder: being written.)
pub fn json_schema() -> serde_json::Value {
    serde_json::json!({})
}
