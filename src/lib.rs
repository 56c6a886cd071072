//! wafstream: Imperva WAF logs to Elastic Common Schema documents at line rate.
//!
//! # Layout
//!
//! The folders follow the data's path:
//!
//! - [`ingress`]: syslog TCP (newline / octet counting, [`ingress::framing`]) and UDP → frames.
//! - [`bus`]: the in-memory bounded bus of the embedded mode ([`embedded`]).
//! - [`sink`]: where documents go (the interface a worker hands outputs to; Kafka today).
//! - [`kafka`]: the raw-topic contract, the ingress producer and the parser worker.
//! - [`container`]: Cloud WAF log files (pull API / pushed): header, `|==|`, decryption,
//!   decompression, checksum → plaintext body lines.
//! - [`parse`]: one frame's text → a borrowed [`parse::Record`]: syslog envelope
//!   ([`parse::syslog`]), CEF ([`parse::cef`], where extension values are found and
//!   unescaped), LEEF ([`parse::leef`]), W3C ([`parse::w3c`]), device times ([`parse::time`]).
//! - [`ecs`]: a record → an ECS document per profile (`elastic`, `sekoia`), written straight
//!   into a reused buffer ([`ecs::doc`]); user-agent rules ([`ecs::user_agent`]); dead-letter
//!   records ([`ecs::Mapper::dead_letter`]).
//! - [`generate`]: deterministic sample traffic for benchmarks and demos.
//! - [`cli`]: the `wafstream` subcommands; the binary in `main.rs` only dispatches.
//!
//! Parsers are pure functions over `&str` with no I/O, so they are fuzzed (`fuzz/`) and
//! benchmarked (`bench/`) alone.

pub mod bus;
pub mod cli;
pub mod config;
pub mod container;
pub mod ecs;
pub mod embedded;
pub mod generate;
pub mod ingress;
pub mod kafka;
pub mod parse;
pub mod pipeline;
pub mod sink;
mod swar;
pub mod telemetry;
