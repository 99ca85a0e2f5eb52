//! Do the topics a pipeline names exist? Asked of the broker's metadata,
//! one topic at a time, under one deadline: by `veil check --connect`, and
//! by `veil run` before it starts consuming (a missing output topic would
//! otherwise stall the first partition that produced to it, with nothing
//! but produce errors to say why).
//!
//! The check must not create what it looks for: the client it uses sets
//! `allow.auto.create.topics=false`, so its metadata requests ask the broker
//! not to create the topics they name (brokers older than 0.11 cannot be
//! asked; librdkafka warns). A topic whose metadata carries
//! `UNKNOWN_TOPIC_OR_PARTITION` is missing; any other per-topic error
//! (authorisation, a leader election) is not this check's business.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::{KafkaSource, Pipeline, PipelineConfig};

/// What a topic is to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Source,
    Route(String),
    DeadLetter,
    Suppression,
}

impl Role {
    /// The config setting that names a topic of this role.
    pub fn setting(&self) -> String {
        match self {
            Role::Source => "source.kafka.topics".to_owned(),
            Role::Route(name) => format!("route `{name}`'s topic"),
            Role::DeadLetter => "dead_letter.topic".to_owned(),
            Role::Suppression => "suppression.topic".to_owned(),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Source => f.write_str("source topic"),
            Role::Route(name) => write!(f, "route `{name}` topic"),
            Role::DeadLetter => f.write_str("dead-letter topic"),
            Role::Suppression => f.write_str("suppression topic"),
        }
    }
}

/// A topic the pipeline names, its role, and where the config names it
/// (`file:line:column`, for the message).
#[derive(Debug, Clone)]
pub struct Wanted {
    pub topic: String,
    pub role: Role,
    pub at: Option<String>,
}

/// Why the topics cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// One line per missing topic.
    #[error("{}", lines(bootstrap, missing))]
    Missing {
        bootstrap: String,
        missing: Vec<Wanted>,
    },
    // The librdkafka error is in the message, not a `source()`: `{:#}`
    // would print it twice.
    #[error(
        "cannot ask the broker ({bootstrap}) which topics exist within {}s: {error}",
        timeout.as_secs()
    )]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        error: String,
    },
}

fn lines(bootstrap: &str, missing: &[Wanted]) -> String {
    let line = |w: &Wanted| {
        let at =
            w.at.as_ref()
                .map(|at| format!(" at {at}"))
                .unwrap_or_default();
        format!(
            "{} `{}` does not exist on the broker ({bootstrap}): create it, or fix {}{at}",
            w.role,
            w.topic,
            w.role.setting()
        )
    };
    missing.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Every topic a Kafka pipeline names: its sources, each route's topic and
/// the dead letters, with their places in the config. Empty for files.
pub fn wanted(config: &PipelineConfig) -> Vec<Wanted> {
    let Pipeline::Kafka(k) = &config.pipeline else {
        return Vec::new();
    };
    let at = |t: &str| config.places.topics.get(t).map(|p| config.at(*p));
    let sources = k.source.topics.iter().map(|t| (t, Role::Source));
    let routes = k
        .routes
        .iter()
        .map(|r| (&r.to, Role::Route(r.name.clone())));
    let dead = std::iter::once((&k.dead_letter_topic, Role::DeadLetter));
    let suppression = config
        .suppression
        .iter()
        .filter_map(|s| s.topic.as_ref())
        .map(|t| (t, Role::Suppression));
    sources
        .chain(routes)
        .chain(dead)
        .chain(suppression)
        .map(|(topic, role)| Wanted {
            topic: topic.clone(),
            role,
            at: at(topic),
        })
        .collect()
}

/// Ask the broker, within `timeout` in all, whether every `wanted` topic
/// exists. Blocking (librdkafka's metadata call); a reachable broker
/// answers in milliseconds.
pub fn check(src: &KafkaSource, wanted: &[Wanted], timeout: Duration) -> Result<(), TopicsError> {
    let unreachable = |error: String| TopicsError::Unreachable {
        bootstrap: src.bootstrap_servers.clone(),
        timeout,
        error,
    };
    let mut config = super::consumer_config(src);
    // The check looks; it must never create.
    config.set("allow.auto.create.topics", "false");
    let client: BaseConsumer = config.create().map_err(|e| unreachable(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut missing = Vec::new();
    for w in wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        let md = client
            .fetch_metadata(Some(&w.topic), left)
            .map_err(|e| unreachable(e.to_string()))?;
        let unknown = md.topics().iter().any(|t| {
            t.name() == w.topic
                && t.error().map(RDKafkaErrorCode::from)
                    == Some(RDKafkaErrorCode::UnknownTopicOrPartition)
        });
        if unknown {
            missing.push(w.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TopicsError::Missing {
            bootstrap: src.bootstrap_servers.clone(),
            missing,
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_names_its_role_setting_and_place() {
        let e = TopicsError::Missing {
            bootstrap: "localhost:9092".into(),
            missing: vec![
                Wanted {
                    topic: "dead".into(),
                    role: Role::DeadLetter,
                    at: Some("pipeline.yaml:12:10".into()),
                },
                Wanted {
                    topic: "clean".into(),
                    role: Role::Route("analytics".into()),
                    at: None,
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "dead-letter topic `dead` does not exist on the broker (localhost:9092): create it, or fix dead_letter.topic at pipeline.yaml:12:10\n\
             route `analytics` topic `clean` does not exist on the broker (localhost:9092): create it, or fix route `analytics`'s topic"
        );
    }
}
