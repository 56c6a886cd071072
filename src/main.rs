//! The `wafstream` binary: argument parsing and dispatch only; the work is in the library.

use std::process::ExitCode;

// Mapping allocates many small short-lived values per event; mimalloc's thread-local free
// lists make that markedly cheaper than glibc malloc (see bench/README.md). With the crate's
// `override` feature the C libraries' malloc/free (librdkafka) use it too: the ingress spends
// ~17 % less CPU per frame than on glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages for this process: the allocators hand memory back and fault it
    // in again, and each fault of a fresh 2 MiB page zeroes all of it (6-15 % of the time in
    // profiles; RSS counted in 2 MiB steps). Measured in bench/README.md: lower peak RSS, same
    // speed. Set before any thread starts; it covers librdkafka's allocations too.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process; no memory passed.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // A configuration file feeds the flags through `WAFSTREAM_*` variables, so it is read
    // before the flags are parsed (and before any thread exists).
    if let Some(path) = config_path() {
        if let Err(e) = wafstream::config::apply(&path, &wafstream::cli::command()) {
            eprintln!("wafstream: error: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = wafstream::cli::parse();
    wafstream::cli::init_logging(cli.log_format, cli.log_level.as_deref());
    match wafstream::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wafstream: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--config FILE` / `--config=FILE` from the arguments, else `WAFSTREAM_CONFIG`.
fn config_path() -> Option<std::path::PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    std::env::var_os("WAFSTREAM_CONFIG").map(Into::into)
}
