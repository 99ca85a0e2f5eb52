//! The pseudonym test vectors published in docs/policy.md (computed with an
//! independent implementation) must match veil, byte for byte.

use std::path::Path;

use veil::keys::parse_key;
use veil::policy::{Encoding, PseudonymOptions};
use veil::pseudonym::Pseudonymiser;

#[test]
fn published_vectors_match() {
    let doc = std::fs::read_to_string("docs/policy.md").unwrap();
    let section = doc
        .split("### Test vectors")
        .nth(1)
        .expect("vectors section");
    let section = section.split("\n## ").next().unwrap();
    let mut checked = 0;
    for line in section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| key"))
    {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [key_hex, purpose, value, expected] = cells[..] else {
            panic!("bad vector row {line}")
        };
        let value: String = serde_json::from_str(value).unwrap();
        let key = parse_key("k1", key_hex.as_bytes(), Path::new("vector.key")).unwrap();
        let p = Pseudonymiser::new(&key, purpose, &PseudonymOptions::default());
        assert_eq!(p.pseudonym(value.as_bytes()), expected, "{line}");
        checked += 1;
    }
    assert_eq!(checked, 8, "every published vector is checked");

    let first_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    assert!(section.contains(first_key));
    let key = parse_key("k1", first_key.as_bytes(), Path::new("k1.key")).unwrap();
    let options = PseudonymOptions {
        encoding: Encoding::Base64url,
        key_id_prefix: true,
        truncate_bytes: 16,
    };
    let p = Pseudonymiser::new(&key, "analytics", &options);
    assert_eq!(p.pseudonym(b"user-42"), "k1:WyUM7TmfTqC1CwV3Ioy5Jg");
    assert!(doc.contains("k1:WyUM7TmfTqC1CwV3Ioy5Jg"));
}
