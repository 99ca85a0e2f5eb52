//! Sample events through two policies (`veil diff --events`): how many
//! verdicts and how many values, per path, the change would alter (pure).
//! Both policies use the test key ([`crate::keys::test_key`]), so a
//! pseudonym differs only where the purpose or pseudonym options do.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::engine::{CompiledPolicy, Scratch};
use crate::outcome::Outcome;

/// What replaying the events found.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub events: u64,
    /// `old verdict -> new verdict` (`forwarded`, `dropped (no_consent)`,
    /// `dead letter (invalid_json)`) -> events, where they differ.
    pub verdicts: BTreeMap<String, u64>,
    /// Per path (array elements as `[]`), how many events forwarded by both
    /// have a different value there, or a value in only one of them.
    pub values: BTreeMap<String, u64>,
}

impl Replay {
    /// Replay one event through both policies.
    pub fn add(
        &mut self,
        old: &CompiledPolicy,
        new: &CompiledPolicy,
        event: &[u8],
        scratch: &mut Scratch,
    ) {
        self.events += 1;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let va = old.apply(event, &mut a, scratch).outcome;
        let vb = new.apply(event, &mut b, scratch).outcome;
        if va != vb {
            let key = format!("{} -> {}", verdict(&va), verdict(&vb));
            *self.verdicts.entry(key).or_default() += 1;
        }
        if va != Outcome::Forwarded || vb != Outcome::Forwarded {
            return;
        }
        let (Ok(a), Ok(b)) = (
            serde_json::from_slice::<Value>(&a),
            serde_json::from_slice::<Value>(&b),
        ) else {
            return;
        };
        let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
        flatten(&a, &mut String::new(), &mut fa);
        flatten(&b, &mut String::new(), &mut fb);
        let mut changed: Vec<&String> = fa
            .iter()
            .filter(|(k, v)| fb.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(fb.keys().filter(|k| !fa.contains_key(*k)))
            .collect();
        changed.sort();
        changed.dedup();
        for path in changed {
            *self.values.entry(path.clone()).or_default() += 1;
        }
    }
}

fn verdict(o: &Outcome) -> String {
    match o {
        Outcome::Forwarded => "forwarded".to_owned(),
        Outcome::Dropped(r) => format!("dropped ({})", r.code()),
        Outcome::Rejected(r) => format!("dead letter ({})", r.reason.code()),
    }
}

/// Leaf values by path; the elements of an array are gathered under
/// `path[]` as one list, so a path counts an event once.
fn flatten(v: &Value, path: &mut String, out: &mut BTreeMap<String, Vec<Value>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let len = path.len();
                crate::cases::push_key(path, k);
                flatten(v, path, out);
                path.truncate(len);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let len = path.len();
            path.push_str("[]");
            for v in a {
                flatten(v, path, out);
            }
            path.truncate(len);
        }
        leaf => out.entry(path.clone()).or_default().push(leaf.clone()),
    }
}
