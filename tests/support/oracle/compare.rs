//! Holding an output to an expected one ([`Exp`]).

use serde_json::Value;

use super::*;

/// JSON equality with numbers compared by value.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_value(v, w))
        }
        _ => a == b,
    }
}

pub(crate) fn may_vanish(e: &Exp) -> bool {
    match e {
        Exp::Exact(_) => false,
        Exp::Check { may_vanish, .. } => *may_vanish,
        Exp::Obj(m) => m.iter().all(|(_, e)| may_vanish(e)),
        Exp::Arr(a) => a.iter().all(may_vanish),
    }
}

/// Whether `out` is an acceptable output for `exp`; `Err` explains a difference.
pub fn matches(exp: &Exp, out: &Value) -> Result<(), String> {
    match (exp, out) {
        (Exp::Exact(x), _) if same_value(x, out) => Ok(()),
        (Exp::Check { check, .. }, _) => match check {
            Check::EmbeddedIp { input, v4 } => check_embedded(input, *v4, out),
            Check::Url { base, params } => check_url(base, params, out),
        },
        (Exp::Obj(m), Value::Object(o)) if !o.is_empty() => {
            for (k, v) in o {
                match m.iter().find(|(ek, _)| ek == k) {
                    Some((_, e)) => matches(e, v).map_err(|e| format!("{k}: {e}"))?,
                    None => return Err(format!("member {k:?} should not be there")),
                }
            }
            for (k, e) in m {
                if !o.contains_key(k) && !may_vanish(e) {
                    return Err(format!("member {k:?} is missing"));
                }
            }
            Ok(())
        }
        (Exp::Arr(a), Value::Array(o)) if !o.is_empty() => {
            fn fit(a: &[Exp], o: &[Value]) -> bool {
                match (a.split_first(), o.split_first()) {
                    (None, _) => o.is_empty(),
                    (Some((e, ra)), Some((v, ro))) if matches(e, v).is_ok() && fit(ra, ro) => true,
                    (Some((e, ra)), _) => may_vanish(e) && fit(ra, o),
                }
            }
            if fit(a, o) {
                Ok(())
            } else {
                Err(format!(
                    "array {out} does not fit the expected {}",
                    describe(exp)
                ))
            }
        }
        _ => Err(format!("got {out}, want {}", describe(exp))),
    }
}

/// Match the whole event: an event with nothing left is `{}`.
pub fn matches_event(exp: &Exp, out: &Value) -> Result<(), String> {
    match out {
        Value::Object(o) if o.is_empty() => {
            if may_vanish(exp) {
                Ok(())
            } else {
                Err(format!("got {{}}, want {}", describe(exp)))
            }
        }
        _ => matches(exp, out),
    }
}

/// The expected output as JSON-like text (checks shown as `<...>`).
pub fn describe(e: &Exp) -> String {
    match e {
        Exp::Exact(v) => v.to_string(),
        Exp::Check { check, may_vanish } => {
            let opt = if *may_vanish { " or removed" } else { "" };
            match check {
                Check::EmbeddedIp { input, v4 } => {
                    format!("<{input} with its IPv4 cut to /{v4}{opt}>")
                }
                Check::Url { base, params } => format!("<{base} with {params:?}{opt}>"),
            }
        }
        Exp::Obj(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), describe(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Exp::Arr(a) => format!("[{}]", a.iter().map(describe).collect::<Vec<_>>().join(",")),
    }
}
