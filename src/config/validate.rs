//! Raw config -> [`PipelineConfig`]: every check beyond the YAML shape, all
//! problems collected with their place in the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_saphyr::{Location, Spanned};

use super::spec::{RawConfig, RawExactlyOnce, RawKafka, RawMessageKey, RawSource};
use super::{
    ConfigError, Delivery, FilesPipeline, KafkaPipeline, KafkaSource, KeysConfig, MessageKey,
    MetricsConfig, Pipeline, PipelineConfig, Place, Places, RouteConfig, StageConfig,
    SuppressionConfig, TxnLimits,
};
use crate::engine::Limits;
use crate::files::Role;
use crate::policy::validate::strip_location_prefix;
use crate::policy::{Diagnostic, FieldPath};

/// librdkafka properties veil sets itself: its delivery guarantee depends on them.
const RESERVED: [(&str, &str); 6] = [
    ("bootstrap.servers", "use source.kafka.bootstrap_servers"),
    ("group.id", "use source.kafka.group_id"),
    (
        "enable.auto.offset.store",
        "veil stores an offset only after every output of that message is acknowledged",
    ),
    (
        "enable.auto.commit",
        "veil commits stored offsets itself, on a timer, on revoke and at shutdown",
    ),
    (
        "enable.partition.eof",
        "veil does not use partition EOF events",
    ),
    (
        "transactional.id",
        "with `delivery: exactly_once` veil gives each input partition's producer its own, `<group_id>:<topic>:<partition>`",
    ),
];

/// The default `transaction.timeout.ms` of librdkafka: an open transaction
/// older than this is aborted by the broker.
const TRANSACTION_TIMEOUT_MS_DEFAULT: u64 = 60_000;

struct Checker<'a> {
    file: &'a str,
    base: &'a Path,
    diagnostics: Vec<Diagnostic>,
    places: Places,
}

fn place(at: &Location) -> Place {
    Place {
        line: at.line(),
        column: at.column(),
    }
}

impl Checker<'_> {
    fn error(&mut self, at: &Location, message: impl Into<String>, hint: Option<&str>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    fn path(&self, p: &str) -> PathBuf {
        if p == "-" {
            return PathBuf::from("-");
        }
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn name(&mut self, s: &Spanned<String>, what: &str) -> bool {
        let ok = !s.value.is_empty()
            && s.value.len() <= 249
            && s.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            self.error(
                &s.referenced,
                format!("{what} `{}` is not a valid name", s.value),
                Some("use 1 to 249 letters, digits, `.`, `_` or `-`"),
            );
        }
        ok
    }

    fn bounded(
        &mut self,
        v: &Option<Spanned<u64>>,
        what: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        match v {
            None => default,
            Some(s) if (min..=max).contains(&s.value) => s.value,
            Some(s) => {
                self.error(
                    &s.referenced,
                    format!("{what} is {}; it must be between {min} and {max}", s.value),
                    None,
                );
                default
            }
        }
    }

    fn properties(
        &mut self,
        raw: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
        delivery: Delivery,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            if let Some((_, why)) = RESERVED.iter().find(|(name, _)| *name == k.value) {
                self.error(
                    &k.referenced,
                    format!("librdkafka property `{}` is set by veil", k.value),
                    Some(why),
                );
                continue;
            }
            let text = match &v.value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    self.error(
                        &v.referenced,
                        format!(
                            "librdkafka property `{}` must be a string, number or boolean",
                            k.value
                        ),
                        None,
                    );
                    continue;
                }
            };
            if let Delivery::ExactlyOnce(limits) = delivery {
                self.exactly_once_property(&k, &text, limits);
            }
            out.insert(k.value, text);
        }
        out
    }

    /// A librdkafka property that would break `delivery: exactly_once`.
    fn exactly_once_property(&mut self, k: &Spanned<String>, v: &str, limits: TxnLimits) {
        let v = v.trim();
        let problem = match k.value.as_str() {
            "enable.idempotence" if v != "true" => Some((
                format!("librdkafka property `enable.idempotence` is `{v}`, but `delivery: exactly_once` needs the idempotent producer"),
                "remove it (veil sets `true`), or use `delivery: at_least_once`".to_owned(),
            )),
            "isolation.level" if v != "read_committed" => Some((
                format!("librdkafka property `isolation.level` is `{v}`: with `delivery: exactly_once` veil would forward inputs of upstream transactions that are later aborted"),
                "remove it (veil reads `read_committed`), or use `delivery: at_least_once`".to_owned(),
            )),
            "acks" | "request.required.acks" if !matches!(v, "all" | "-1") => Some((
                format!("librdkafka property `{}` is `{v}`, but transactions need every in-sync replica's acknowledgement", k.value),
                "remove it (the default is `all`), or use `delivery: at_least_once`".to_owned(),
            )),
            "transaction.timeout.ms" => match v.parse::<u64>() {
                Ok(ms) if ms > limits.max_age.as_millis() as u64 => None,
                _ => Some((
                    format!(
                        "librdkafka property `transaction.timeout.ms` is `{v}`: it must be a number of milliseconds greater than exactly_once.max_ms ({})",
                        limits.max_age.as_millis()
                    ),
                    "the broker aborts a transaction open longer than this; give it well above max_ms (librdkafka's default: 60000)".to_owned(),
                )),
            },
            _ => None,
        };
        if let Some((message, hint)) = problem {
            self.error(&k.referenced, message, Some(&hint));
        }
    }
}

