//! Guardrails (docs/policy.md, "Guardrails"): a policy that keeps or
//! generalises a field of a sensitive category without a written waiver is
//! refused, at the entry that lets it through; a waiver must name the
//! category, give a reason and waive something; pseudonymising a guessable
//! identifier is a warning.

use veil::policy::{Diagnostic, Policy};

const HEAD: &str = "name: t\nversion: 1\npurpose: analytics\n";

fn parse(body: &str) -> Result<Policy, Vec<Diagnostic>> {
    Policy::parse(&format!("{HEAD}{body}"), "p.yaml").map_err(|e| e.diagnostics().to_vec())
}

fn errors(body: &str) -> Vec<Diagnostic> {
    match parse(body) {
        Ok(_) => panic!("policy unexpectedly valid:\n{body}"),
        Err(d) => d,
    }
}

/// Exactly one error, at `line:column` of the whole file (HEAD is 3 lines),
/// whose message contains every needle.
fn one_error(body: &str, line: u64, column: u64, needles: &[&str]) -> Diagnostic {
    let d = errors(body);
    assert_eq!(d.len(), 1, "{d:#?}");
    let d = d.into_iter().next().unwrap();
    assert_eq!((d.line, d.column), (line, column), "{d}");
    for n in needles {
        assert!(d.message.contains(n), "{n:?} not in: {d}");
    }
    d
}

/// One key per category, in a different case style each, kept directly:
/// each is refused with its category id, and the same key pseudonymised or
/// dropped is accepted.
#[test]
fn every_category_kept_directly_is_refused_and_pseudonymising_it_is_not() {
    for (key, id) in [
        ("traits.ethnicity", "racial_or_ethnic_origin"),
        ("traits.politicalParty", "political_opinions"),
        ("traits.Religion", "religious_or_philosophical_beliefs"),
        ("traits.trade_union_member", "trade_union_membership"),
        ("properties.dnaSample", "genetic"),
        ("properties.FINGERPRINT", "biometric"),
        ("properties.healthCondition", "health"),
        (
            "traits.sexual-orientation",
            "sex_life_or_sexual_orientation",
        ),
        ("context.location.latitude", "precise_geolocation"),
        ("traits.ssn", "government_identifier"),
        ("traits.passport_number", "government_identifier"),
        ("properties.cardNumber", "payment"),
        ("properties.cvv", "payment"),
        ("traits.password", "credentials"),
        ("context.api_key", "credentials"),
    ] {
        let d = one_error(
            &format!("fields:\n  type: keep\n  {key}: keep\n"),
            6,
            3,
            &[
                "`fields` keeps",
                &format!("`{key}`"),
                &format!("category `{id}`"),
            ],
        );
        let hint = d.hint.unwrap_or_default();
        assert!(hint.contains(&format!("category: {id}")), "{hint}");
        let dropped = parse(&format!("fields:\n  type: keep\n  {key}: drop\n"))
            .unwrap_or_else(|d| panic!("{key}: drop refused: {d:#?}"));
        assert!(dropped.warnings.is_empty(), "{:#?}", dropped.warnings);
        // Pseudonymised: accepted, with a warning that it is still special.
        let hashed = parse(&format!("fields:\n  type: keep\n  {key}: pseudonymise\n"))
            .unwrap_or_else(|d| panic!("{key}: pseudonymise refused: {d:#?}"));
        assert_eq!(hashed.warnings.len(), 1, "{key}: {:#?}", hashed.warnings);
        assert!(
            hashed.warnings[0]
                .message
                .contains("still special-category data"),
            "{}",
            hashed.warnings[0]
        );
    }
}

#[test]
fn a_sensitive_parent_kept_whole_is_refused() {
    one_error(
        "fields:\n  health: keep\n",
        5,
        3,
        &["`fields` keeps `health`", "category `health`"],
    );
    // Below a sensitive key, whatever the leaf is called.
    one_error(
        "fields:\n  traits.medical.notes: keep\n",
        5,
        3,
        &["`traits.medical.notes`", "category `health`"],
    );
}

#[test]
fn generalising_a_sensitive_field_is_refused() {
    one_error(
        "fields:\n  context.location.lat: { bucket: { width: 10 } }\n",
        5,
        3,
        &[
            "generalises with `bucket`",
            "category `precise_geolocation`",
        ],
    );
    one_error(
        "fields:\n  traits.diagnosis: { redact: { patterns: [\"\\\\d+\"] } }\n",
        5,
        3,
        &["generalises with `redact`", "category `health`"],
    );
}

/// A path one allowlist drops is still let through by another that keeps
/// its parent, or reaches it through a wildcard: the error points at the
/// entry that lets it through.
#[test]
fn a_named_path_let_through_by_a_kept_parent_or_wildcard_is_refused() {
    let body = "\
fields:
  traits: keep
  traits.religion: drop
rules:
  - when: { type: identify }
    fields:
      traits: keep
  - when: { type: track }
    fields:
      traits.*: keep
";
    let d = errors(body);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!((d[0].line, d[0].column), (10, 7), "{}", d[0]);
    assert!(
        d[0].message
            .contains("rule 1 keeps, through `traits: keep`, `traits.religion`"),
        "{}",
        d[0]
    );
    assert_eq!((d[1].line, d[1].column), (13, 7), "{}", d[1]);
    assert!(
        d[1].message
            .contains("rule 2 keeps, through `traits.*: keep`, `traits.religion`"),
        "{}",
        d[1]
    );
}

