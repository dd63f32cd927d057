//! No code: this crate exists for the features its manifest pins (see its
//! `Cargo.toml`).