pub(super) fn parse(text: &str, file: &Path, base: &Path) -> Result<PipelineConfig, ConfigError> {
    let file_name = file.display().to_string();
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let mut message = strip_location_prefix(&e.without_snippet().to_string());
        // serde's words for a value that fits no form of an untagged enum.
        if message.contains("untagged enum RawMessageKey") {
            message = "message_key must be `pseudonymise`, `drop`, `keep`, `{ from: <path> }` \
                       or `{ keep: { reason: \"...\" } }`"
                .to_owned();
        }
        let hint = message.contains("unknown field").then(|| {
            crate::policy::validate::unknown_field_hint(
                &message,
                "docs/pipeline.md for every key a pipeline config may have",
            )
        });
        ConfigError::Invalid {
            diagnostics: vec![Diagnostic {
                file: file_name.clone(),
                line,
                column,
                message,
                hint,
            }],
        }
    })?;
    let mut c = Checker {
        file: &file_name,
        base,
        diagnostics: Vec::new(),
        places: Places::default(),
    };
    let config = check(&mut c, raw, file);
    if c.diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            diagnostics: c.diagnostics,
        })
    }
}

fn kafka(c: &mut Checker, k: RawKafka, delivery: Delivery) -> KafkaSource {
    if k.bootstrap_servers.value.trim().is_empty() {
        c.error(
            &k.bootstrap_servers.referenced,
            "bootstrap_servers is empty",
            Some("list brokers as `host:port,host:port`"),
        );
    }
    if k.topics.value.is_empty() {
        c.error(
            &k.topics.referenced,
            "no source topics",
            Some("name at least one topic to consume"),
        );
    }
    let mut topics = Vec::new();
    for t in k.topics.value {
        if c.name(&t, "topic") {
            c.places
                .topics
                .entry(t.value.clone())
                .or_insert(place(&t.referenced));
            topics.push(t.value);
        }
    }
    if k.group_id.value.is_empty() {
        c.error(
            &k.group_id.referenced,
            "group_id is empty",
            Some("instances with the same group_id share the partitions"),
        );
    }
    KafkaSource {
        bootstrap_servers: k.bootstrap_servers.value,
        topics,
        group_id: k.group_id.value,
        librdkafka: c.properties(k.librdkafka, delivery),
        producer: c.properties(k.producer, delivery),
        delivery,
    }
}

