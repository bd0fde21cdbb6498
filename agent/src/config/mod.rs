//! The configuration file: typed model, YAML parsing with located errors, JSON Schema.

mod api_sources;
mod document;
mod drops;
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
mod selector;
mod suggest;
mod walk;
mod yaml;

pub use api_sources::dns_subdomain;
pub use drops::{parse_size, Drops, FlowLog, DEFAULT_SAMPLES_PER_SECOND, MAX_SAMPLES_PER_SECOND};
pub use fields::{interface_name, shown};
pub use model::*;
pub use parse::{item_positions, load, parse, read, ConfigError, ConfigErrors, MAX_CONFIG_BYTES};
pub use schema::json_schema;
pub use selector::parse as parse_selector;
