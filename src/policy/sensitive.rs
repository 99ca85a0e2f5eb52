//! The catalogue of sensitive field names, and how a path segment is
//! matched against it.
//!
//! Two lists, both data (documented in `docs/policy.md`, "Guardrails"):
//! - [`CATEGORIES`]: the special categories of GDPR Art. 9 plus precise
//!   geolocation, government identifiers, payment data and credentials.
//!   Keeping or generalising a path whose name falls in one is an error
//!   unless the policy waives it, per path, with a reason.
//! - [`GUESSABLE`]: identifiers whose values are few enough to enumerate
//!   (IP addresses, phone numbers, dates of birth, postal codes).
//!   Pseudonymising them is a warning: a keyed hash protects them only while
//!   the key is secret.
//!
//! A segment matches a term when the term's words appear in a row among the
//! segment's words, in any case style: `healthCondition`, `health_condition`,
//! `Health-Condition` and `HEALTH_CONDITION` are all the words
//! `health condition`. A multi-word term also matches its words run together
//! as one word (`cardnumber`, `apikey`), alone or at either end of a longer
//! one (`creditcardnumber`, `bankaccountnumber`, `userapikey`).

/// One category of sensitive data.
#[derive(Debug)]
pub struct Category {
    /// What a waiver names (`category: health`).
    pub id: &'static str,
    /// What the error message says.
    pub label: &'static str,
    /// Field names, as lowercase words separated by spaces.
    pub terms: &'static [&'static str],
}

/// The special categories (GDPR Art. 9) and other data that must not flow
/// without a written decision.
pub const CATEGORIES: &[Category] = &[
    Category {
        id: "racial_or_ethnic_origin",
        label: "racial or ethnic origin (GDPR Art. 9)",
        terms: &["race", "racial", "ethnicity", "ethnic", "ethnic origin"],
    },
    Category {
        id: "political_opinions",
        label: "political opinions (GDPR Art. 9)",
        terms: &[
            "political",
            "politics",
            "political party",
            "party affiliation",
            "political affiliation",
            "voting intention",
        ],
    },
    Category {
        id: "religious_or_philosophical_beliefs",
        label: "religious or philosophical beliefs (GDPR Art. 9)",
        terms: &[
            "religion",
            "religious",
            "faith",
            "denomination",
            "philosophical belief",
            "philosophical beliefs",
            "beliefs",
        ],
    },
    Category {
        id: "trade_union_membership",
        label: "trade-union membership (GDPR Art. 9)",
        terms: &[
            "trade union",
            "union membership",
            "union member",
            "labor union",
            "labour union",
        ],
    },
    Category {
        id: "genetic",
        label: "genetic data (GDPR Art. 9)",
        terms: &["genetic", "genetics", "genome", "genotype", "dna"],
    },
    Category {
        id: "biometric",
        label: "biometric data (GDPR Art. 9)",
        terms: &[
            "biometric",
            "biometrics",
            "fingerprint",
            "faceprint",
            "face template",
            "face id",
            "iris",
            "retina",
            "voiceprint",
        ],
    },
    Category {
        id: "health",
        label: "data concerning health (GDPR Art. 9)",
        terms: &[
            "health",
            "medical",
            "diagnosis",
            "diagnoses",
            "disease",
            "illness",
            "disability",
            "pregnancy",
            "pregnant",
            "medication",
            "medications",
            "prescription",
            "allergy",
            "allergies",
            "symptom",
            "symptoms",
            "blood type",
            "bmi",
            "hiv",
        ],
    },
    Category {
        id: "sex_life_or_sexual_orientation",
        label: "sex life or sexual orientation (GDPR Art. 9)",
        terms: &["sexual orientation", "sexuality", "sex life", "sexual"],
    },
    Category {
        id: "precise_geolocation",
        label: "precise geolocation",
        terms: &[
            "lat",
            "latitude",
            "lng",
            "lon",
            "longitude",
            "geolocation",
            "geo location",
            "coordinates",
            "gps",
        ],
    },
    Category {
        id: "government_identifier",
        label: "a government identifier",
        terms: &[
            "ssn",
            "social security",
            "social security number",
            "national id",
            "national identifier",
            "national insurance",
            "nino",
            "passport",
            "passport number",
            "driver license",
            "drivers license",
            "driving licence",
            "driver licence",
            "tax id",
            "tax number",
        ],
    },
    Category {
        id: "payment",
        label: "payment card or bank account data",
        terms: &[
            "card number",
            "credit card",
            "debit card",
            "cc number",
            "pan",
            "cvv",
            "cvc",
            "card cvc",
            "card expiry",
            "iban",
            "bank account",
            "account number",
            "routing number",
            "sort code",
        ],
    },
    Category {
        id: "credentials",
        label: "credentials or secrets",
        terms: &[
            "password",
            "passwd",
            "pwd",
            "passphrase",
            "secret",
            "client secret",
            "api key",
            "access key",
            "private key",
            "access token",
            "refresh token",
            "auth token",
            "id token",
            "bearer",
            "authorization",
            "session token",
            "otp",
        ],
    },
];

/// Identifiers whose possible values can be enumerated, and the generaliser
/// that fits each.
#[derive(Debug)]
pub struct Guessable {
    pub label: &'static str,
    pub terms: &'static [&'static str],
    /// What to do instead, as a policy author would write it.
    pub instead: &'static str,
}