/// `delivery` and `exactly_once` as written. Exactly-once is a property of
/// Kafka transactions, so a file source cannot have it; settings for it
/// are refused unless it is chosen (they would silently do nothing).
fn delivery(
    c: &mut Checker,
    raw: Option<Spanned<String>>,
    settings: Option<Spanned<RawExactlyOnce>>,
    kafka_source: bool,
) -> Delivery {
    let exactly_once = match &raw {
        None => false,
        Some(d) => match d.value.as_str() {
            "at_least_once" => false,
            "exactly_once" => true,
            other => {
                c.error(
                    &d.referenced,
                    format!("unknown delivery `{other}`"),
                    Some("use `at_least_once` (the default) or `exactly_once`"),
                );
                false
            }
        },
    };
    if exactly_once && !kafka_source {
        if let Some(d) = &raw {
            c.error(
                &d.referenced,
                "delivery `exactly_once` needs a Kafka source: it is made of Kafka transactions, and a file run is not one",
                Some("remove `delivery` (file runs write their outputs whole, or not at all), or read from `source: { kafka: ... }`"),
            );
        }
        return Delivery::AtLeastOnce;
    }
    if !exactly_once {
        if let Some(s) = &settings {
            c.error(
                &s.referenced,
                "`exactly_once` settings are given, but delivery is `at_least_once`",
                Some("add `delivery: exactly_once`, or remove `exactly_once:`"),
            );
        }
        return Delivery::AtLeastOnce;
    }
    let s = settings.map(|s| s.value).unwrap_or_default();
    let max_events = c.bounded(
        &s.max_events,
        "exactly_once.max_events",
        1,
        1_000_000,
        TxnLimits::DEFAULT_MAX_EVENTS,
    );
    // Below librdkafka's default transaction timeout, so that a default
    // config never has the broker abort a transaction for its age.
    let max_ms = c.bounded(
        &s.max_ms,
        "exactly_once.max_ms",
        1,
        TRANSACTION_TIMEOUT_MS_DEFAULT / 2,
        TxnLimits::DEFAULT_MAX_MS,
    );
    Delivery::ExactlyOnce(TxnLimits {
        max_events: max_events as usize,
        max_age: Duration::from_millis(max_ms),
    })
}

/// A file the run reads or writes, where the config names it.
struct FilePlace {
    role: Role,
    path: PathBuf,
    at: Location,
    written: String,
    what: String,
}

impl FilePlace {
    fn new(role: Role, path: &Path, written: &Spanned<String>, what: String) -> FilePlace {
        FilePlace {
            role,
            path: path.to_owned(),
            at: written.referenced,
            written: written.value.clone(),
            what,
        }
    }
}

/// No route or dead-letter file may be the source file or another output,
/// however spelt ([`crate::files::clashes`]).
fn file_clashes(c: &mut Checker, files: &mut [FilePlace]) {
    // Inputs first, so that each clash is reported where an output is named.
    files.sort_by_key(|f| f.role == Role::Output);
    let places: Vec<(Role, &Path)> = files.iter().map(|f| (f.role, f.path.as_path())).collect();
    let mut reported = BTreeSet::new();
    for clash in crate::files::clashes(&places) {
        // Once per place, against the first it clashes with.
        if !reported.insert(clash.second) {
            continue;
        }
        let (a, b) = (&files[clash.first], &files[clash.second]);
        c.error(
            &b.at,
            format!(
                "{} `{}` and {} `{}`: {}",
                b.what, b.written, a.what, a.written, clash.why
            ),
            Some(
                "give each route and the dead letters a file of their own, apart from source.file",
            ),
        );
    }
}

