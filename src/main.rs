//! The `wafstream` binary: argument parsing and dispatch only; the work is in the library.

use std::process::ExitCode;

use clap::Parser;

// Mapping allocates many small short-lived values per event; mimalloc's thread-local free
// lists make that markedly cheaper than glibc malloc (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
