//! `veil test`: run policy unit tests (case files) against a policy with
//! the fixed test key; exit 0 when all pass, 1 when any fails, 64 for an
//! invalid policy or case file. The cases and comparison are [`veil::cases`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use veil::cases::{self, Case, CaseFailure};
use veil::engine::{Limits, Scratch, compile};
use veil::files::Role;

use super::{CliResult, Failure, io, print, usage};

/// Exit status when a case fails (as test runners do).
pub const EX_FAILED: u8 = 1;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (YAML) under test.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Also write a JUnit XML report (one test suite per case file) for CI systems.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Case files: YAML lists of `{name, input, expect}` (docs/testing-policies.md).
    #[arg(required = true, value_name = "CASES")]
    cases: Vec<PathBuf>,
}

pub fn run(args: Args) -> CliResult {
    if let Some(junit) = &args.junit {
        // The report replaces its file: never a file this run reads.
        let mut places = vec![(Role::Input, args.policy.as_path(), "--policy")];
        places.extend(
            args.cases
                .iter()
                .map(|c| (Role::Input, c.as_path(), "case file")),
        );
        places.push((Role::Output, junit.as_path(), "--junit"));
        super::output::refuse_clashes(&places)?;
    }
    let policy = veil::policy::load(&args.policy).map_err(usage)?;
    let id = policy.id();
    let engine = compile(policy, &veil::keys::test_key(), Limits::default());
    let mut files: Vec<(String, Vec<Case>)> = Vec::new();
    for path in &args.cases {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read case file {}", path.display()))
            .map_err(usage)?;
        let file = path.display().to_string();
        files.push((file.clone(), cases::parse(&text, &file).map_err(usage)?));
    }
    let mut scratch = Scratch::default();
    let mut report = Report::new(format!("veil test {id}"));
    let (mut passed, mut failed) = (0usize, 0usize);
    for (file, cases) in &files {
        let mut suite = TestSuite::new(file.as_str());
        for case in cases {
            let start = Instant::now();
            let outcome = cases::run(&engine, case, &mut scratch);
            let status = match &outcome {
                None => {
                    passed += 1;
                    print(format_args!("ok   {}\n", case.name))?;
                    TestCaseStatus::success()
                }
                Some(f) => {
                    failed += 1;
                    let lines = cases::describe(f).join("\n");
                    print(format_args!(
                        "FAIL {} ({}:{})\n{lines}\n",
                        case.name, case.file, case.line
                    ))?;
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(summary(f));
                    s.set_description(format!("{}:{}\n{lines}", case.file, case.line));
                    s
                }
            };
            let mut tc = TestCase::new(case.name.as_str(), status);
            tc.set_classname(file.as_str());
            tc.set_time(start.elapsed());
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
    }
    let total = passed + failed;
    print(format_args!(
        "{total} case{} for policy {id}: {passed} passed, {failed} failed\n",
        if total == 1 { "" } else { "s" }
    ))?;
    if let Some(path) = &args.junit {
        let mut out = super::output::create(path, "JUnit report")?;
        report
            .serialize(&mut out)
            .with_context(|| format!("cannot write JUnit report {}", path.display()))
            .map_err(io)?;
        super::output::commit(out, path, "JUnit report")?;
    }
    if failed > 0 {
        return Err(Failure {
            code: EX_FAILED,
            error: anyhow!("{failed} of {total} policy test cases failed"),
        });
    }
    Ok(())
}

/// One line for a JUnit failure message.
fn summary(f: &CaseFailure) -> String {
    match f {
        CaseFailure::Verdict { expected, got } => format!("expected {expected}, got {got}"),
        CaseFailure::Fields(ms) => {
            let paths: Vec<&str> = ms
                .iter()
                .map(|m| {
                    if m.path.is_empty() {
                        "(the event)"
                    } else {
                        m.path.as_str()
                    }
                })
                .collect();
            format!("the clean event differs at {}", paths.join(", "))
        }
    }
}