/// A destination's `topic` and `file`: exactly one, of the source's kind
/// (`topic` with a Kafka source, `file` with a file source). Returns the one
/// given, or `None` after reporting what is wrong.
fn destination(
    c: &mut Checker,
    at: &Location,
    what: &str,
    topic: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    kafka_source: bool,
) -> Option<Spanned<String>> {
    match (topic, file) {
        (Some(t), None) if kafka_source => Some(t),
        (None, Some(f)) if !kafka_source => Some(f),
        (Some(t), None) => {
            c.error(
                &t.referenced,
                format!("{what} writes to a topic but the source is a file"),
                Some("with `source: { file: ... }`, write to `file:` too"),
            );
            None
        }
        (None, Some(f)) => {
            c.error(
                &f.referenced,
                format!("{what} writes to a file but the source is Kafka"),
                Some("with a Kafka source, write to `topic:`"),
            );
            None
        }
        (Some(t), Some(_)) => {
            c.error(
                &t.referenced,
                format!("{what} has both `topic` and `file`"),
                Some("give exactly one"),
            );
            None
        }
        (None, None) => {
            let want = if kafka_source { "topic" } else { "file" };
            c.error(
                at,
                format!("{what} has no destination"),
                Some(&format!("add `{want}:`")),
            );
            None
        }
    }
}

/// Every output file must go into a directory that exists: veil creates
/// files, never directories (a mistyped path must not grow a tree), and a
/// run that found out only when opening its outputs would fail after
/// `check` said OK.
fn output_directories(c: &mut Checker, files: &[FilePlace]) {
    for f in files.iter().filter(|f| f.role == Role::Output) {
        if let Some((dir, problem)) = crate::files::unusable_directory(&f.path) {
            c.error(
                &f.at,
                format!(
                    "{} `{}`: directory `{}` {problem}",
                    f.what,
                    f.written,
                    dir.display()
                ),
                Some("create the directory first (veil does not create directories), or write somewhere that exists"),
            );
        }
    }
}

/// The source, before the destinations are checked against its kind.
enum SourceKind {
    Kafka(KafkaSource),
    File(PathBuf),
}

/// A route whose destination is of the source's kind, still as written.
struct CheckedRoute {
    name: String,
    policy: PathBuf,
    to: Spanned<String>,
    key: Option<String>,
    shadow: Option<PathBuf>,
}

