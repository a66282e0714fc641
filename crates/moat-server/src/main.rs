//! The `moat` binary.
fn main() {}
