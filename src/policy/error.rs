//! Errors of loading and validating a policy: every one names the file, the
//! line and column, what is wrong, and (where we can tell) what would be valid.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem has no single place (e.g. an empty file).
    pub line: u64,
    /// 1-based, in characters.
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    // The cause is in the message, so it is not chained as a source too
    // (`{:#}` would print it twice).
    #[error("cannot read policy file {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}", render(diagnostics, "policy"))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

/// The diagnostics one per line, then a count: `2 errors in policy`.
pub(crate) fn render(diagnostics: &[Diagnostic], what: &str) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    let n = diagnostics.len();
    out.push_str(&format!(
        "\n{n} error{} in {what}",
        if n == 1 { "" } else { "s" }
    ));
    out
}

impl PolicyError {
    /// The diagnostics, if the file was read but is not a valid policy.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Invalid { diagnostics } => diagnostics,
            PolicyError::Io { .. } => &[],
        }
    }
}
