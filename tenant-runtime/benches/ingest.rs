//! Ingest benchmark: placeholder in this base (the runtime branch owns it).
fn main() {}
