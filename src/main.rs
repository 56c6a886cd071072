//! The `wafstream` binary: argument parsing and dispatch only; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wafstream::cli::Cli::parse();
    match wafstream::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wafstream: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
