//! nodewall: a node-local firewall that enforces cloud security-group baselines.
//!
//! The modules follow the flow of data:
//! `config` (YAML, validated) -> `discovery` (networks read from the Kubernetes API) ->
//! `profiles` (built-in baselines) -> `policy` (one normalised, backend-neutral model, and its
//! evaluator) -> `backend::{nft, xdp}` (kernel) -> `metrics` (counters read back from the
//! kernel); `drops` (drop samples as records, read by `nodewall drops` and written to the flow
//! log).

pub mod apply;
pub mod backend;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod drops;
pub mod fnv;
pub mod metrics;
pub mod policy;
pub mod profiles;
pub mod staged;
pub mod vocab;
