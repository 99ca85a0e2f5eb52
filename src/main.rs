//! The `veil` command: parse arguments, dispatch, map failures to exit codes
//! (64 for unusable arguments, policies or keys, as sysexits has it).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
