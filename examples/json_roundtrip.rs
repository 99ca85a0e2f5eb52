//! The whole-process baseline of `benches/apply.sh`: NDJSON from stdin to
//! stdout through `serde_json::Value` (parse, serialise), with the same
//! buffered line I/O as `veil apply`. No policy, no keys: what reading and
//! writing JSON costs at all.
//!
//! `cargo run --release --example json_roundtrip < in.ndjson > out.ndjson`

use std::io::{BufRead, BufReader, BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut output = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::new();
    let mut bad = 0u64;
    while input.read_until(b'\n', &mut line)? > 0 {
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(v) => {
                serde_json::to_writer(&mut output, &v)?;
                output.write_all(b"\n")?;
            }
            Err(_) => bad += 1,
        }
        line.clear();
    }
    output.flush()?;
    eprintln!("json_roundtrip: {bad} lines not JSON");
    Ok(())
}
