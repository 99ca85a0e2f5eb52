use std::path::Path;
use std::time::Instant;
use veil::{Limits, Scratch, compile};
fn main() {
    let events: Vec<Vec<u8>> = std::fs::read("examples/events.ndjson")
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let ring = veil::keys::load_dir(Path::new("tests/keys"), None).unwrap();
    let base = std::fs::read_to_string("config/policy.yaml").unwrap();
    let variants = [
        ("shipped", base.clone()),
        (
            "no url",
            base.replace("{ url: { keep_query: [\"utm_*\"] } }", "keep")
                .replace("{ url: { keep_query: [] } }", "keep"),
        ),
        ("no time", base.replace("{ truncate_time: second }", "keep")),
        (
            "no ip",
            base.replace("{ ip_prefix: { v4: 24, v6: 48 } }", "keep"),
        ),
        (
            "no pseudo",
            base.replace("{ pseudonymise: { normalise: [trim, lowercase] } }", "drop")
                .replace(": pseudonymise", ": drop"),
        ),
        (
            "no consent",
            base.replace(
                "consent:\n  purposes: context.consent.purposes\n  opt_out: context.consent.gpc\n",
                "",
            ),
        ),
    ];
    for (name, yaml) in variants {
        let e = compile(
            veil::Policy::parse(&yaml, "x").unwrap(),
            ring.active(),
            Limits::default(),
        );
        let mut s = Scratch::default();
        let mut out = Vec::new();
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            for ev in &events {
                out.clear();
                e.apply(ev, &mut out, &mut s);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name:<12} {:.2} us/event", best * 1e3);
    }
}
