//! `contact-operator`: parses flags, starts telemetry, and hands over to the library.
fn main() {}
