//! Installing a policy safely, shared by `nodewall apply` (one shot) and `nodewall run` (the
//! agent): [`source`] (config file -> the desired policy), [`lock`] (one writer per node),
//! [`state`] (files under the state directory), [`confirm`] (commit-confirmed rollback) and
//! [`lockout`] (the SSH session check).

pub mod confirm;
pub mod lock;
pub mod lockout;
pub mod source;
pub mod state;

/// An in-memory backend and config parser for the unit tests of `apply` and `daemon`.
#[cfg(test)]
pub(crate) mod fake;