pub const GUESSABLE: &[Guessable] = &[
    Guessable {
        label: "IP addresses (about 4 billion IPv4 addresses, all of which can be tried)",
        terms: &[
            "ip",
            "ip address",
            "ipv4",
            "ipv6",
            "remote addr",
            "client ip",
        ],
        instead: "`{ ip_prefix: { v4: 24, v6: 48 } }`, which keeps the network and not the host",
    },
    Guessable {
        label: "phone numbers (a country's numbers can be tried in hours)",
        terms: &[
            "phone",
            "phone number",
            "mobile",
            "telephone",
            "tel",
            "msisdn",
            "cell",
        ],
        instead: "`drop`, or `redact` all but a coarse prefix",
    },
    Guessable {
        label: "dates of birth (about 36,500 plausible values)",
        terms: &[
            "dob",
            "birthday",
            "birthdate",
            "birth date",
            "date of birth",
        ],
        instead: "`drop`, or an age band (`bucket`) computed upstream",
    },
    Guessable {
        label: "postal codes (a country has at most a few million)",
        terms: &[
            "zip",
            "zipcode",
            "zip code",
            "postcode",
            "postal code",
            "plz",
        ],
        instead: "`drop`, or `redact` all but the outward part",
    },
];

/// The words of a key in any case style, lowercase: `userSSN` → `user ssn`,
/// `Health_Condition` → `health condition`, `HTTPServer` → `http server`,
/// `address2` → `address 2`.
pub fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut words = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
        let next = chars.get(i + 1).copied();
        let boundary = match prev {
            Some(p) if p.is_alphanumeric() => {
                (p.is_lowercase() && c.is_uppercase())
                    || (p.is_uppercase()
                        && c.is_uppercase()
                        && next.is_some_and(char::is_lowercase))
                    || (p.is_alphabetic() && c.is_numeric())
                    || (p.is_numeric() && c.is_alphabetic())
            }
            _ => false,
        };
        if boundary && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether `term` (lowercase words, space-separated) names the key whose
/// words are `key_words`.
fn term_matches(term: &str, key_words: &[String]) -> bool {
    let term_words: Vec<&str> = term.split(' ').collect();
    let in_a_row = key_words
        .windows(term_words.len())
        .any(|w| w.iter().zip(&term_words).all(|(a, b)| a == b));
    // Or run together, alone or at either end of a longer run-together
    // word (`cardnumber`, `creditcardnumber`, `bankaccountnumber`).
    let run_together = || {
        let joined = term_words.concat();
        key_words
            .iter()
            .any(|w| w.starts_with(&joined) || w.ends_with(&joined))
    };
    in_a_row || (term_words.len() > 1 && run_together())
}

/// The first category whose terms name `key`.
pub fn category_of(key: &str) -> Option<&'static Category> {
    let w = words(key);
    CATEGORIES
        .iter()
        .find(|c| c.terms.iter().any(|t| term_matches(t, &w)))
}

/// The guessable kind `key` names, if any.
pub fn guessable(key: &str) -> Option<&'static Guessable> {
    let w = words(key);
    GUESSABLE
        .iter()
        .find(|g| g.terms.iter().any(|t| term_matches(t, &w)))
}

/// A category by the id a waiver names.
pub fn category(id: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.id == id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn words_split_every_case_style() {
        for (key, expected) in [
            ("healthCondition", "health condition"),
            ("health_condition", "health condition"),
            ("Health-Condition", "health condition"),
            ("HEALTH_CONDITION", "health condition"),
            ("userSSN", "user ssn"),
            ("HTTPServer", "http server"),
            ("address2", "address 2"),
            ("cvv2", "cvv 2"),
            ("lat", "lat"),
        ] {
            assert_eq!(words(key).join(" "), expected, "{key}");
        }
    }

    /// One name per category in a different case style each time, and
    /// names that share letters but not words with a term.
    #[test]
    fn every_category_is_found_and_near_misses_are_not() {
        for (key, id) in [
            ("ethnicity", "racial_or_ethnic_origin"),
            ("politicalParty", "political_opinions"),
            ("Religion", "religious_or_philosophical_beliefs"),
            ("trade_union_member", "trade_union_membership"),
            ("DNA_sample", "genetic"),
            ("faceId", "biometric"),
            ("healthCondition", "health"),
            ("sexual_orientation", "sex_life_or_sexual_orientation"),
            ("lat", "precise_geolocation"),
            ("Latitude", "precise_geolocation"),
            ("ssn", "government_identifier"),
            ("passport_number", "government_identifier"),
            ("card_number", "payment"),
            ("cardNumber", "payment"),
            ("CVV", "payment"),
            ("password", "credentials"),
            ("api_key", "credentials"),
            ("apikey", "credentials"),
            // A multi-word term run together inside a longer word.
            ("creditcardnumber", "payment"),
            ("creditcardno", "payment"),
            ("bankaccountnumber", "payment"),
            ("userapikey", "credentials"),
        ] {
            assert_eq!(category_of(key).map(|c| c.id), Some(id), "{key}");
        }
        for key in [
            "platform",   // contains "lat"
            "translated", // contains "lat"
            "pancake",    // contains "pan"
            "country",
            "userAgent",
            "title",
            "currency",
            "gender", // not a special category
            "email",
        ] {
            assert_eq!(category_of(key).map(|c| c.id), None, "{key}");
        }
    }

    #[test]
    fn guessable_identifiers_are_found() {
        for key in [
            "ip",
            "clientIp",
            "phone_number",
            "dateOfBirth",
            "postalCode",
            "zip",
        ] {
            assert!(guessable(key).is_some(), "{key}");
        }
        for key in ["userId", "email", "shipping", "description"] {
            assert!(guessable(key).is_none(), "{key}");
        }
    }

    #[test]
    fn every_category_id_is_unique_and_every_term_is_lowercase_words() {
        for (i, c) in CATEGORIES.iter().enumerate() {
            assert!(CATEGORIES[..i].iter().all(|o| o.id != c.id), "{}", c.id);
            for t in c.terms {
                assert_eq!(words(t).join(" "), *t, "term {t:?} of {}", c.id);
            }
        }
    }
}
