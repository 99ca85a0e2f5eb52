//! What a pipeline config adds to its policies' inventories: where each
//! route's data goes and under which key, the shadow policies, the
//! suppression list, what dead letters and output keys carry, and the
//! delivery guarantee. Read from the config alone: explaining a deployment
//! never needs its keys.

use serde_json::{Value, json};

use crate::Policy;
use crate::config::{Delivery, MessageKey, Pipeline, PipelineConfig};

/// The deployment of `config`, each route's policy (`policies`, in route
/// order) as its [`super::json`] inventory.
pub fn json(config: &PipelineConfig, policies: &[Policy]) -> Value {
    let active = config.keys.active.as_deref();
    let key_of = |k: Option<&String>| {
        k.map(String::as_str)
            .or(active)
            .map_or_else(|| json!(null), |k| json!(k))
    };
    let shadows = config.shadows();
    let route = |i: usize, name: &str, to: String, key: Option<&String>| {
        json!({
            "name": name,
            "destination": to,
            "key_id": key_of(key),
            "shadow": shadows.iter().find(|(r, _)| *r == i).map(|(_, p)| p.display().to_string()),
            "inventory": policies.get(i).map(super::json),
        })
    };
    let (routes, dead_letters, delivery, source) = match &config.pipeline {
        Pipeline::Kafka(k) => (
            k.routes
                .iter()
                .enumerate()
                .map(|(i, r)| route(i, &r.name, format!("Kafka topic {}", r.to), r.key.as_ref()))
                .collect::<Vec<_>>(),
            format!("Kafka topic {}", k.dead_letter_topic),
            match k.source.delivery {
                Delivery::AtLeastOnce => "at_least_once",
                Delivery::ExactlyOnce(_) => "exactly_once",
            },
            format!("Kafka topics {}", k.source.topics.join(", ")),
        ),
        Pipeline::Files(f) => (
            f.routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    route(
                        i,
                        &r.name,
                        format!("file {}", r.to.display()),
                        r.key.as_ref(),
                    )
                })
                .collect(),
            format!("file {}", f.dead_letter_file.display()),
            "files",
            format!("file {}", f.input.display()),
        ),
    };
    json!({
        "config": config.file.display().to_string(),
        "source": source,
        "routes": routes,
        "dead_letters": {
            "destination": dead_letters,
            "include_payload": config.stage.include_payload,
        },
        "message_key": match &config.stage.message_key {
            MessageKey::Keep => "kept in clear".to_owned(),
            MessageKey::Drop => "removed".to_owned(),
            MessageKey::Pseudonymise => "pseudonymised".to_owned(),
            MessageKey::From(p) => format!("the clean event's `{p}`"),
        },
        "keep_key_reason": config.keep_key_reason,
        "kept_headers": config.stage.keep_headers,
        "keys": {
            "active": active,
            "max_age_days": config.keys.max_age.as_secs() / 86_400,
        },
        "suppression": config.suppression.as_ref().map(|s| json!({
            "files": s.files.len(),
            "topic": s.topic,
            "key_id": key_of(s.key.as_ref()),
        })),
        "delivery": delivery,
    })
}

/// The deployment as Markdown: its settings, then each route's inventory
/// ([`super::markdown`], headings one level down).
pub fn markdown(d: &Value, policies: &[Policy]) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_owned(),
        v => v.to_string(),
    };
    let mut out = format!("# Deployment: {}\n\n", s(&d["config"]));
    out.push_str(&format!(
        "- Events from {}; delivery: {}.\n",
        s(&d["source"]),
        s(&d["delivery"])
    ));
    for r in d["routes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "- Route `{}`: {}, policy `{}`, pseudonyms under key {}{}.\n",
            s(&r["name"]),
            s(&r["destination"]),
            s(&r["inventory"]["policy"]["id"]),
            if r["key_id"].is_null() {
                "the active key".to_owned()
            } else {
                format!("`{}`", s(&r["key_id"]))
            },
            if r["shadow"].is_null() {
                String::new()
            } else {
                format!(
                    "; shadow policy `{}` compared, never produced",
                    s(&r["shadow"])
                )
            },
        ));
    }
    let dl = &d["dead_letters"];
    out.push_str(&format!(
        "- Dead letters: {}; {}.\n",
        s(&dl["destination"]),
        if dl["include_payload"].as_bool() == Some(true) {
            "**they hold the raw event** (`include_payload: true`)"
        } else {
            "reason and source only, never the raw event"
        }
    ));
    out.push_str(&format!(
        "- Kafka record keys are {}.\n",
        s(&d["message_key"])
    ));
    out.push_str(&format!(
        "- Keys: active {}; rotation alerted on after {} days (keys themselves are never shown).\n",
        match &d["keys"]["active"] {
            Value::Null => "the directory's only key".to_owned(),
            v => format!("`{}`", s(v)),
        },
        s(&d["keys"]["max_age_days"])
    ));
    let sup = &d["suppression"];
    if sup.is_null() {
        out.push_str("- Suppression (opt-outs): none configured.\n");
    } else {
        out.push_str(&format!(
            "- Suppression (opt-outs): {} file(s), topic {}, keyed tokens under {}.\n",
            s(&sup["files"]),
            s(&sup["topic"]),
            s(&sup["key_id"])
        ));
    }
    for (r, p) in d["routes"].as_array().into_iter().flatten().zip(policies) {
        out.push_str(&format!("\n# Route `{}`\n\n", s(&r["name"])));
        // One level down: the route's heading is the page's `#`.
        for line in super::markdown(p).lines() {
            if line.starts_with('#') {
                out.push('#');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
