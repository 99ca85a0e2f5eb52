//! Bad policies get errors with file, line, column and a hint.

use veil::policy::{Diagnostic, Policy};

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match Policy::parse(yaml, "p.yaml") {
        Ok(_) => panic!("policy unexpectedly valid:\n{yaml}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

/// Exactly one error, at `line:column`, whose message contains `needle`.
fn one_error(yaml: &str, line: u64, column: u64, needle: &str) -> Diagnostic {
    let d = errors(yaml);
    assert_eq!(d.len(), 1, "{d:#?}");
    let d = d.into_iter().next().unwrap();
    assert_eq!((d.line, d.column), (line, column), "{d}");
    assert!(d.message.contains(needle), "{d}");
    assert_eq!(d.file, "p.yaml");
    d
}

const HEAD: &str = "name: t\nversion: 1\npurpose: analytics\n";

#[test]
fn the_shipped_policy_is_valid() {
    let text = std::fs::read_to_string("config/policy.yaml").unwrap();
    let p = Policy::parse(&text, "config/policy.yaml").unwrap();
    assert_eq!(p.id(), "web-analytics@5");
}

#[test]
fn the_issue_example_is_accepted_as_written() {
    let yaml = r#"
name: web-analytics          # required
version: 3                   # required, integer
purpose: analytics           # required
consent:
  purposes: context.consent.purposes
  opt_out: context.consent.gpc
subject: [userId, anonymousId]
fields:
  type: keep
  event: keep
  timestamp: keep
  userId: pseudonymise
  anonymousId: pseudonymise
  context.device.id: pseudonymise
  context.traits.email: { pseudonymise: { normalise: [trim, lowercase] } }
  context.ip: { ip_prefix: { v4: 24, v6: 48 } }
  context.page.url: { url: { keep_query: ["utm_*"] } }
  context.campaign.*: keep
  properties.products[].sku: keep
"#;
    Policy::parse(yaml, "p.yaml").unwrap();
}

#[test]
fn unknown_top_level_key() {
    let d = one_error(
        &format!("{HEAD}fieldz:\n  a: keep\n"),
        4,
        1,
        "unknown field `fieldz`",
    );
    assert!(d.hint.is_some());
}

#[test]
fn typos_get_the_nearest_valid_name() {
    let d = one_error(
        &format!("{HEAD}consnet:\n  purposes: a.b\nfields:\n  a: keep\n"),
        4,
        1,
        "unknown field `consnet`",
    );
    assert!(d.hint.unwrap().contains("did you mean `consent`?"));
    one_error(
        &format!("{HEAD}fields:\n  context.ip: ip_prefx\n"),
        5,
        15,
        "unknown action `ip_prefx` (did you mean `ip_prefix`?)",
    );
    one_error(
        &format!("{HEAD}fields:\n  context.ip: {{ ip_prefx: {{ v4: 24 }} }}\n"),
        5,
        15,
        "unknown action `ip_prefx` (did you mean `ip_prefix`?)",
    );
    // An option of `url` (`scan` is one since this stop).
    let d = one_error(
        &format!("{HEAD}fields:\n  u: {{ url: {{ keep_qeury: [q] }} }}\n"),
        5,
        15,
        "unknown field `keep_qeury`, expected one of keep_query, scan",
    );
    assert!(d.hint.unwrap().contains("did you mean `keep_query`?"));
    // With another error beside it the structure walk names the options.
    let d = errors(&format!(
        "{HEAD}fields:\n  v: {{ url: {{ scan: maybe }} }}\n  u: {{ url: {{ keep_qeury: [q] }} }}\n"
    ));
    assert!(
        d.iter().any(|d| d
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("`url` may have: keep_query, scan")),
        "{d:#?}"
    );
    // Nothing near: no guess.
    let d = one_error(
        &format!("{HEAD}fields:\n  a: zzzzzz\n"),
        5,
        6,
        "unknown action `zzzzzz`;",
    );
    assert!(!d.message.contains("did you mean"), "{d}");
}

/// serde stops at the first unknown key; every other one is reported in
/// the same run, each at its place with its nearest valid name.
#[test]
fn every_unknown_key_and_action_is_reported_in_one_run() {
    let d = errors(&format!(
        "{HEAD}consnet:\n  purposes: a.b\npseudonyms: {{ encodng: hex }}\nfields:\n  type: keep\n  context.ip: ip_prefx\n  a: {{ url: {{ keep_qury: [x] }} }}\n  b: {{ bukcet: {{ width: 10 }} }}\nrules:\n  - when: {{ type: x }}\n    feilds: {{ a: keep }}\n"
    ));
    let got: Vec<(u64, u64, &str)> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    let want = [
        (4, 1, "unknown field `consnet`"),
        (6, 15, "unknown key `encodng` in `pseudonyms`"),
        (
            9,
            15,
            "unknown action `ip_prefx` (did you mean `ip_prefix`?)",
        ),
        (10, 15, "unknown key `keep_qury` in `url`"),
        (11, 8, "unknown action `bukcet` (did you mean `bucket`?)"),
        (14, 5, "unknown key `feilds` in a rule"),
    ];
    assert_eq!(got.len(), want.len(), "{d:#?}");
    for ((l, c, m), (wl, wc, wm)) in got.iter().zip(want) {
        assert_eq!((*l, *c), (wl, wc), "{m}");
        assert!(m.contains(wm), "{m:?} lacks {wm:?}");
    }
    for (d, s) in d
        .iter()
        .zip(["consent", "encoding", "", "keep_query", "", "fields"])
    {
        if !s.is_empty() {
            let hint = d.hint.as_deref().unwrap_or_default();
            assert!(hint.contains(&format!("did you mean `{s}`?")), "{d}");
        }
    }
}

#[test]
fn an_indentation_slip_is_named_as_one() {
    one_error(
        &format!("{HEAD}fields:\n  type: keep\n    event: keep\n"),
        5,
        9,
        "`keep event` is not an action: the line after this one is indented further",
    );
}

#[test]
fn version_must_be_an_integer_as_written() {
    let d = one_error(
        "name: t\nversion: \"1\"\npurpose: a\nfields:\n  a: keep\n",
        2,
        10,
        "`version` must be an integer, not a string",
    );
    assert!(d.hint.unwrap().contains("version: 1"));
}

#[test]
fn unknown_action_lists_the_valid_ones() {
    let d = one_error(
        &format!("{HEAD}fields:\n  a: keep\n  b: hash\n"),
        6,
        6,
        "unknown action `hash`",
    );
    assert!(d.message.contains("pseudonymise"), "{d}");
}

#[test]
fn unknown_option_key() {
    one_error(
        &format!("{HEAD}fields:\n  ip: {{ ip_prefix: {{ v4: 24, v5: 1 }} }}\n"),
        5,
        30,
        "unknown field `v5`",
    );
}

#[test]
fn wrong_type() {
    one_error(
        "name: t\nversion: three\npurpose: a\nfields: {a: keep}\n",
        2,
        10,
        "",
    );
}

#[test]
fn bad_path_points_at_the_key() {
    let d = one_error(
        &format!("{HEAD}fields:\n  a..b: keep\n"),
        5,
        3,
        "bad field path `a..b`",
    );
    assert!(d.message.contains("character 3"), "{d}");
    assert!(d.hint.unwrap().contains("quotes"));
}

#[test]
fn same_place_written_twice() {
    one_error(
        &format!("{HEAD}fields:\n  a.b: ip_prefix\n  a.\"b\": url\n"),
        6,
        3,
        "conflicting actions for `a.b`",
    );
}

#[test]
fn kept_and_pseudonymised() {
    let d = one_error(
        &format!("{HEAD}fields:\n  userId: keep\n  '\"userId\"': pseudonymise\n"),
        6,
        3,
        "both kept and pseudonymised",
    );
    assert!(d.hint.unwrap().contains("raw identifier"));
}

#[test]
fn duplicate_yaml_key() {
    one_error(
        &format!("{HEAD}fields:\n  a: keep\n  a: drop\n"),
        6,
        3,
        "duplicate mapping key",
    );
}

#[test]
fn entry_below_a_transform() {
    one_error(
        &format!("{HEAD}fields:\n  user: pseudonymise\n  user.id: keep\n"),
        6,
        3,
        "lies inside `user`",
    );
}

#[test]
fn subject_kept_in_clear_directly_or_through_a_parent() {
    one_error(
        &format!("{HEAD}subject: [userId]\nfields:\n  userId: keep\n"),
        6,
        3,
        "subject identifier `userId` (declared at line 4) is kept in clear",
    );
    one_error(
        &format!("{HEAD}subject: [context.traits.email]\nfields:\n  context: keep\n"),
        6,
        3,
        "kept in clear",
    );
    // Overridden beneath the kept parent: fine.
    Policy::parse(
        &format!("{HEAD}subject: [context.traits.email]\nfields:\n  context: keep\n  context.traits.email: pseudonymise\n"),
        "p.yaml",
    )
    .unwrap();
}

#[test]
fn option_values_are_checked() {
    one_error(
        &format!("{HEAD}fields:\n  ip: {{ ip_prefix: {{ v4: 33 }} }}\n"),
        5,
        7,
        "out of range",
    );
    one_error(
        &format!("{HEAD}fields:\n  n: {{ bucket: {{ edges: [5, 1] }} }}\n"),
        5,
        6,
        "ascending",
    );
    one_error(
        &format!("{HEAD}fields:\n  n: {{ bucket: {{}} }}\n"),
        5,
        6,
        "exactly one of",
    );
    one_error(
        &format!("{HEAD}fields:\n  s: {{ redact: {{ patterns: ['('] }} }}\n"),
        5,
        6,
        "bad redact pattern",
    );
    one_error(
        &format!("{HEAD}fields:\n  t: truncate_time\n"),
        5,
        6,
        "needs a unit",
    );
    one_error(
        &format!("{HEAD}fields:\n  t: {{ truncate_time: week }}\n"),
        5,
        23,
        "",
    );
}

#[test]
fn consent_paths_must_be_exact() {
    one_error(
        &format!("{HEAD}consent:\n  purposes: a.*\nfields: {{a: keep}}\n"),
        5,
        13,
        "must name one place",
    );
}

#[test]
fn a_policy_must_allow_something() {
    one_error(HEAD, 1, 7, "neither `fields` nor `rules`");
}

#[test]
fn several_problems_are_reported_together() {
    let d = errors(&format!(
        "{HEAD}fields:\n  a..b: keep\n  c: {{ ip_prefix: {{ v6: 200 }} }}\n"
    ));
    assert_eq!(d.len(), 2, "{d:#?}");
    let text = veil::policy::PolicyError::Invalid { diagnostics: d }.to_string();
    assert!(
        text.contains("p.yaml:5:3:") && text.contains("p.yaml:6:6:") && text.contains("2 errors"),
        "{text}"
    );
}

#[test]
fn comments_explain_entries() {
    let yaml = format!(
        "{HEAD}fields:\n  # Who: pseudonyms only.\n  # Needed for joins.\n  userId: pseudonymise\n  a: keep   # product analytics\n\n  b: keep\n  c: {{ url: {{ keep_query: ['#x'] }} }}\n"
    );
    let p = Policy::parse(&yaml, "p.yaml").unwrap();
    let notes: Vec<Option<&str>> = p
        .fields
        .as_ref()
        .unwrap()
        .entries
        .iter()
        .map(|e| e.note.as_deref())
        .collect();
    assert_eq!(
        notes,
        [
            Some("Who: pseudonyms only. Needed for joins."),
            Some("product analytics"),
            None,
            None
        ]
    );
}

// ---- Issue 9: subjects, identity generalisations, YAML scalars, places ----

#[test]
fn wildcard_subject_is_checked_against_every_entry_that_reaches_it() {
    one_error(
        &format!("{HEAD}subject: [\"*.email\"]\nfields:\n  context: keep\n"),
        6,
        3,
        "subject identifier `*.email` (declared at line 4) is kept in clear",
    );
    one_error(
        &format!(
            "{HEAD}subject: [\"context.*.email\"]\nfields:\n  context.traits: keep\n  context.page.email: pseudonymise\n"
        ),
        6,
        3,
        "kept in clear",
    );
    one_error(
        &format!("{HEAD}subject: [\"items[].id\"]\nfields:\n  items: keep\n"),
        6,
        3,
        "kept in clear",
    );
    // Every place the wildcard reaches is pseudonymised or dropped: fine.
    Policy::parse(
        &format!("{HEAD}subject: [\"*.email\"]\nfields:\n  context: keep\n  context.email: pseudonymise\n  \"*.email\": drop\n"),
        "p.yaml",
    )
    .unwrap();
}

#[test]
fn subject_may_only_be_pseudonymised_or_dropped() {
    for action in [
        "{ bucket: { width: 10 } }",
        "{ ip_prefix: { v4: 24, v6: 48 } }",
        "{ redact: { patterns: ['zzz'] } }",
        "url",
        "{ truncate_time: day }",
    ] {
        let d = one_error(
            &format!("{HEAD}subject: [uid]\nfields:\n  uid: {action}\n"),
            6,
            3,
            "subject identifier `uid` (declared at line 4) is generalised with",
        );
        assert!(d.hint.unwrap().contains("only be pseudonymised or dropped"));
    }
    // In a rule too.
    one_error(
        &format!(
            "{HEAD}subject: [uid]\nrules:\n  - when: {{ type: x }}\n    fields: {{ uid: url }}\nfields:\n  uid: pseudonymise\n"
        ),
        7,
        15,
        "by rule 1",
    );
}

#[test]
fn subject_parent_with_a_child_kept_is_refused() {
    one_error(
        &format!("{HEAD}subject: [context.traits]\nfields:\n  context.traits.email: keep\n"),
        6,
        3,
        "subject identifier `context.traits` (declared at line 4) is partly kept",
    );
    Policy::parse(
        &format!("{HEAD}subject: [context.traits]\nfields:\n  context.traits.email: pseudonymise\n  context.traits.phone: drop\n"),
        "p.yaml",
    )
    .unwrap();
}

#[test]
fn identity_generalisations_are_refused_everywhere() {
    for (action, needle) in [
        ("{ ip_prefix: { v4: 32 } }", "keeps whole addresses"),
        (
            "{ ip_prefix: { v4: 24, v6: 128 } }",
            "keeps whole addresses",
        ),
        ("{ bucket: { width: 1 } }", "leaves whole numbers unchanged"),
        (
            "{ bucket: { width: 0.5 } }",
            "leaves whole numbers unchanged",
        ),
    ] {
        one_error(&format!("{HEAD}fields:\n  v: {action}\n"), 5, 6, needle);
    }
}

#[test]
fn yaml_1_1_scalars_in_conditions_are_refused_with_a_hint_to_quote() {
    for (raw, line_col) in [
        ("NO", (5, 22)),
        ("no", (5, 22)),
        ("on", (5, 22)),
        ("Off", (5, 22)),
        ("y", (5, 22)),
        ("n", (5, 22)),
        ("yes", (5, 22)),
        ("True", (5, 22)),
        ("~", (5, 22)),
        ("01234", (5, 22)),
        ("0x10", (5, 22)),
        ("0o17", (5, 22)),
        ("+1", (5, 22)),
        (".5", (5, 22)),
    ] {
        let yaml = format!(
            "{HEAD}rules:\n  - when: {{ country: {raw} }}\n    drop: true\nfields: {{ a: keep }}\n"
        );
        let d = one_error(&yaml, line_col.0, line_col.1, "condition on `country`");
        assert!(d.message.contains(raw), "{d}");
        assert!(d.hint.unwrap().contains("quote it"));
    }
    // In a list, in block style, each item is checked where it stands.
    one_error(
        &format!(
            "{HEAD}rules:\n  - when:\n      country:\n        - DE\n        - NO\n    drop: true\nfields: {{ a: keep }}\n"
        ),
        8,
        11,
        "`NO` is ambiguous",
    );
}

#[test]
fn conditions_written_plainly_mean_what_they_say() {
    let p = Policy::parse(
        &format!("{HEAD}rules:\n  - when: {{ country: \"NO\", n: 9007199254740993, b: true, z: null, s: DE, f: -1.5e3 }}\n    drop: true\nfields: {{ a: keep }}\n"),
        "p.yaml",
    )
    .unwrap();
    let shown: Vec<String> = p.rules[0]
        .when
        .iter()
        .map(|c| format!("{:?}", c.any_of))
        .collect();
    assert_eq!(
        shown.join(" "),
        r#"[String("NO")] [Number(9007199254740993)] [Bool(true)] [Null] [String("DE")] [Number(-1.5e3)]"#
    );
}

#[test]
fn diagnostics_point_at_the_offending_key() {
    one_error(
        &format!(
            "{HEAD}pseudonyms:\n  encoding: hex\n  truncate_bytes: 8\nfields: {{ a: keep }}\n"
        ),
        6,
        3,
        "truncate_bytes is 8",
    );
    one_error(
        &format!("{HEAD}fields: {{ a: keep }}\nrules:\n  - when: {{}}\n    drop: true\n"),
        6,
        5,
        "empty `when`",
    );
}

const FIELDS: &str = "fields:\n  type: keep\n";

#[test]
fn a_consent_section_must_name_a_check() {
    let d = one_error(
        &format!("{HEAD}consent: {{}}\n{FIELDS}"),
        4,
        10,
        "consent names no check",
    );
    assert!(d.hint.unwrap().contains("tcf"));
}

#[test]
fn tcf_purposes_are_numbered_1_to_11() {
    let yaml =
        format!("{HEAD}consent:\n  tcf:\n    path: gdpr.tc\n    purposes: [1, 12, 0]\n{FIELDS}");
    let d = errors(&yaml);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!((d[0].line, d[0].column), (7, 19), "{}", d[0]);
    assert!(d[0].message.contains("12 is not a TCF purpose"), "{}", d[0]);
    assert!(d[1].message.contains("0 is not a TCF purpose"), "{}", d[1]);
    one_error(
        &format!("{HEAD}consent:\n  tcf:\n    path: gdpr.tc\n    purposes: []\n{FIELDS}"),
        7,
        15,
        "consent.tcf.purposes is empty",
    );
}

#[test]
fn legitimate_interest_only_where_tcf_allows_it_and_only_for_required_purposes() {
    let yaml = |li: &str| {
        format!(
            "{HEAD}consent:\n  tcf:\n    path: gdpr.tc\n    purposes: [1, 7]\n    legitimate_interest: [{li}]\n{FIELDS}"
        )
    };
    let d = one_error(
        &yaml("1"),
        8,
        27,
        "purpose 1 cannot rest on legitimate interest",
    );
    assert!(d.hint.unwrap().contains("1, 3, 4, 5 and 6"));
    one_error(
        &yaml("8"),
        8,
        27,
        "purpose 8 is in legitimate_interest but not in purposes",
    );
    Policy::parse(&yaml("7"), "p.yaml").unwrap();
}

#[test]
fn a_tcf_vendor_is_a_vendor_list_id_and_the_path_names_one_place() {
    let yaml = |vendor: &str, path: &str| {
        format!(
            "{HEAD}consent:\n  tcf:\n    path: {path}\n    purposes: [1]\n    vendor: {vendor}\n{FIELDS}"
        )
    };
    one_error(
        &yaml("0", "gdpr.tc"),
        8,
        13,
        "consent.tcf.vendor 0 is not a vendor id",
    );
    one_error(
        &yaml("70000", "gdpr.tc"),
        8,
        13,
        "consent.tcf.vendor 70000 is not a vendor id",
    );
    one_error(&yaml("755", "items[].tc"), 6, 11, "must name one place");
    let d = errors(&yaml("x", "gdpr.tc"));
    assert_eq!(d[0].line, 8, "{d:#?}");
}

#[test]
fn an_opt_out_header_is_a_header_name() {
    one_error(
        &format!("{HEAD}consent:\n  opt_out_header: \"sec gpc\"\n{FIELDS}"),
        5,
        19,
        "`sec gpc` is not a header name",
    );
    let p = Policy::parse(
        &format!("{HEAD}consent:\n  opt_out_header: Sec-GPC\n{FIELDS}"),
        "p.yaml",
    )
    .unwrap();
    assert_eq!(
        p.consent.unwrap().opt_out_header.as_deref(),
        Some("sec-gpc")
    );
}

#[test]
fn a_category_needs_the_purposes_it_names_a_member_of() {
    one_error(
        &format!("{HEAD}consent:\n  category: Analytics\n  opt_out: gpc\n{FIELDS}"),
        5,
        13,
        "consent.category without consent.purposes",
    );
}

#[test]
fn an_empty_consent_key_is_an_error_not_a_missing_check() {
    for (consent, line, column) in [
        ("consent:\n  opt_out: gpc\n  purposes:\n", 6, 11),
        ("consent:\n  opt_out: gpc\n  tcf:\n", 6, 6),
        ("consent:\n  purposes: p\n  category:\n", 6, 11),
        ("consent: ~\n", 4, 10),
        ("consent:\n", 4, 8),
        ("consent:\n  opt_out: null\n  purposes: p\n", 5, 12),
    ] {
        let d = errors(&format!("{HEAD}{consent}{FIELDS}"));
        assert_eq!(d.len(), 1, "{consent}: {d:#?}");
        assert_eq!(
            (d[0].line, d[0].column),
            (line, column),
            "{consent}: {}",
            d[0]
        );
        assert!(
            d[0].hint
                .as_deref()
                .unwrap_or("")
                .contains("an empty key never stands for an absent check"),
            "{}",
            d[0]
        );
    }
}

#[test]
fn consent_checks_that_read_inside_one_another_are_refused() {
    let tcf = "  tcf:\n    path: gdpr.tc\n    purposes: [1]\n";
    for (check, needle) in [
        (
            "  opt_out: gdpr\n",
            "consent.tcf.path `gdpr.tc` and consent.opt_out `gdpr` overlap",
        ),
        (
            "  opt_out: gdpr.tc\n",
            "consent.tcf.path `gdpr.tc` and consent.opt_out `gdpr.tc` overlap",
        ),
        (
            "  purposes: gdpr.tc.x\n",
            "consent.tcf.path `gdpr.tc` and consent.purposes `gdpr.tc.x` overlap",
        ),
    ] {
        let d = errors(&format!("{HEAD}consent:\n{check}{tcf}{FIELDS}"));
        assert_eq!(d.len(), 1, "{check}: {d:#?}");
        assert!(d[0].message.contains(needle), "{}", d[0]);
        assert_eq!((d[0].line, d[0].column), (7, 11), "{}", d[0]);
    }
    // Siblings are fine.
    Policy::parse(
        &format!("{HEAD}consent:\n  opt_out: gdpr.gpc\n  purposes: gdpr.purposes\n{tcf}{FIELDS}"),
        "p.yaml",
    )
    .unwrap();
}

#[test]
fn scan_keys_and_values_are_checked_with_suggestions() {
    let d = one_error(
        &format!("{HEAD}scna: redact\nfields:\n  a: keep\n"),
        4,
        1,
        "unknown field `scna`",
    );
    assert!(d.hint.unwrap().contains("did you mean `scan`?"));
    let d = one_error(
        &format!("{HEAD}fields:\n  a: {{ keep: {{ scna: off }} }}\n"),
        5,
        16,
        "scna",
    );
    let text = format!("{d} {}", d.hint.as_deref().unwrap_or_default());
    assert!(text.contains("`scan`"), "{text}");
    let d = one_error(
        &format!("{HEAD}scan: redcat\nfields:\n  a: keep\n"),
        4,
        7,
        "redcat",
    );
    assert!(d.message.contains("drop_event"), "{d}");
    // Both typos, and a third, in one run.
    let d = errors(&format!(
        "{HEAD}scna: off\nfields:\n  a: {{ keep: {{ scna: off }} }}\n  b: kep\n"
    ));
    assert_eq!(d.len(), 3, "{d:#?}");
}

#[test]
fn scan_settings_are_accepted() {
    let p = Policy::parse(
        &format!("{HEAD}scan: count\nfields:\n  a: {{ keep: {{ scan: drop_event }} }}\n  b: {{ keep: {{}} }}\n  c: {{ keep: null }}\n"),
        "p.yaml",
    )
    .unwrap();
    assert_eq!(p.scan, veil::policy::ScanMode::Count);
    let scans: Vec<_> = p.fields.unwrap().entries.iter().map(|e| e.scan).collect();
    assert_eq!(scans, [Some(veil::policy::ScanMode::DropEvent), None, None]);
}

#[test]
fn explain_shows_the_scan_of_each_kept_entry() {
    let p = Policy::parse(
        &format!("{HEAD}scan: count\nfields:\n  a: keep\n  b: {{ keep: {{ scan: off }} }}\n  c: pseudonymise\n"),
        "p.yaml",
    )
    .unwrap();
    let md = veil::explain::markdown(&p);
    assert!(md.contains("## Content scan"), "{md}");
    assert!(md.contains("`scan: count`"), "{md}");
    assert!(md.contains("kept as sent (scan `count`"), "{md}");
    assert!(md.contains("kept as sent (scan `off`"), "{md}");
    let json = veil::explain::json(&p);
    assert_eq!(json["scan"], "count");
    let scans: Vec<&serde_json::Value> = json["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["scan"])
        .collect();
    assert_eq!(
        scans,
        [
            &serde_json::json!("count"),
            &serde_json::json!("off"),
            &serde_json::Value::Null
        ]
    );
}

/// A `*` with more beneath it, inside a kept parent, makes the parent's
/// unnamed members objects: the warning says so at the entry, and what it
/// says is what the engine does.
#[test]
fn a_wildcard_inside_a_kept_parent_is_a_warning_that_tells_the_truth() {
    let yaml = format!(
        "{HEAD}subject: [ctx.*.owner]\nfields:\n  ctx: keep\n  ctx.*.owner: pseudonymise\n"
    );
    let p = Policy::parse(&yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.warnings.len(), 1, "{:#?}", p.warnings);
    let w = &p.warnings[0];
    assert_eq!((w.line, w.column), (7, 3), "{w}");
    assert!(
        w.message
            .contains("`ctx.*.owner` reaches into every member of `ctx`")
            && w.message.contains("type_mismatch"),
        "{w}"
    );
    assert!(
        w.hint
            .as_deref()
            .unwrap_or_default()
            .contains("instead of `*`"),
        "{w}"
    );

    let key = veil::keys::parse_key(
        "k",
        b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        std::path::Path::new("k.key"),
    )
    .unwrap();
    let input = br#"{"ctx":{"locale":"de","tags":["a"],"a":{"owner":"bob","x":1}}}"#;
    let apply = |p: Policy| {
        let e = veil::compile(p, &key, veil::Limits::default());
        let mut out = Vec::new();
        e.apply(input, &mut out, &mut veil::Scratch::default());
        serde_json::from_slice::<serde_json::Value>(&out).unwrap()
    };
    let out = apply(p);
    assert!(
        out["ctx"].get("locale").is_none() && out["ctx"].get("tags").is_none(),
        "{out}"
    );
    assert_eq!(out["ctx"]["a"]["x"], 1, "{out}");
    // A `*` reaches named members too: naming one does not keep its scalar.
    let named = Policy::parse(&format!("{yaml}  ctx.locale: keep\n"), "p.yaml").unwrap();
    assert!(apply(named)["ctx"].get("locale").is_none());
    // The path written per object, as the hint says: kept, and no warning.
    let per_object = format!(
        "{HEAD}subject: [ctx.a.owner]\nfields:\n  ctx: keep\n  ctx.a.owner: pseudonymise\n"
    );
    let p = Policy::parse(&per_object, "p.yaml").unwrap();
    assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
    assert_eq!(apply(p)["ctx"]["locale"], "de");

    // Without a kept parent a `*` changes nothing that was kept: no warning.
    let plain = format!(
        "{HEAD}subject: [ctx.*.owner]\nfields:\n  ctx.*.owner: pseudonymise\n  ctx.*.x: keep\n"
    );
    assert!(Policy::parse(&plain, "p.yaml").unwrap().warnings.is_empty());
}

#[test]
fn a_subject_sent_in_another_shape_is_checked_in_that_shape_too() {
    // `a` as an array of objects: `a[]` keeps each element whole, `b` with it.
    one_error(
        &format!("{HEAD}subject: [a.b]\nfields:\n  a.b: pseudonymise\n  a[]: keep\n"),
        4,
        11,
        "subject identifier `a.b` (declared at line 4) passes in clear under `fields` when an event sends its way in another shape",
    );
    // Nested arrays, and an object where the subject's path names an array.
    one_error(
        &format!(
            "{HEAD}subject: [\"items[].email\"]\nfields:\n  items[].email: pseudonymise\n  items[][]: keep\n"
        ),
        4,
        11,
        "passes in clear under `fields` when an event sends its way in another shape",
    );
    one_error(
        &format!(
            "{HEAD}subject: [\"items[].email\"]\nfields:\n  items[].email: pseudonymise\n  items.email: keep\n"
        ),
        4,
        11,
        "in another shape",
    );
    // Each shape has the identifier's own rule: fine.
    Policy::parse(
        &format!("{HEAD}subject: [a.b]\nfields:\n  a.b: pseudonymise\n  a[].b: pseudonymise\n  a[].c: keep\n"),
        "p.yaml",
    )
    .unwrap();
}
