//! The `nodewall run` daemon.
