//! Empty: Cargo resolves `[build-dependencies]` only for a package that has a
//! build script, and the point of this crate is its build-dependencies.

fn main() {}
