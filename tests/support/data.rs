//! The reference data shared by benchmarks and examples.

#![allow(dead_code)]

/// The bundled example events (examples/events.ndjson), one `Vec` per line.
/// Paths are relative to the crate root, where cargo runs benches.
pub fn example_events() -> Vec<Vec<u8>> {
    std::fs::read("examples/events.ndjson")
        .expect("run from the crate root")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}
