//! The inventory as one self-contained HTML page a privacy team can
//! publish: no script, no external asset (styles inline), every text from
//! the policy escaped. Rendered from the JSON inventory ([`super::json`],
//! [`super::deployment::json`]), so the page and the JSON cannot disagree.

use std::fmt::Write as _;

use serde_json::Value;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped: safe in element content
/// and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d232b;max-width:70rem;margin:2rem auto;padding:0 1.5rem}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:2px solid #dde3ea;padding-bottom:.2rem}\
h3{font-size:1.05rem;margin-top:1.6rem}table{border-collapse:collapse;width:100%;margin:.6rem 0 1rem}\
th,td{border:1px solid #dde3ea;padding:.35rem .55rem;text-align:left;vertical-align:top}th{background:#f3f6f9}\
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f3f6f9;padding:0 .2rem;border-radius:3px}\
.meta{color:#5b6775}.tag{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;font-weight:600}\
.kept{background:#fde7c8;color:#7a4100}.pseudonymised{background:#d9ecff;color:#0b4a8b}.generalised{background:#e5f5e0;color:#205c16}\
.removed{background:#eceff3;color:#4b5663}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.5rem .8rem}\
footer{margin-top:3rem;color:#5b6775;font-size:.85rem}";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        v => escape(&v.to_string()),
    }
}

/// [`text`], with `` `code` `` spans (as the inventory's sentences write
/// them) set as code; an unpaired backtick stays as it is.
fn prose(v: &Value) -> String {
    let t = text(v);
    let parts: Vec<&str> = t.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return t; // unpaired
    }
    let mut out = String::with_capacity(t.len() + 16);
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn code(v: &Value) -> String {
    format!("<code>{}</code>", text(v))
}

fn tag(treatment: &Value) -> String {
    let t = treatment.as_str().unwrap_or("");
    let class = match t {
        "kept" | "pseudonymised" | "generalised" | "removed" => t,
        _ => "removed",
    };
    format!("<span class=\"tag {class}\">{}</span>", escape(t))
}

fn fields_table(out: &mut String, fields: &Value) {
    out.push_str("<table><thead><tr><th>Field</th><th>Treatment</th><th>What reaches the recipient</th><th>Why</th></tr></thead><tbody>\n");
    for f in fields.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            code(&f["path"]),
            tag(&f["treatment"]),
            if f["scan"].is_null() {
                prose(&f["description"])
            } else {
                format!(
                    "{} (scan <code>{}</code>)",
                    prose(&f["description"]),
                    text(&f["scan"])
                )
            },
            prose(&f["why"])
        );
    }
    out.push_str("<tr><td><em>anything else</em></td><td><span class=\"tag removed\">removed</span></td><td>nothing: fields not listed are deleted</td><td>data minimisation</td></tr>\n</tbody></table>\n");
}

