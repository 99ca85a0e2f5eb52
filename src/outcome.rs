//! What became of one event: forwarded, dropped by policy, or rejected as bad
//! input. Reason codes are fixed strings: they are metric label values and
//! dead-letter reasons, and never carry event content.

use std::fmt;

/// The verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The clean event was written to the output buffer.
    Forwarded,
    /// The policy decided the event must not reach this purpose.
    Dropped(DropReason),
    /// The input is not an event veil can read; it belongs in the dead letters.
    Rejected(Reject),
}

/// What one route of a stage made of an input that was not rejected (a
/// rejection concerns the input as a whole, never one route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    Forwarded,
    Dropped(DropReason),
}

/// Why the policy dropped an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// `consent` is set and the purposes array lacks the purpose, is missing or malformed.
    NoConsent,
    /// The opt-out flag is `true` (or not a boolean: fail closed).
    OptedOut,
    /// `rules` exist, none matched, and there is no default `fields`.
    NoRule,
    /// The first matching rule says `drop: true`.
    ByRule,
    /// A subject value is on the suppression (opt-out) list.
    Suppressed,
    /// A string kept under `scan: drop_event` holds something the content
    /// scanner detects (an e-mail address, a card number, ...).
    Scan,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::NoConsent,
        DropReason::OptedOut,
        DropReason::NoRule,
        DropReason::ByRule,
        DropReason::Suppressed,
        DropReason::Scan,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DropReason::NoConsent => "no_consent",
            DropReason::OptedOut => "opted_out",
            DropReason::NoRule => "no_rule",
            DropReason::ByRule => "by_rule",
            DropReason::Suppressed => "suppressed",
            DropReason::Scan => "scan",
        }
    }
}

/// Why an input was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    InvalidJson,
    InvalidUtf8,
    NotObject,
    TooDeep,
    TooLarge,
    DuplicateKey,
    /// veil panicked while processing the input: a bug in veil, not
    /// necessarily anything wrong with the input. The input is
    /// dead-lettered so the stream moves on; nothing of it is forwarded.
    InternalError,
    /// A clean event (or its dead-letter record) is larger than the
    /// producer may send (`message.max.bytes`), or the broker refused it
    /// as too large for the topic.
    OutputTooLarge,
    /// The broker refused an output record permanently (an invalid record,
    /// a topic policy violation) after bounded retries.
    RejectedByBroker,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::InvalidJson,
        RejectReason::InvalidUtf8,
        RejectReason::NotObject,
        RejectReason::TooDeep,
        RejectReason::TooLarge,
        RejectReason::DuplicateKey,
        RejectReason::InternalError,
        RejectReason::OutputTooLarge,
        RejectReason::RejectedByBroker,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::NotObject => "not_object",
            RejectReason::TooDeep => "too_deep",
            RejectReason::TooLarge => "too_large",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::InternalError => "internal_error",
            RejectReason::OutputTooLarge => "output_too_large",
            RejectReason::RejectedByBroker => "rejected_by_broker",
        }
    }
}

/// A rejection with where it happened. Its `Display` is the dead-letter
/// `detail`: a byte offset and what was expected, never input content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    pub what: &'static str,
}

impl Reject {
    /// The rejection of an input whose processing panicked. There is no
    /// meaningful byte offset, so its detail is a fixed sentence.
    pub const INTERNAL_ERROR: Reject = Reject {
        reason: RejectReason::InternalError,
        offset: 0,
        what: "veil failed while processing this input (a bug in veil); nothing of it was forwarded",
    };

    /// The rejection of an input one of whose clean events is larger than
    /// the output may hold (see [`crate::stage::Stage::limit_records`]).
    pub const OUTPUT_TOO_LARGE: Reject = Reject {
        reason: RejectReason::OutputTooLarge,
        offset: 0,
        what: "a clean event of this input is larger than the producer may send \
               (message.max.bytes); nothing of it was forwarded",
    };
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            RejectReason::InternalError
            | RejectReason::OutputTooLarge
            | RejectReason::RejectedByBroker => f.write_str(self.what),
            _ => write!(f, "{} at byte {}", self.what, self.offset),
        }
    }
}

