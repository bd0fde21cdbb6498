//! Network-namespace test harness (see the nft backend issue).