/// One policy's inventory, under headings of `level` (2 or 3).
fn inventory(out: &mut String, inv: &Value, level: u8) {
    let h = |out: &mut String, title: &str| {
        let _ = writeln!(out, "<h{level}>{}</h{level}>", escape(title));
    };
    let p = &inv["policy"];
    let _ = writeln!(
        out,
        "<p>Policy {} (version {}), purpose <strong>{}</strong>. Policy file SHA-256: {}.</p>",
        code(&p["name"]),
        text(&p["version"]),
        text(&p["purpose"]),
        code(&p["sha256"])
    );
    h(out, "Consent");
    let consent = inv["consent"]["summary"].as_str().unwrap_or(
        "No consent rule: every event is processed for this purpose (the policy declares none).",
    );
    let _ = writeln!(out, "<p>{}</p>", prose(&Value::from(consent)));
    h(out, "Identifiers");
    let subject: Vec<String> = inv["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .map(code)
        .collect();
    if subject.is_empty() {
        out.push_str("<p>No subject identifiers are declared.</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p>The data subject is identified by {}. None of these is ever forwarded in clear; with a suppression list, an event any of whose identifiers is on it is dropped.</p>",
            subject.join(", ")
        );
    }
    let ps = &inv["pseudonyms"];
    let _ = writeln!(
        out,
        "<p>Pseudonyms: HMAC-SHA256 under a key specific to the purpose, {} bytes, {}{}.</p>",
        text(&ps["truncate_bytes"]),
        text(&ps["encoding"]),
        if ps["key_id_prefix"].as_bool() == Some(true) {
            ", prefixed with the key id"
        } else {
            ""
        }
    );
    let rules = inv["rules"].as_array().map_or(&[][..], Vec::as_slice);
    if !inv["fields"].is_null() {
        h(
            out,
            if rules.is_empty() {
                "Fields"
            } else {
                "Fields (events matching no rule)"
            },
        );
        fields_table(out, &inv["fields"]);
    }
    for (i, r) in rules.iter().enumerate() {
        let when: Vec<String> = r["when"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let values: Vec<String> = c["any_of"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(code)
                    .collect();
                format!("{} is {}", code(&c["path"]), values.join(" or "))
            })
            .collect();
        let _ = writeln!(
            out,
            "<h{level}>Rule {}: when {}</h{level}>",
            i + 1,
            when.join(" and ")
        );
        if r["drop"].as_bool() == Some(true) {
            out.push_str("<p>Such events are dropped entirely.</p>\n");
        } else if r["fields"].is_null() {
            out.push_str("<p>Such events use the default fields above.</p>\n");
        } else {
            fields_table(out, &r["fields"]);
        }
    }
    if !rules.is_empty() && inv["fields"].is_null() {
        out.push_str("<p>Events matching no rule are dropped.</p>\n");
    }
    if !inv["scan_summary"].is_null() {
        h(out, "Content scan");
        let _ = writeln!(out, "<p>{}</p>", prose(&inv["scan_summary"]));
    }
    h(out, "Sensitive data waivers");
    let waivers = inv["waivers"].as_array().map_or(&[][..], Vec::as_slice);
    if waivers.is_empty() {
        out.push_str("<p>None: no field of a special category (GDPR Art. 9), precise location, government identifier, payment data or credential is kept or generalised.</p>\n");
    } else {
        out.push_str("<p>These fields of sensitive categories flow by a written decision:</p>\n<table><thead><tr><th>Field</th><th>Category</th><th>Reason</th><th>Line</th></tr></thead><tbody>\n");
        for w in waivers {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                code(&w["path"]),
                text(&w["category_label"]),
                prose(&w["reason"]),
                text(&w["line"])
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">Every forwarded event carries the header <code>veil-policy: {}</code>, so each row in the warehouse can be traced to this page.</p>",
        text(&p["id"])
    );
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"veil {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\
         <footer>Generated by veil {} (<code>veil explain --format html</code>) from the policy files themselves: what it says is what veil enforces.</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title),
        env!("CARGO_PKG_VERSION"),
    )
}

/// The page for one policy's inventory ([`super::json`]).
pub fn policy_page(inv: &Value) -> String {
    let title = format!(
        "Data inventory: {} (version {})",
        inv["policy"]["name"].as_str().unwrap_or(""),
        inv["policy"]["version"]
    );
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    inventory(&mut body, inv, 2);
    page(&title, &body)
}

/// The page for a deployment ([`super::deployment::json`]): its settings,
/// then each route's inventory.
pub fn deployment_page(d: &Value) -> String {
    let title = format!("Data inventory: {}", d["config"].as_str().unwrap_or(""));
    let mut b = format!(
        "<h1>{}</h1>\n<h2>Deployment</h2>\n<table><tbody>\n",
        escape(&title)
    );
    let row = |b: &mut String, k: &str, v: String| {
        let _ = writeln!(b, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
    };
    row(&mut b, "Events from", text(&d["source"]));
    let delivery = match d["delivery"].as_str() {
        Some("exactly_once") => "exactly once (Kafka transactions)",
        Some("at_least_once") => "at least once",
        _ => "files, once per run",
    };
    row(&mut b, "Delivery", escape(delivery));
    for r in d["routes"].as_array().into_iter().flatten() {
        let shadow = if r["shadow"].is_null() {
            String::new()
        } else {
            format!(
                "; shadow policy {} compared, never produced",
                code(&r["shadow"])
            )
        };
        row(
            &mut b,
            &format!("Route {}", r["name"].as_str().unwrap_or("")),
            format!(
                "{}, policy {}, pseudonyms under key {}{shadow}",
                text(&r["destination"]),
                code(&r["inventory"]["policy"]["id"]),
                if r["key_id"].is_null() {
                    "the active key".to_owned()
                } else {
                    code(&r["key_id"])
                }
            ),
        );
    }
    let dl = &d["dead_letters"];
    row(
        &mut b,
        "Dead letters",
        format!(
            "{}; {}",
            text(&dl["destination"]),
            if dl["include_payload"].as_bool() == Some(true) {
                "<strong>they hold the raw event</strong> (<code>include_payload: true</code>): restrict access to them as to the raw topic"
            } else {
                "reason and source only, never the raw event"
            }
        ),
    );
    let mut key = format!("Kafka record keys are {}", text(&d["message_key"]));
    if !d["keep_key_reason"].is_null() {
        let _ = write!(key, " (why: {})", text(&d["keep_key_reason"]));
    }
    row(&mut b, "Record keys", key);
    let headers: Vec<String> = d["kept_headers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(code)
        .collect();
    row(
        &mut b,
        "Record headers",
        if headers.is_empty() {
            "none of the input's are copied".to_owned()
        } else {
            format!("copied from the input: {}", headers.join(", "))
        },
    );
    let k = &d["keys"];
    row(
        &mut b,
        "Keys",
        format!(
            "active key {}; a key in use longer than {} days is alerted on for rotation (keys themselves are never shown)",
            if k["active"].is_null() {
                "(the directory's only key)".to_owned()
            } else {
                code(&k["active"])
            },
            text(&k["max_age_days"])
        ),
    );
    let s = &d["suppression"];
    row(
        &mut b,
        "Suppression (opt-outs)",
        if s.is_null() {
            "none configured".to_owned()
        } else {
            format!(
                "{} file(s){}; identifiers compared as keyed tokens under {}",
                text(&s["files"]),
                if s["topic"].is_null() {
                    String::new()
                } else {
                    format!(" and Kafka topic {}", code(&s["topic"]))
                },
                if s["key_id"].is_null() {
                    "the active key".to_owned()
                } else {
                    code(&s["key_id"])
                }
            )
        },
    );
    b.push_str("</tbody></table>\n");
    for r in d["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            b,
            "<h2>Route {}: {}</h2>",
            escape(r["name"].as_str().unwrap_or("")),
            text(&r["destination"])
        );
        inventory(&mut b, &r["inventory"], 3);
    }
    page(&title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x&y's")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;y&#39;s&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn backtick_spans_become_code_and_stay_escaped() {
        let v = Value::from("keep `a<b>` and `c`");
        assert_eq!(prose(&v), "keep <code>a&lt;b&gt;</code> and <code>c</code>");
        let odd = Value::from("one ` only <x>");
        assert_eq!(prose(&odd), "one ` only &lt;x&gt;");
    }
}
