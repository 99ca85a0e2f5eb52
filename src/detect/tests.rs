use super::*;

fn kinds(text: &str) -> Vec<(Kind, &str)> {
    let mut v = Vec::new();
    find(text.as_bytes(), |m| v.push((m.kind, &text[m.start..m.end])));
    v
}

fn one(text: &str) -> Option<(Kind, &str)> {
    let v = kinds(text);
    assert!(v.len() <= 1, "{text}: {v:?}");
    v.into_iter().next()
}

#[test]
fn finds_each_kind_in_a_sentence() {
    let cases = [
        (
            "Contact ana.smith@example.com today",
            Kind::Email,
            "ana.smith@example.com",
        ),
        ("call +44 20 7946 0958.", Kind::Phone, "+44 20 7946 0958"),
        ("call (555) 123-4567 now", Kind::Phone, "(555) 123-4567"),
        ("tel 555-234-5678", Kind::Phone, "555-234-5678"),
        ("06 12 34 56 78", Kind::Phone, "06 12 34 56 78"),
        (
            "card 4111 1111 1111 1111 exp",
            Kind::Card,
            "4111 1111 1111 1111",
        ),
        ("q=4111111111111111", Kind::Card, "4111111111111111"),
        ("amex 3782-822463-10005", Kind::Card, "3782-822463-10005"),
        (
            "pay to DE89 3704 0044 0532 0130 00 pls",
            Kind::Iban,
            "DE89 3704 0044 0532 0130 00",
        ),
        (
            "GB82WEST12345698765432",
            Kind::Iban,
            "GB82WEST12345698765432",
        ),
        ("from 203.0.113.77:443", Kind::Ip, "203.0.113.77"),
        ("host [2001:db8::1]", Kind::Ip, "2001:db8::1"),
        (
            "Authorization: Bearer abcdefABCDEF0123456789",
            Kind::Token,
            "Bearer abcdefABCDEF0123456789",
        ),
        // Any case (docs/policy.md), not only the three usual spellings.
        // A local part past RFC 5321's 64 characters is still all of it.
        (
            "to aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com now",
            Kind::Email,
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
        ),
        (
            "auth bEaReR abcdefABCDEF0123456789 ok",
            Kind::Token,
            "bEaReR abcdefABCDEF0123456789",
        ),
        (
            "BeArEr abcdefghijklmnopqrstuvwxyz",
            Kind::Token,
            "BeArEr abcdefghijklmnopqrstuvwxyz",
        ),
        (
            "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            Kind::Token,
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
    ];
    for (text, kind, hit) in cases {
        assert_eq!(one(text), Some((kind, hit)), "{text}");
        assert!(may_match(text.as_bytes()), "prefilter missed {text}");
    }
}

#[test]
fn leaves_look_alikes_alone() {
    for text in [
        "Order ORD-2026-000123",
        "v1.2.3",
        "Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh) Chrome/120.0.0.0 Safari/537.36",
        "MyApp/1.2.3.4 (iPhone; iOS 17.1)",
        "com.example.shop/2.10.0.3 Dalvik/2.1.0",
        "ua=(Edg/120.0.0.0)",
        "?ua=MyApp/1.2.3.4",
        "2026-11-21T10:00:00Z",
        "6f03675a-1b2c-4d5e-8f90-123456789012",
        "$1,299.99",
        "ISBN 978-3-16-148410-0",
        "4111111111111112",
        "DE89 3704 0044 0532 0130 01",
        "@ana said hi",
        "logo@2x.png",
        "user@localhost",
        "10:00:00",
        "std::fmt::Display",
        "1.2.3.4.5",
        "1764201600",
        "d41d8cd98f00b204e9800998ecf8427e",
        "npm i left-pad@1.3.0",
        "bearer of bad news",
    ] {
        assert_eq!(kinds(text), vec![], "{text}");
    }
}

#[test]
fn redacts_every_match() {
    let mut out = String::new();
    redact_into("a@b.co and 10.0.0.1", &mut out, |_| false);
    assert_eq!(out, "[redacted:email] and [redacted:ip]");
}

#[test]
fn the_prefilter_passes_plain_text() {
    for text in [
        r#"{"type":"page","name":"Home","title":"Welcome to the shop"}"#,
        "Mozilla/5.0 (X11; Linux x86_64)",
        "/products/42",
    ] {
        assert!(!may_match(text.as_bytes()), "{text}");
    }
}

#[test]
fn checksums() {
    assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
    assert!(mod97(b"GB82WEST12345698765432"));
    assert!(!mod97(b"GB83WEST12345698765432"));
}

#[test]
fn the_prefilter_reads_a_number_after_a_colon() {
    // Found by the fuzzer: the colon's IPv6 run hid the number after it.
    let text = "t:08.180.05.208.1M";
    assert_eq!(kinds(text), vec![(Kind::Phone, "08.180.05.208")]);
    assert!(may_match(text.as_bytes()));
}

#[test]
fn an_address_is_found_when_a_sentence_goes_on_after_it() {
    // Found by the planted-values property: the text after an address
    // made the whole candidate fail instead of the address ending there.
    assert_eq!(
        kinds("x 2001:db8:85a3::8a2e:370:7334.g"),
        vec![(Kind::Ip, "2001:db8:85a3::8a2e:370:7334")]
    );
    assert_eq!(
        kinds("mail ana.smith@example.com.a."),
        vec![(Kind::Email, "ana.smith@example.com")]
    );
    assert_eq!(kinds("2001:db8::1g"), vec![]);
}

#[test]
fn an_address_in_a_path_segment_is_an_address_not_a_version() {
    // A version follows a product name (`Chrome/120.0.0.0`); a path
    // segment follows a `/`. Both are `word/1.2.3.4`.
    for (text, hit) in [
        ("/from/10.9.8.7", "10.9.8.7"),
        ("https://geo.example/lookup/81.2.69.160?x=1", "81.2.69.160"),
        ("https://a.example/10.9.8.7", "10.9.8.7"),
        (
            "see shop.example/v1/clients/192.168.1.20/logs",
            "192.168.1.20",
        ),
        ("1234/10.9.8.7", "10.9.8.7"),
        ("http://a.example:8080/10.9.8.7", "10.9.8.7"),
    ] {
        assert_eq!(kinds(text), vec![(Kind::Ip, hit)], "{text}");
        assert!(may_match(text.as_bytes()), "prefilter missed {text}");
    }
    // So is a number.
    assert_eq!(
        kinds("/p/4111111111111111/z"),
        vec![(Kind::Card, "4111111111111111")]
    );
    assert_eq!(
        kinds("/call/+442079460958"),
        vec![(Kind::Phone, "+442079460958")]
    );
    assert_eq!(kinds("Invoice INV/2026/12345"), vec![]);
    // A name the scan cannot bound is no product name.
    let long = format!("{}/10.9.8.7", "a".repeat(80));
    assert_eq!(kinds(&long), vec![(Kind::Ip, "10.9.8.7")]);
}

#[test]
fn after_a_product_name_only_a_dotted_version_is_exempt() {
    for (text, kind, hit) in [
        ("users/4111111111111111", Kind::Card, "4111111111111111"),
        ("p/4111111111111111/z", Kind::Card, "4111111111111111"),
        (
            "shop.example.com/4111111111111111",
            Kind::Card,
            "4111111111111111",
        ),
        ("calls/+442079460958", Kind::Phone, "+442079460958"),
        ("calls/020 7946 0958", Kind::Phone, "020 7946 0958"),
        ("calls/02079460958", Kind::Phone, "02079460958"),
        ("q=Mozilla/4111111111111111", Kind::Card, "4111111111111111"),
    ] {
        assert_eq!(kinds(text), vec![(kind, hit)], "{text}");
        assert!(may_match(text.as_bytes()), "prefilter missed {text}");
    }
    // Versions stay versions.
    for ua in [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15",
        "Chrome/120.0.0.0 Safari/537.36",
        "MyApp/1.2.3.4 (iPhone)",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ] {
        assert_eq!(kinds(ua), vec![], "{ua}");
        assert!(!may_match(ua.as_bytes()), "prefilter stops at {ua}");
    }
}

#[test]
fn an_address_may_hold_letters_of_any_script() {
    for text in [
        "josé@example.com",
        "zoë@example.com",
        "иван@example.ru",
        "müller@example.de",
        "ana@exämple.de",
        "ana@bücher.de",
        "名前@例え.jp",
        "user@пример.рф",
        // Decomposed (NFD) letters and zero-width characters.
        "jose\u{301}@example.com",
        "ana@exa\u{308}mple.de",
        "ana@\u{200b}example.com",
        "an\u{200d}a@example.com",
    ] {
        assert_eq!(
            kinds(&format!("write to {text}, thanks")),
            vec![(Kind::Email, text)],
            "{text}"
        );
    }
    // A non-letter before the local part is not part of it.
    assert_eq!(
        kinds("«ana@example.com»"),
        vec![(Kind::Email, "ana@example.com")]
    );
    let mut out = String::new();
    redact_into("from josé@example.com.", &mut out, |_| false);
    assert_eq!(out, "from [redacted:email].");
}
