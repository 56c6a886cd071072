//! wafstream: Imperva WAF logs to Elastic Common Schema documents at line rate.
//!
//! # Layout
//!
//! The folders follow the data's path:
//!
//! - [`ingress`]: the sources. Syslog TCP (newline / octet counting, [`ingress::framing`]),
//!   TLS and UDP → frames; files ([`ingress::files`]): followed line files and whole Imperva
//!   files ([`ingress::imperva_file`]) with durable checkpoints; line cutting and W3C columns
//!   ([`ingress::lines`]).
//! - [`bus`]: a frame (bytes, what parsing needs, an acknowledgement [`bus::Token`]) and the
//!   bounded channel from the sources to the core.
//! - [`pipeline`]: the one core every role shares — frames mapped on N threads, outputs handed
//!   to one [`sink::Sink`] in arrival order, tokens settled in that order once every output has
//!   its verdict (only then does an offset get stored or a checkpoint advance).
//! - [`sink`]: where outputs go (the interface, NDJSON writer, Elasticsearch).
//! - [`embedded`]: the sources of `run`/`ingress`, and `run` (sources → core → sink).
//! - [`kafka`]: the raw-topic contract, the ingress producer, the Kafka output sink and the
//!   worker (the Kafka source wired to the core).
//! - [`container`]: Cloud WAF log files (pull API / pushed): header, `|==|`, decryption,
//!   decompression, checksum → plaintext body lines.
//! - [`parse`]: one frame's text → a borrowed [`parse::Record`]: syslog envelope
//!   ([`parse::syslog`]), CEF ([`parse::cef`], where extension values are found and
//!   unescaped), LEEF ([`parse::leef`]), W3C ([`parse::w3c`]), device times ([`parse::time`]).
//! - [`ecs`]: a record → an ECS document per profile (`elastic`, `sekoia`), written straight
//!   into a reused buffer ([`ecs::doc`]); user-agent rules ([`ecs::user_agent`]); dead-letter
//!   records ([`ecs::Mapper::dead_letter`]).
//! - [`generate`]: deterministic sample traffic for benchmarks and demos.
//! - [`telemetry`]: `/metrics`, `/healthz`, `/readyz`; components register their counters and
//!   readiness conditions, so it imports none of them.
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
pub mod otlp;
pub mod parse;
pub mod pipeline;
pub mod sink;
mod swar;
pub mod telemetry;
