//! nftables backend: renders the policy as an `inet nodewall` table and installs it through
//! netlink as one atomic batch.