fn check(c: &mut Checker, raw: RawConfig, file: &Path) -> PipelineConfig {
    // File mode: every file read or written, for the identity check.
    let mut files: Vec<FilePlace> = Vec::new();
    let kafka_source = matches!(raw.source.value, RawSource::Kafka(_));
    let delivery = delivery(c, raw.delivery, raw.exactly_once, kafka_source);
    let source = match raw.source.value {
        RawSource::Kafka(k) => SourceKind::Kafka(kafka(c, *k, delivery)),
        RawSource::File(f) => {
            let path = c.path(&f.value);
            files.push(FilePlace::new(Role::Input, &path, &f, "source.file".into()));
            SourceKind::File(path)
        }
    };
    let is_kafka = matches!(source, SourceKind::Kafka(_));

    let mut routes = Vec::new();
    let mut names = BTreeSet::new();
    // Kafka mode: every topic produced to (files are compared by identity).
    let mut topics_out: BTreeSet<String> = BTreeSet::new();
    if raw.routes.value.is_empty() {
        c.error(
            &raw.routes.referenced,
            "no routes",
            Some("add at least one route: a name, a policy and a destination"),
        );
    }
    for r in raw.routes.value {
        c.name(&r.name, "route name");
        if !names.insert(r.name.value.clone()) {
            c.error(
                &r.name.referenced,
                format!("route `{}` is defined twice", r.name.value),
                Some("route names label metrics; make them unique"),
            );
        }
        let what = format!("route `{}`", r.name.value);
        let Some(to) = destination(c, &r.name.referenced, &what, r.topic, r.file, is_kafka) else {
            continue;
        };
        if is_kafka {
            if !c.name(&to, "topic") {
                continue;
            }
            c.places
                .topics
                .entry(to.value.clone())
                .or_insert(place(&to.referenced));
            if !topics_out.insert(to.value.clone()) {
                c.error(
                    &r.name.referenced,
                    format!("{what} writes to the same destination as another route"),
                    Some("give each purpose its own topic or file"),
                );
            }
        } else {
            let path = c.path(&to.value);
            files.push(FilePlace::new(
                Role::Output,
                &path,
                &to,
                format!("{what} file"),
            ));
        }
        let policy = c.path(&r.policy.value);
        files.push(FilePlace::new(
            Role::Input,
            &policy,
            &r.policy,
            format!("{what} policy"),
        ));
        let key = r.key.filter(|k| key_id(c, k, &format!("{what} key")));
        let shadow = r.shadow.map(|s| {
            let path = c.path(&s.value);
            if path == policy {
                c.error(
                    &s.referenced,
                    format!("{what}'s shadow policy is its live policy"),
                    Some("name the candidate policy to compare with the live one, or remove `shadow`"),
                );
            }
            files.push(FilePlace::new(
                Role::Input,
                &path,
                &s,
                format!("{what} shadow policy"),
            ));
            path
        });
        routes.push(CheckedRoute {
            name: r.name.value,
            policy,
            to,
            key: key.map(|k| k.value),
            shadow,
        });
    }

    let (message_key, keep_key_reason) = message_key(c, raw.message_key);
    let mut keep_headers = Vec::new();
    for h in raw.headers.keep {
        if h.value.is_empty() || h.value.to_ascii_lowercase().starts_with("veil-") {
            c.error(
                &h.referenced,
                format!("header `{}` cannot be kept", h.value),
                Some("names starting with `veil-` are written by veil itself"),
            );
        } else {
            keep_headers.push(h.value);
        }
    }

    let dl = raw.dead_letter.value;
    let dead = destination(
        c,
        &raw.dead_letter.referenced,
        "dead_letter",
        dl.topic,
        dl.file,
        is_kafka,
    )
    .filter(|d| !is_kafka || c.name(d, "topic"));
    if let Some(d) = dead.as_ref().filter(|_| is_kafka) {
        c.places
            .topics
            .entry(d.value.clone())
            .or_insert(place(&d.referenced));
    }
    if let Some(d) = &dead {
        if !is_kafka {
            let path = c.path(&d.value);
            files.push(FilePlace::new(
                Role::Output,
                &path,
                d,
                "dead_letter.file".into(),
            ));
        } else if topics_out.contains(&d.value) {
            // (No place recorded: the config is refused.)
            c.error(
                &raw.dead_letter.referenced,
                "dead_letter writes to the same destination as a route",
                Some("dead letters need their own topic or file"),
            );
        }
    }
    if let SourceKind::Kafka(k) = &source {
        for t in topics_out.iter().chain(dead.iter().map(|d| &d.value)) {
            if k.topics.contains(t) {
                c.error(
                    &raw.source.referenced,
                    format!("topic `{t}` is both consumed and produced to"),
                    Some("veil would read its own output; use separate topics"),
                );
            }
        }
    }

    let max_age_days = match raw.keys.value.max_age_days {
        Some(d) if !(1..=36_500).contains(&d.value) => {
            c.error(
                &d.referenced,
                format!(
                    "keys.max_age_days is {}; it must be between 1 and 36500",
                    d.value
                ),
                Some("the age in days after which a key in use should be rotated, e.g. 365"),
            );
            KeysConfig::DEFAULT_MAX_AGE_DAYS
        }
        Some(d) => d.value,
        None => KeysConfig::DEFAULT_MAX_AGE_DAYS,
    };
    let keys = KeysConfig {
        dir: c.path(&raw.keys.value.dir.value),
        active: raw.keys.value.active.map(|a| a.value),
        max_age: Duration::from_secs(max_age_days * 86_400),
    };
    let suppression = raw.suppression.map(|s| {
        let at = s.referenced;
        let s = s.value;
        if s.files.is_empty() && s.topic.is_none() {
            c.error(
                &at,
                "suppression names no source",
                Some("give `files: [FILE, ...]` (raw identifiers) and/or `topic: NAME` (token lines)"),
            );
        }
        let mut paths = Vec::new();
        for f in &s.files {
            let path = c.path(&f.value);
            files.push(FilePlace::new(
                Role::Input,
                &path,
                f,
                "suppression file".into(),
            ));
            paths.push(path);
        }
        let topic = s.topic.filter(|t| {
            if !is_kafka {
                c.error(
                    &t.referenced,
                    "suppression.topic needs a Kafka source",
                    Some("with a file source, list the identifiers in `suppression.files`"),
                );
                return false;
            }
            if !c.name(t, "topic") {
                return false;
            }
            let clash = topics_out.contains(&t.value)
                || dead.as_ref().is_some_and(|d| d.value == t.value)
                || matches!(&source, SourceKind::Kafka(k) if k.topics.contains(&t.value));
            if clash {
                c.error(
                    &t.referenced,
                    format!("suppression topic `{}` is also consumed or produced to", t.value),
                    Some("the suppression list needs a topic of its own"),
                );
                return false;
            }
            c.places
                .topics
                .entry(t.value.clone())
                .or_insert(place(&t.referenced));
            true
        });
        let key = s.key.filter(|k| key_id(c, k, "suppression.key"));
        SuppressionConfig {
            files: paths,
            topic: topic.map(|t| t.value),
            key: key.map(|k| k.value),
        }
    });
    if !is_kafka {
        // Inputs are never where a clash is reported: any place will do.
        let at = raw.keys.value.dir.referenced;
        for path in crate::keys::key_file_paths(&keys.dir) {
            let written = Spanned::new(path.display().to_string(), at, at);
            files.push(FilePlace::new(
                Role::Input,
                &path,
                &written,
                "key file".into(),
            ));
        }
        let written = Spanned::new(file.display().to_string(), at, at);
        files.push(FilePlace::new(
            Role::Input,
            file,
            &written,
            "the config file".into(),
        ));
        file_clashes(c, &mut files);
        output_directories(c, &files);
    }

    let defaults = Limits::default();
    let limits = Limits {
        max_message_bytes: c.bounded(
            &raw.limits.max_message_bytes,
            "limits.max_message_bytes",
            1,
            Limits::MAX_MESSAGE_BYTES as u64,
            defaults.max_message_bytes as u64,
        ) as usize,
        max_depth: c.bounded(
            &raw.limits.max_depth,
            "limits.max_depth",
            1,
            u64::from(Limits::MAX_DEPTH),
            u64::from(defaults.max_depth),
        ) as u32,
    };
    let max_in_flight = c.bounded(
        &raw.limits.max_in_flight,
        "limits.max_in_flight",
        1,
        1_000_000,
        10_000,
    ) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let workers = c.bounded(&raw.workers, "workers", 1, 256, cores) as usize;
    let drain = c.bounded(
        &raw.shutdown.drain_timeout_seconds,
        "shutdown.drain_timeout_seconds",
        1,
        3600,
        30,
    );
    let stall_after = c.bounded(
        &raw.limits.stall_after_seconds,
        "limits.stall_after_seconds",
        1,
        86_400,
        60,
    );

    // A Kafka service serves metrics by default; a one-shot file run only
    // when asked. `off` turns the endpoint off.
    let default_listen = is_kafka.then_some(DEFAULT_METRICS_LISTEN);
    let listen = match raw.metrics.listen {
        None => default_listen.map(|a| a.parse().expect("valid default address")),
        Some(l) if l.value == "off" => None,
        Some(l) => match l.value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.error(
                    &l.referenced,
                    format!("metrics.listen `{}` is not an address", l.value),
                    Some(
                        "write `host:port` with an IP, e.g. 127.0.0.1:9464 or 0.0.0.0:9464 (port 0: any free port), or `off`",
                    ),
                );
                None
            }
        },
    };

    // A missing dead letter destination was reported above: the config is
    // refused, and the placeholder below is never used.
    let dead = dead.map(|d| d.value).unwrap_or_default();
    let pipeline = match source {
        SourceKind::Kafka(source) => Pipeline::Kafka(KafkaPipeline {
            source,
            routes: routes
                .into_iter()
                .map(|r| RouteConfig {
                    name: r.name,
                    policy: r.policy,
                    to: r.to.value,
                    key: r.key,
                    shadow: r.shadow,
                })
                .collect(),
            dead_letter_topic: dead,
            max_in_flight,
            workers,
            drain_timeout: Duration::from_secs(drain),
            stall_after: Duration::from_secs(stall_after),
        }),
        SourceKind::File(input) => Pipeline::Files(FilesPipeline {
            input,
            routes: routes
                .into_iter()
                .map(|r| RouteConfig {
                    name: r.name,
                    policy: r.policy,
                    to: c.path(&r.to.value),
                    key: r.key,
                    shadow: r.shadow,
                })
                .collect(),
            dead_letter_file: c.path(&dead),
        }),
    };
    PipelineConfig {
        file: file.to_owned(),
        pipeline,
        stage: StageConfig {
            message_key,
            keep_headers,
            include_payload: dl.include_payload,
            limits,
        },
        keys,
        metrics: MetricsConfig { listen },
        suppression,
        keep_key_reason,
        places: std::mem::take(&mut c.places),
    }
}

