//! The configuration file: typed model, YAML parsing with located errors, JSON Schema.

mod api_sources;
mod document;
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
pub use model::*;
pub use parse::{load, parse, ConfigError, ConfigErrors};
pub use schema::json_schema;
pub use selector::parse as parse_selector;
