//! The configuration file: typed model, YAML parsing with located errors, JSON Schema.

mod model;
mod parse;

pub use model::*;
pub use parse::{load, parse, ConfigError, ConfigErrors};