/// `message_key` as written: the mode, and for `{ keep: { reason } }` the
/// reason (which must say something). Whether the mode suits the routes'
/// policies is checked once they are loaded ([`super::check_message_key`]).
fn message_key(
    c: &mut Checker,
    raw: Option<Spanned<RawMessageKey>>,
) -> (MessageKey, Option<String>) {
    let Some(s) = raw else {
        return (MessageKey::Pseudonymise, None);
    };
    c.places.message_key = Some(place(&s.referenced));
    let key = match s.value {
        RawMessageKey::Mode(m) => match m.as_str() {
            "keep" => MessageKey::Keep,
            "drop" => MessageKey::Drop,
            "pseudonymise" | "pseudonymize" => MessageKey::Pseudonymise,
            other => {
                c.error(
                    &s.referenced,
                    format!("unknown message_key `{other}`"),
                    Some("use pseudonymise, drop, { from: <path> }, keep, or { keep: { reason: \"...\" } }"),
                );
                MessageKey::Pseudonymise
            }
        },
        RawMessageKey::Keep { keep } => {
            let reason = keep.reason.unwrap_or_default();
            if reason.trim().is_empty() {
                c.error(
                    &s.referenced,
                    "message_key `keep` needs a reason: it copies raw Kafka keys in clear",
                    Some("write `message_key: { keep: { reason: \"why the keys hold no personal data\" } }`, or use pseudonymise or drop"),
                );
                return (MessageKey::Pseudonymise, None);
            }
            return (MessageKey::Keep, Some(reason.trim().to_owned()));
        }
        RawMessageKey::From { from } => match FieldPath::parse(&from) {
            Ok(p) if p.is_exact() => MessageKey::From(p),
            Ok(_) => {
                c.error(&s.referenced, format!("message_key path `{from}` must name one place; `*` and `[]` are not allowed"), None);
                MessageKey::Pseudonymise
            }
            Err(e) => {
                c.error(
                    &s.referenced,
                    format!("bad message_key path `{from}`: {e}"),
                    None,
                );
                MessageKey::Pseudonymise
            }
        },
    };
    (key, None)
}

/// Where a Kafka service serves `/metrics`, `/healthz` and `/readyz` unless
/// `metrics.listen` says otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Whether `k` is a key id (the name of a `<id>.key` file); reported if not.
fn key_id(c: &mut Checker, k: &Spanned<String>, what: &str) -> bool {
    let ok = crate::keys::id_ok(&k.value);
    if !ok {
        c.error(
            &k.referenced,
            format!("{what} `{}` is not a key id", k.value),
            Some("key ids are letters, digits, `.`, `_`, `-`, as the file names `<id>.key`"),
        );
    }
    ok
}