#[test]
fn a_waiver_lets_one_path_through_and_explain_lists_it() {
    let body = "\
fields:
  type: keep
  context.location.latitude: { bucket: { width: 10 } }
waivers:
  context.location.latitude: { category: precise_geolocation, reason: \"10-degree bands for regional demand; DPIA-14\" }
";
    let p = parse(body).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(p.waivers.len(), 1);
    assert_eq!(p.waivers[0].category.id, "precise_geolocation");
    let md = veil::explain::markdown(&p);
    assert!(md.contains("## Sensitive data waivers"), "{md}");
    assert!(md.contains("| `context.location.latitude` | precise geolocation | 10-degree bands for regional demand; DPIA-14 | 8 |"), "{md}");
    let json = veil::explain::json(&p);
    assert_eq!(json["waivers"][0]["category"], "precise_geolocation");
    assert_eq!(json["waivers"][0]["path"], "context.location.latitude");

    // The waiver covers that path only: a second sensitive path still fails.
    let d = errors(&body.replace("waivers:", "  context.location.longitude: keep\nwaivers:"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains("`context.location.longitude`"),
        "{}",
        d[0]
    );
}

#[test]
fn a_waiver_must_name_a_real_category_give_a_reason_and_waive_something() {
    let keep = "fields:\n  traits.religion: keep\n";
    // Unknown category, with the nearest one suggested (the kept field is
    // then unwaived too).
    let d = errors(&format!(
        "{keep}waivers:\n  traits.religion: {{ category: religous_or_philosophical_beliefs, reason: \"x\" }}\n"
    ));
    let unknown = d
        .iter()
        .find(|d| d.message.contains("unknown waiver category"))
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert!(
        unknown
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("did you mean `religious_or_philosophical_beliefs`?"),
        "{unknown}"
    );
    // An empty reason.
    let d = errors(&format!(
        "{keep}waivers:\n  traits.religion: {{ category: religious_or_philosophical_beliefs, reason: \"  \" }}\n"
    ));
    assert!(
        d.iter().any(|d| d.message.contains("empty reason")),
        "{d:#?}"
    );
    // The wrong category for the path: the field stays refused and the
    // waiver waives nothing.
    let d = errors(&format!(
        "{keep}waivers:\n  traits.religion: {{ category: health, reason: \"because\" }}\n"
    ));
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d.iter()
            .any(|d| d.message.contains("`fields` keeps `traits.religion`")),
        "{d:#?}"
    );
    assert!(
        d.iter().any(|d| d.message.contains("waives nothing")),
        "{d:#?}"
    );
    // A waiver for a path nothing keeps.
    one_error(
        "fields:\n  traits.religion: drop\nwaivers:\n  traits.religion: { category: religious_or_philosophical_beliefs, reason: \"old\" }\n",
        7,
        3,
        &["waiver for `traits.religion`", "waives nothing"],
    );
}

#[test]
fn near_misses_are_not_flagged() {
    parse(
        "fields:\n  context.platform: keep\n  properties.translated: keep\n  traits.gender: keep\n  context.screen.orientation: keep\n  properties.pancake_count: keep\n  context.page.title: keep\n",
    )
    .unwrap_or_else(|d| panic!("{d:#?}"));
}

#[test]
fn pseudonymising_a_guessable_identifier_is_a_warning_with_the_fitting_generaliser() {
    let p = parse("fields:\n  context.ip: pseudonymise\n  traits.phoneNumber: pseudonymise\n  userId: pseudonymise\n")
        .unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(p.warnings.len(), 2, "{:#?}", p.warnings);
    let ip = &p.warnings[0];
    assert_eq!((ip.line, ip.column), (5, 3));
    assert!(
        ip.message
            .contains("pseudonymises `context.ip`, which looks like IP addresses"),
        "{ip}"
    );
    assert!(
        ip.hint.as_deref().unwrap_or_default().contains("ip_prefix"),
        "{ip}"
    );
    assert!(
        p.warnings[1].message.contains("`traits.phoneNumber`"),
        "{}",
        p.warnings[1]
    );
    // Generalised instead: no warning.
    let p = parse("fields:\n  context.ip: { ip_prefix: { v4: 24, v6: 48 } }\n").unwrap();
    assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
}

#[test]
fn the_shipped_policy_passes_the_guardrails_without_warnings() {
    let text = std::fs::read_to_string("config/policy.yaml").unwrap();
    let p = Policy::parse(&text, "config/policy.yaml").unwrap();
    assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
}

/// The docs table lists every category id of the catalogue.
#[test]
fn the_docs_list_every_category() {
    let docs = std::fs::read_to_string("docs/policy.md").unwrap();
    for c in veil::policy::sensitive::CATEGORIES {
        assert!(
            docs.contains(&format!("| `{}` |", c.id)),
            "{} missing from docs/policy.md",
            c.id
        );
    }
}