/// Per-event tallies of what happened to values. A "value" is a scalar
/// (string, number, boolean, null) or an empty object/array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldCounts {
    /// Passed through unchanged.
    pub kept: u64,
    /// Replaced with a pseudonym.
    pub pseudonymised: u64,
    /// IP, URL, time or number coarsened.
    pub generalised: u64,
    /// Passed through with `redact` patterns replaced.
    pub redacted: u64,
    /// Not on the allowlist (or explicitly dropped): removed.
    pub removed: u64,
    /// Removed because the value's type does not fit the action
    /// (e.g. an object where a pseudonym was asked for).
    pub type_mismatch: u64,
    /// Removed because the value could not be generalised: not an IP
    /// address, URL with a host, or RFC 3339 timestamp; or a number below
    /// the lowest bucket edge.
    pub invalid: u64,
    /// What the content scanner found in kept strings.
    pub scan: Detections,
}

/// Content scanner detections, per kind and per action taken (`count`,
/// `redact`, `drop_event`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detections {
    n: [[u64; 3]; 6],
}

impl Detections {
    /// The actions a detection can lead to, in the order of [`Detections::get`].
    pub const ACTIONS: [crate::policy::ScanMode; 3] = [
        crate::policy::ScanMode::Count,
        crate::policy::ScanMode::Redact,
        crate::policy::ScanMode::DropEvent,
    ];

    fn slot(mode: crate::policy::ScanMode) -> Option<usize> {
        Self::ACTIONS.iter().position(|m| *m == mode)
    }

    pub fn record(&mut self, kind: crate::detect::Kind, mode: crate::policy::ScanMode) {
        if let Some(a) = Self::slot(mode)
            && let Some(c) = self.n.get_mut(kind.index()).and_then(|r| r.get_mut(a))
        {
            *c += 1;
        }
    }

    pub fn get(&self, kind: crate::detect::Kind, mode: crate::policy::ScanMode) -> u64 {
        Self::slot(mode)
            .and_then(|a| self.n.get(kind.index()).and_then(|r| r.get(a)))
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.n.iter().flatten().sum()
    }

    pub fn add(&mut self, other: &Detections) {
        for (mine, theirs) in self.n.iter_mut().zip(&other.n) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    /// Every (kind, action, count) with a count above zero, in a fixed order.
    pub fn nonzero(
        &self,
    ) -> impl Iterator<Item = (crate::detect::Kind, crate::policy::ScanMode, u64)> + '_ {
        crate::detect::Kind::ALL.into_iter().flat_map(move |k| {
            Self::ACTIONS
                .into_iter()
                .map(move |m| (k, m, self.get(k, m)))
                .filter(|(_, _, n)| *n > 0)
        })
    }
}

impl FieldCounts {
    pub fn add(&mut self, other: &FieldCounts) {
        self.kept += other.kept;
        self.pseudonymised += other.pseudonymised;
        self.generalised += other.generalised;
        self.redacted += other.redacted;
        self.removed += other.removed;
        self.type_mismatch += other.type_mismatch;
        self.invalid += other.invalid;
        self.scan.add(&other.scan);
    }

    /// `(label, count)` pairs in a fixed order, for summaries and metrics.
    pub fn labelled(&self) -> [(&'static str, u64); 7] {
        [
            ("kept", self.kept),
            ("pseudonymised", self.pseudonymised),
            ("generalised", self.generalised),
            ("redacted", self.redacted),
            ("removed", self.removed),
            ("type_mismatch", self.type_mismatch),
            ("invalid", self.invalid),
        ]
    }
}

/// The outcome and tallies of applying a policy to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub counts: FieldCounts,
    /// Why the event's TC string could not be read, when the policy has a
    /// `consent.tcf` rule and it could not (the event is then dropped as
    /// `no_consent`).
    pub consent_invalid: Option<crate::tcf::Invalid>,
}
