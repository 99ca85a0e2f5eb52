//! The JSON Schema of the policy file, generated from [`crate::policy::spec`]
//! so it cannot drift from what veil accepts (a test compares it with the
//! copy in `docs/policy.schema.json`).

use crate::policy::spec::RawPolicy;

/// The schema as pretty-printed JSON, with a trailing newline.
pub fn policy_schema_json() -> String {
    let schema = schemars::schema_for!(RawPolicy);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}
