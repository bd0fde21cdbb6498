//! The configuration file: typed model, YAML parsing with located errors, JSON Schema.

mod document;
mod egress;
mod fields;
mod flow;
mod model;
mod naming;
mod networks;
mod parse;
mod quick_cidr;
mod rules;
mod schema;
mod suggest;
mod walk;
mod yaml;

pub use fields::{interface_name, shown};
pub use model::*;
pub use parse::{item_positions, load, parse, read, ConfigError, ConfigErrors, MAX_CONFIG_BYTES};
pub use schema::json_schema;
