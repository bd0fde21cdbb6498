//! One policy model that every backend compiles from, and its reference evaluator.

mod addrset;
mod compile;
mod digest;
mod egress;
mod egress_compile;
mod egress_lint;
mod evaluate;
mod lint;
mod model;
pub mod track;

pub use addrset::{prefixes, AddrSet};
pub use compile::{compile, CompileError};
pub use egress::*;
pub use evaluate::evaluate;
pub use lint::{lint, lint_partial, Finding};
pub use model::*;
