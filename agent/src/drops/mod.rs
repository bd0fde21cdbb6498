//! Dropped-packet samples as people and programs read them: the record the agent streams to
//! `nodewall drops` and writes to its flow log ([`record`]), the local socket's messages
//! ([`wire`]), and what the reader does with them ([`filter`], [`text`]).
//!
//! The agent serves the stream; `nodewall drops` is its client. Both sides share these types,
//! so the JSON a reader prints (`--json`) and the flow log's lines are the same documented
//! record.

pub mod filter;
pub mod record;
pub mod text;
pub mod wire;

pub use filter::Filter;
pub use record::{Action, DropRecord, Stamp};
