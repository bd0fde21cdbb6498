//! Datapaths that enforce a [`crate::policy::Policy`]. Each backend is one folder and knows
//! nothing of the other; both compile from the same policy and report the same counters.

pub mod nft;
