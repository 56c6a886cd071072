//! Command-line interface: subcommands and their options. Each subcommand lives in its own
//! module and returns an exit code; `main.rs` only prints errors.

mod parse;
mod run;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::ecs::{Options, Profile};
use crate::parse::time::Zone;

/// Imperva WAF logs (SecureSphere CEF over syslog, Cloud WAF CEF/LEEF/W3C files) to Elastic
/// Common Schema documents.
#[derive(Debug, Parser)]
#[command(name = "wafstream", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML; see `wafstream validate-config --help`). Precedence: flags,
    /// then environment (`WAFSTREAM_*`), then this file, then defaults.
    #[arg(long, global = true, value_name = "FILE", env = "WAFSTREAM_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Log format on stderr: `human` (default) or `json` (one object per line, for collectors).
    #[arg(
        long,
        global = true,
        default_value = "human",
        value_name = "FORMAT",
        env = "WAFSTREAM_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log level or filter (`error`, `warn`, `info`, `debug`, `trace`, or `RUST_LOG` syntax such
    /// as `wafstream=debug`); `RUST_LOG` is read when this is not given.
    #[arg(long, global = true, value_name = "FILTER", env = "WAFSTREAM_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One-shot: read lines or whole Imperva log files (gzip/zlib/encrypted containers are
    /// detected) and write one ECS JSON document per input event to stdout, in input order.
    ///
    /// Events that cannot be parsed are written as dead-letter records (`event.kind:
    /// pipeline_error`, `error.message`, the original text) to stdout, or to `--dlq FILE`.
    /// Exit status: 0 when every event mapped, 1 when any went to the dead-letter output,
    /// 2 on a usage or I/O error.
    Parse(ParseArgs),
    /// Embedded pipeline: listen for syslog (TCP and UDP, port 9507 by default) and write one
    /// ECS JSON document per received event to stdout or `--output`, until SIGTERM / Ctrl-C.
    /// No Kafka needed. Unparseable or oversized frames become dead-letter records.
    Run(Box<RunArgs>),
    /// Ingress role: listen for syslog (TCP/UDP) and publish each frame, unchanged, to the raw
    /// Kafka topic (headers: receive time, peer, input kind). Stops on SIGTERM after flushing.
    Ingress(Box<IngressArgs>),
    /// Worker role: consume the raw topic in a consumer group, map to ECS, produce documents to
    /// the dataset topics and failures to the DLQ topic; offsets are stored only after the
    /// outputs are acknowledged.
    Worker(Box<WorkerArgs>),
    /// Install (or update) wafstream's component and index templates (Elasticsearch or
    /// OpenSearch) that give the data streams their ECS field types and retention. Templates
    /// something else manages (e.g. Elastic's integrations) are left alone and reported unless
    /// `--force`. Safe to run again.
    EsSetup(EsArgs),
    /// Check a configuration file: report every problem at once — unknown keys, values of the
    /// wrong type or range, missing files — (exit 1), or print the settings it makes, as the
    /// `WAFSTREAM_*` variables they feed (exit 0). `--print-default` writes every key, with
    /// its flag, variable, default and meaning, as a commented TOML file.
    ValidateConfig {
        /// The TOML file.
        #[arg(required_unless_present = "print_default")]
        file: Option<std::path::PathBuf>,
        /// Print every configuration key (commented, at its default) instead.
        #[arg(long)]
        print_default: bool,
    },
    /// Write deterministic, realistic sample lines (Cloud WAF ~1 KB, SecureSphere ~0.5 KB) to
    /// stdout, for benchmarks and demos.
    Generate(GenerateArgs),
}

/// The command-line definition, with the configuration keys in `validate-config --help`: the
/// one definition the flags, the `WAFSTREAM_*` variables and the file keys come from.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let base = Cli::command();
    let keys = crate::config::reference(&base);
    base.mut_subcommand("validate-config", |c| {
        c.after_long_help(format!(
            "Configuration keys (every one also a flag and a variable):\n\n{keys}"
        ))
    })
}

/// Parse the process's arguments with [`command`].
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let m = command().get_matches();
    Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit())
}

/// `ip:port` or `off`.
pub fn addr_or_off(s: &str) -> Result<String, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("off") || s.parse::<std::net::SocketAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err("expected ip:port (e.g. 0.0.0.0:9507) or `off`".into())
    }
}

/// An IANA zone or `±HHMM`.
pub fn zone(s: &str) -> Result<String, String> {
    Zone::parse(s)
        .map(|_| s.to_string())
        .ok_or_else(|| "not an IANA zone (e.g. Europe/Paris) or ±HHMM offset".into())
}

/// A data stream namespace.
pub fn namespace(s: &str) -> Result<String, String> {
    let bad = s.is_empty()
        || s.len() > 100
        || s.chars().any(|c| c.is_uppercase())
        || s.contains(['-', ' ', '*', '\\', '/', '?', '"', '<', '>', '|', ',', '#', ':']);
    if bad {
        Err("must be non-empty, lowercase, at most 100 bytes, without '-', spaces or any of *\\/?\"<>|,#:".into())
    } else {
        Ok(s.to_string())
    }
}

/// An `http://` or `https://` URL with a host.
pub fn http_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.split(['/', '?']).next().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(s.to_string())
}

/// A count that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// What becomes of a finished whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileDone {
    Keep,
    Delete,
    Move,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Start logging (to stderr) as asked. Events carry no secrets, and no whole event above
/// `debug`.
pub fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Human => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
}

/// Syslog listeners and their limits (shared by `run` and `ingress`).
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// TCP listen address (newline or RFC 6587 octet-counted syslog); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:9507", value_name = "IP:PORT|off", env = "WAFSTREAM_LISTEN_TCP", value_parser = addr_or_off)]
    pub listen_tcp: String,
    /// UDP listen address (one datagram = one message); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:9507", value_name = "IP:PORT|off", env = "WAFSTREAM_LISTEN_UDP", value_parser = addr_or_off)]
    pub listen_udp: String,
    /// TLS listen address (syslog over TLS, same framing as TCP); off unless set.
    #[arg(long, default_value = "off", value_name = "IP:PORT|off", env = "WAFSTREAM_LISTEN_TLS", value_parser = addr_or_off)]
    pub listen_tls: String,
    /// Server certificate chain (PEM) for `--listen-tls`.
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Server private key (PEM) for `--listen-tls`.
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates that chain to this CA bundle (PEM).
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Close a TLS connection whose handshake takes longer than this.
    #[arg(
        long,
        default_value_t = 10_000,
        value_name = "MS",
        env = "WAFSTREAM_TLS_HANDSHAKE_TIMEOUT_MS"
    )]
    pub tls_handshake_timeout_ms: u64,
    /// Files to follow (glob, repeatable): new lines are read as they are written, rotated
    /// files are read to their end, truncated files from the start.
    #[arg(long = "file", value_name = "GLOB", env = "WAFSTREAM_FILES", value_delimiter = ',')]
    pub files: Vec<String>,
    /// Files not to read, matched against the file name or the whole path (repeatable): files
    /// still being uploaded under a temporary name, renamed into place when complete (the
    /// defaults cover hidden `.name` files and the `.tmp`, `.part` and `.filepart` suffixes of
    /// SFTP clients and servers). `--file-exclude ''` matches nothing.
    #[arg(
        long = "file-exclude",
        value_name = "GLOB",
        env = "WAFSTREAM_FILE_EXCLUDES",
        value_delimiter = ',',
        default_values_t = [".*".to_string(), "*.tmp".to_string(), "*.part".to_string(), "*.filepart".to_string()]
    )]
    pub file_excludes: Vec<String>,
    /// What becomes of a whole file (Imperva log file, gzip file) once every line of it is
    /// acknowledged downstream: `keep` (remembered as done in the checkpoint), `delete`, or
    /// `move` into `--file-done-dir`. Line files are followed, never finished.
    #[arg(
        long = "file-done",
        default_value = "keep",
        value_name = "ACTION",
        env = "WAFSTREAM_FILE_DONE"
    )]
    pub file_done: FileDone,
    /// Where `--file-done move` puts finished files (it must exist, outside the `--file` globs).
    #[arg(long = "file-done-dir", value_name = "DIR", env = "WAFSTREAM_FILE_DONE_DIR")]
    pub file_done_dir: Option<std::path::PathBuf>,
    /// Where file progress is kept across restarts (JSON, written atomically).
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_CHECKPOINT")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// How often files are checked for new lines and new files.
    #[arg(long, default_value_t = 1000, value_name = "MS", env = "WAFSTREAM_FILE_POLL_MS")]
    pub file_poll_ms: u64,
    /// Longest message; longer ones are cut to it and flagged (then dead-lettered).
    #[arg(long, default_value_t = 50 * 1024, value_name = "BYTES", env = "WAFSTREAM_MAX_MESSAGE_BYTES", value_parser = at_least_one)]
    pub max_message_bytes: usize,
    /// Most concurrent TCP/TLS connections; at the limit, the connection idle the longest is
    /// closed (what it sent is kept) to admit the new one.
    #[arg(long, default_value_t = 1024, env = "WAFSTREAM_MAX_CONNECTIONS", value_parser = at_least_one)]
    pub max_connections: usize,
    /// Close a TCP connection idle this long.
    #[arg(
        long,
        default_value_t = 300_000,
        value_name = "MS",
        env = "WAFSTREAM_IDLE_TIMEOUT_MS"
    )]
    pub idle_timeout_ms: u64,
    /// Frames buffered in memory before TCP stops reading (UDP then drops, counted).
    #[arg(long, default_value_t = 65_536, env = "WAFSTREAM_BUS_CAPACITY", value_parser = at_least_one)]
    pub bus_capacity: usize,
    /// Directory of Cloud WAF private keys for encrypted Imperva log files found by `--file`,
    /// laid out as `<DIR>/<publicKeyId>/Private.key`.
    #[arg(long, value_name = "DIR", env = "WAFSTREAM_KEYS_DIR")]
    pub keys_dir: Option<std::path::PathBuf>,
    /// Largest body a compressed Imperva or gzip file may inflate to.
    #[arg(
        long,
        default_value_t = 512 * 1024 * 1024,
        value_name = "BYTES",
        env = "WAFSTREAM_MAX_DECOMPRESSED_BYTES",
        value_parser = at_least_one
    )]
    pub max_decompressed_bytes: usize,
}

/// Cloud WAF collection from Imperva's log integration API (`run`, `ingress`).
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Log API base URL of an account (`<URL>/logs.index` lists its files); repeat (or
    /// comma-separate) for several accounts, with the API ids and keys in the same order.
    #[arg(
        long = "pull-url",
        value_name = "URL",
        env = "WAFSTREAM_PULL_URLS",
        value_delimiter = ','
    )]
    pub pull_urls: Vec<String>,
    /// API id of each `--pull-url`, in the same order.
    #[arg(
        long = "pull-api-id",
        value_name = "ID",
        env = "WAFSTREAM_PULL_API_IDS",
        value_delimiter = ','
    )]
    pub pull_api_ids: Vec<String>,
    /// API key of each `--pull-url`, in the same order (or use `--pull-api-key-file`).
    #[arg(
        long = "pull-api-key",
        value_name = "KEY",
        env = "WAFSTREAM_PULL_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub pull_api_keys: Vec<String>,
    /// Files holding the API key of each `--pull-url`, in the same order (a mounted secret).
    #[arg(
        long = "pull-api-key-file",
        value_name = "FILE",
        env = "WAFSTREAM_PULL_API_KEY_FILES",
        value_delimiter = ','
    )]
    pub pull_api_key_files: Vec<std::path::PathBuf>,
    /// Where the collection progress is kept (JSON, written atomically): without it a restart
    /// downloads the whole 48 h window again.
    #[arg(long = "pull-state", value_name = "FILE", env = "WAFSTREAM_PULL_STATE")]
    pub pull_state: Option<std::path::PathBuf>,
    /// Time between two reads of each account's index.
    #[arg(
        long = "pull-interval-ms",
        default_value_t = 30_000,
        value_name = "MS",
        env = "WAFSTREAM_PULL_INTERVAL_MS"
    )]
    pub pull_interval_ms: u64,
    /// Files downloaded at once per account.
    #[arg(
        long = "pull-parallel",
        default_value_t = 4,
        value_name = "N",
        env = "WAFSTREAM_PULL_PARALLEL",
        value_parser = at_least_one
    )]
    pub pull_parallel: usize,
    /// Polls a listed file may answer 404 before it is recorded as a gap (logged and counted)
    /// and later files stop waiting for it.
    #[arg(
        long = "pull-missing-retries",
        default_value_t = 10,
        value_name = "N",
        env = "WAFSTREAM_PULL_MISSING_RETRIES"
    )]
    pub pull_missing_retries: u32,
    /// HTTP(S) proxy for the log API (`http://proxy:3128`).
    #[arg(long = "pull-proxy", value_name = "URL", env = "WAFSTREAM_PULL_PROXY")]
    pub pull_proxy: Option<String>,
    /// Extra CA bundle (PEM) to trust for the log API, besides the platform's roots.
    #[arg(long = "pull-ca", value_name = "FILE", env = "WAFSTREAM_PULL_CA")]
    pub pull_ca: Option<std::path::PathBuf>,
    /// A request to the log API that has not answered after this long is retried.
    #[arg(
        long = "pull-request-timeout-ms",
        default_value_t = 120_000,
        value_name = "MS",
        env = "WAFSTREAM_PULL_REQUEST_TIMEOUT_MS"
    )]
    pub pull_request_timeout_ms: u64,
}

/// Imperva's push to an S3 bucket (`run`, `ingress`): the objects under a prefix, listed on an
/// interval and read once each.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Bucket Imperva pushes the log files to; turns the S3 input on.
    #[arg(long = "s3-bucket", value_name = "NAME", env = "WAFSTREAM_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Folder of the bucket the files are pushed to (`logs` lists `logs/...`); empty: the whole
    /// bucket.
    #[arg(
        long = "s3-prefix",
        default_value = "",
        value_name = "FOLDER",
        env = "WAFSTREAM_S3_PREFIX"
    )]
    pub s3_prefix: String,
    /// Region of the bucket (requests are signed for it); default: `AWS_REGION`, else
    /// `us-east-1`.
    #[arg(long = "s3-region", value_name = "REGION", env = "WAFSTREAM_S3_REGION")]
    pub s3_region: Option<String>,
    /// Endpoint of an S3-compatible store (`https://minio:9000`; `http://` allowed), addressed
    /// path-style; default: AWS.
    #[arg(long = "s3-endpoint", value_name = "URL", env = "WAFSTREAM_S3_ENDPOINT", value_parser = http_url)]
    pub s3_endpoint: Option<String>,
    /// Access key id (with `--s3-secret-access-key`); without both, the AWS credential chain:
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity, container
    /// credentials, then the instance metadata service.
    #[arg(long = "s3-access-key-id", value_name = "ID", env = "WAFSTREAM_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// Secret access key of `--s3-access-key-id`.
    #[arg(
        long = "s3-secret-access-key",
        value_name = "SECRET",
        env = "WAFSTREAM_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// Where the keys of the objects done are kept (JSON, written atomically): without it a
    /// restart reads every object of the prefix again.
    #[arg(long = "s3-state", value_name = "FILE", env = "WAFSTREAM_S3_STATE")]
    pub s3_state: Option<std::path::PathBuf>,
    /// Time between two listings of the prefix.
    #[arg(
        long = "s3-interval-ms",
        default_value_t = 30_000,
        value_name = "MS",
        env = "WAFSTREAM_S3_INTERVAL_MS"
    )]
    pub s3_interval_ms: u64,
    /// Objects downloaded at once.
    #[arg(
        long = "s3-parallel",
        default_value_t = 4,
        value_name = "N",
        env = "WAFSTREAM_S3_PARALLEL",
        value_parser = at_least_one
    )]
    pub s3_parallel: usize,
    /// A request to the bucket that has not answered after this long is retried.
    #[arg(
        long = "s3-request-timeout-ms",
        default_value_t = 120_000,
        value_name = "MS",
        env = "WAFSTREAM_S3_REQUEST_TIMEOUT_MS"
    )]
    pub s3_request_timeout_ms: u64,
}

/// The Splunk-HEC-compatible push receiver (`run`, `ingress`): Imperva's SIEM log
/// configuration with destination type Splunk, and any other HEC sender.
#[derive(Debug, Clone, Args)]
pub struct HecArgs {
    /// HEC listen address (`POST /services/collector/event`, `/raw`, `/ack`, `GET .../health`);
    /// off unless set. Needs at least one `--hec-token`.
    #[arg(long = "listen-hec", default_value = "off", value_name = "IP:PORT|off", env = "WAFSTREAM_LISTEN_HEC", value_parser = addr_or_off)]
    pub listen_hec: String,
    /// Serve HEC over HTTPS with `--tls-cert`/`--tls-key` (and `--tls-client-ca` to require
    /// client certificates), as the syslog TLS listener.
    #[arg(long = "hec-tls", env = "WAFSTREAM_HEC_TLS")]
    pub hec_tls: bool,
    /// An accepted token, `name=token` (the name labels metrics and logs; the token is never
    /// shown) or a bare token; repeat (or comma-separate) for several.
    #[arg(
        long = "hec-token",
        value_name = "NAME=TOKEN",
        env = "WAFSTREAM_HEC_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub hec_tokens: Vec<String>,
    /// Files holding one token each (`name=token` or a bare token; named after the file when
    /// bare), e.g. Kubernetes secrets mounted as files; repeatable.
    #[arg(
        long = "hec-token-file",
        value_name = "FILE",
        env = "WAFSTREAM_HEC_TOKEN_FILES",
        value_delimiter = ','
    )]
    pub hec_token_files: Vec<std::path::PathBuf>,
    /// Largest request body, before and after gzip decoding (413 above it).
    #[arg(long = "hec-max-body-bytes", default_value_t = 16 * 1024 * 1024, value_name = "BYTES", env = "WAFSTREAM_HEC_MAX_BODY_BYTES", value_parser = at_least_one)]
    pub hec_max_body_bytes: usize,
    /// Most events in one request (413 above it).
    #[arg(long = "hec-max-events", default_value_t = 100_000, value_name = "N", env = "WAFSTREAM_HEC_MAX_EVENTS", value_parser = at_least_one)]
    pub hec_max_events: usize,
    /// Requests handled at once; more are answered `503 Server is busy` (code 9).
    #[arg(long = "hec-max-requests", default_value_t = 64, value_name = "N", env = "WAFSTREAM_HEC_MAX_REQUESTS", value_parser = at_least_one)]
    pub hec_max_requests: usize,
    /// How long a request without a channel waits for every event to be accepted downstream
    /// before it is answered `503` (the events may still arrive: the sender's retry can
    /// duplicate them, never lose them).
    #[arg(
        long = "hec-ack-timeout-ms",
        default_value_t = 30_000,
        value_name = "MS",
        env = "WAFSTREAM_HEC_ACK_TIMEOUT_MS"
    )]
    pub hec_ack_timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub mapping: MappingArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub pull: PullArgs,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub hec: HecArgs,
    /// Documents go here (`-` = stdout). A file is appended to, never truncated (a last line
    /// cut short by a crash is removed first).
    #[arg(long, default_value = "-", value_name = "FILE", env = "WAFSTREAM_OUTPUT")]
    pub output: String,
    /// Dead-letter records go here instead of the document output (appended to, like
    /// `--output`). Without it they are in line with the documents, told apart by
    /// `event.kind: pipeline_error`.
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_DLQ")]
    pub dlq: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Mapping threads (default: one per available core).
    #[arg(long, value_name = "N", env = "WAFSTREAM_THREADS", value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// With `--es-url`, documents go to Elasticsearch instead of `--output` (dead letters stay
    /// on `--output` / `--dlq`).
    #[command(flatten)]
    pub es: EsOutputArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// How a stop drains (`run`, `ingress`, `worker`).
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// On SIGTERM/Ctrl-C, how long to wait for outputs in flight (e.g. while the destination is
    /// down) before exiting non-zero without them; a second Ctrl-C exits at once. Either way
    /// nothing undelivered is committed or checkpointed.
    #[arg(
        long,
        default_value_t = 25_000,
        value_name = "MS",
        env = "WAFSTREAM_DRAIN_TIMEOUT_MS"
    )]
    pub drain_timeout_ms: u64,
}

/// Telemetry options.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics on `GET /metrics` (and `GET /healthz`) at this address; `off`
    /// disables the endpoint.
    #[arg(
        long,
        default_value = "off",
        value_name = "IP:PORT|off",
        env = "WAFSTREAM_METRICS_ADDR",
        value_parser = addr_or_off
    )]
    pub metrics_addr: String,
    /// Send the metrics and a trace per batch to this OTLP/HTTP receiver
    /// (`http://collector:4318`; protobuf to `/v1/metrics` and `/v1/traces`); off unless set.
    #[arg(long = "otlp-endpoint", value_name = "URL", env = "WAFSTREAM_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How often the OTLP export runs.
    #[arg(
        long = "otlp-interval-ms",
        default_value_t = 10_000,
        value_name = "MS",
        env = "WAFSTREAM_OTLP_INTERVAL_MS"
    )]
    pub otlp_interval_ms: u64,
}

/// Kafka connection options.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, `host:port[,host:port]`.
    #[arg(long, env = "WAFSTREAM_BROKERS")]
    pub brokers: String,
    /// Raw topic (frames as received).
    #[arg(long, default_value = "imperva.raw", env = "WAFSTREAM_RAW_TOPIC")]
    pub raw_topic: String,
    /// librdkafka property passed through, `key=value` (repeatable): `security.protocol`,
    /// `sasl.mechanisms`, `sasl.username`, `ssl.ca.location`, ...
    #[arg(
        long = "kafka",
        value_name = "KEY=VALUE",
        env = "WAFSTREAM_KAFKA",
        value_delimiter = ';'
    )]
    pub properties: Vec<String>,
}

/// Elasticsearch (or OpenSearch) connection options (`run`, `worker`, `es-setup`).
#[derive(Debug, Clone, Args)]
pub struct EsArgs {
    /// Elasticsearch or OpenSearch base URLs (comma-separated or repeated); requests go to the
    /// first and fail over to the next in order. In `run` and `worker`, documents go there
    /// instead of `--output` / the dataset topics; dead letters stay where they were.
    #[arg(
        long = "es-url",
        value_name = "URL",
        env = "WAFSTREAM_ES_URLS",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// API key (the base64 `id:key` form) for `Authorization: ApiKey`.
    #[arg(long = "es-api-key", env = "WAFSTREAM_ES_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Basic-auth user (with `--es-password`).
    #[arg(long = "es-user", env = "WAFSTREAM_ES_USER")]
    pub user: Option<String>,
    /// Basic-auth password.
    #[arg(long = "es-password", env = "WAFSTREAM_ES_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Bearer token.
    #[arg(long = "es-bearer-token", env = "WAFSTREAM_ES_BEARER_TOKEN", hide_env_values = true)]
    pub bearer: Option<String>,
    /// Extra CA bundle (PEM) to trust for HTTPS.
    #[arg(long = "es-ca", value_name = "FILE", env = "WAFSTREAM_ES_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM, X.509 v3) for mutual TLS, with `--es-client-key`.
    #[arg(
        long = "es-client-cert",
        value_name = "FILE",
        env = "WAFSTREAM_ES_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long = "es-client-key", value_name = "FILE", env = "WAFSTREAM_ES_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// Let template installation replace templates of wafstream's names that something else
    /// manages (without it they are left alone and reported).
    #[arg(long = "es-setup-force", visible_alias = "force", env = "WAFSTREAM_ES_SETUP_FORCE")]
    pub setup_force: bool,
    /// Retention of wafstream's data streams, set by template installation as a data stream
    /// lifecycle (Elasticsearch 8.11+; on OpenSearch use an ISM policy); `off` keeps everything.
    #[arg(
        long = "es-retention",
        default_value = "90d",
        value_name = "AGE|off",
        env = "WAFSTREAM_ES_RETENTION"
    )]
    pub retention: String,
}

/// Elasticsearch as the document output (`run`, `worker`).
#[derive(Debug, Clone, Args)]
pub struct EsOutputArgs {
    #[command(flatten)]
    pub conn: EsArgs,
    /// Install the index templates (as `es-setup` does) before sending documents.
    #[arg(long = "es-setup", env = "WAFSTREAM_ES_SETUP")]
    pub setup: bool,
    /// Documents per bulk request at most.
    #[arg(
        long = "es-max-batch-docs",
        default_value_t = 1000,
        value_name = "N",
        env = "WAFSTREAM_ES_MAX_BATCH_DOCS",
        value_parser = at_least_one
    )]
    pub max_batch_docs: usize,
    /// A bulk request leaves at the latest this long after its first document.
    #[arg(
        long = "es-flush-interval-ms",
        default_value_t = 500,
        value_name = "MS",
        env = "WAFSTREAM_ES_FLUSH_INTERVAL_MS"
    )]
    pub flush_interval_ms: u64,
    /// A bulk request that has not answered after this long is retried (maybe on the next URL).
    #[arg(
        long = "es-request-timeout-ms",
        default_value_t = 60_000,
        value_name = "MS",
        env = "WAFSTREAM_ES_REQUEST_TIMEOUT_MS"
    )]
    pub request_timeout_ms: u64,
    /// Bulk requests in flight at once.
    #[arg(
        long = "es-max-inflight-requests",
        default_value_t = 4,
        value_name = "N",
        env = "WAFSTREAM_ES_MAX_INFLIGHT_REQUESTS",
        value_parser = at_least_one
    )]
    pub max_inflight_requests: usize,
    /// Longest wait between two attempts while Elasticsearch is unavailable.
    #[arg(
        long = "es-backoff-max-ms",
        default_value_t = 10_000,
        value_name = "MS",
        env = "WAFSTREAM_ES_BACKOFF_MAX_MS"
    )]
    pub backoff_max_ms: u64,
}

/// How deliveries that keep failing end (`run`, `worker`).
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// How long an output may keep failing (Elasticsearch or Kafka unreachable, overloaded or
    /// refusing credentials) before the process gives up and exits 2, committing and
    /// checkpointing nothing after it. 0, the default, never gives up: outputs are retried
    /// with capped backoff while intake pauses, for as long as the outage lasts.
    #[arg(long, default_value_t = 0, value_name = "MS", env = "WAFSTREAM_GIVE_UP_AFTER_MS")]
    pub give_up_after_ms: u64,
}

impl DeliveryArgs {
    pub fn give_up_after(&self) -> Option<std::time::Duration> {
        (self.give_up_after_ms > 0).then(|| std::time::Duration::from_millis(self.give_up_after_ms))
    }
}

#[derive(Debug, Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub pull: PullArgs,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub hec: HecArgs,
    /// Time zone of the senders' device clocks (IANA name or `±HHMM`), carried in each raw
    /// record's headers so workers read zone-less times correctly.
    #[arg(long = "tz", value_name = "ZONE", env = "WAFSTREAM_TZ", value_parser = zone)]
    pub tz: Option<String>,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub mapping: MappingArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the workers.
    #[arg(long, default_value = "wafstream", env = "WAFSTREAM_GROUP")]
    pub group: String,
    /// Output topic for `imperva.securesphere` documents.
    #[arg(
        long,
        default_value = "imperva.ecs.securesphere",
        env = "WAFSTREAM_TOPIC_SECURESPHERE"
    )]
    pub topic_securesphere: String,
    /// Output topic for `imperva_cloud_waf.event` documents.
    #[arg(long, default_value = "imperva.ecs.cloud_waf", env = "WAFSTREAM_TOPIC_CLOUD_WAF")]
    pub topic_cloud_waf: String,
    /// Output topic for `imperva.siem` documents (JSON events of producers with no mapping yet).
    #[arg(long, default_value = "imperva.ecs.siem", env = "WAFSTREAM_TOPIC_SIEM")]
    pub topic_siem: String,
    /// Dead-letter topic.
    #[arg(long, default_value = "imperva.dlq", env = "WAFSTREAM_DLQ_TOPIC")]
    pub dlq_topic: String,
    /// Outputs awaiting acknowledgement before the worker stops consuming.
    #[arg(long, default_value_t = 10_000, env = "WAFSTREAM_MAX_INFLIGHT", value_parser = at_least_one)]
    pub max_inflight: usize,
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Mapping threads (default: one per available core). Offsets are still stored in order
    /// per partition.
    #[arg(long, value_name = "N", env = "WAFSTREAM_THREADS", value_parser = at_least_one)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub es: EsOutputArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Exit (after draining and committing) once no record arrived for this long after the
    /// last one (batch jobs and tests; a service leaves it unset).
    #[arg(long, value_name = "MS", env = "WAFSTREAM_EXIT_WHEN_IDLE_MS")]
    pub exit_when_idle_ms: Option<u64>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// `cloud-waf`, `securesphere` or `mixed`.
    #[arg(long, default_value = "mixed")]
    pub kind: crate::generate::Kind,
    /// Number of lines.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Mapping options shared by every subcommand that produces documents.
#[derive(Debug, Clone, Args)]
pub struct MappingArgs {
    /// Output profile: `elastic` (Elastic integration pipelines) or `sekoia` (SEKOIA.IO intake).
    #[arg(long, default_value = "elastic", env = "WAFSTREAM_PROFILE")]
    pub profile: Profile,
    /// Time zone for device times without one (IANA name like `Europe/Paris`, or `+0200`).
    #[arg(long = "tz", value_name = "ZONE", env = "WAFSTREAM_TZ", value_parser = zone)]
    pub tz: Option<String>,
    /// Keep the raw line in `event.original`.
    #[arg(long, env = "WAFSTREAM_PRESERVE_ORIGINAL_EVENT")]
    pub preserve_original_event: bool,
    /// Also keep the vendor copies of fields already mapped to ECS (Elastic's option).
    #[arg(long, env = "WAFSTREAM_PRESERVE_DUPLICATE_CUSTOM_FIELDS")]
    pub preserve_duplicate_custom_fields: bool,
    /// Extra tag for every document (repeatable).
    #[arg(long = "tag", value_name = "TAG", env = "WAFSTREAM_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Data stream namespace (`logs-<dataset>-<namespace>`).
    #[arg(long, default_value = "default", env = "WAFSTREAM_NAMESPACE", value_parser = namespace)]
    pub namespace: String,
    /// Write the syslog envelope's facts to `log.syslog.*`.
    #[arg(long, env = "WAFSTREAM_SYSLOG_FIELDS")]
    pub syslog_fields: bool,
    /// Write each document's deterministic `_id` into it (as `_id`).
    #[arg(long, env = "WAFSTREAM_EMIT_ID")]
    pub emit_id: bool,
    /// Beats-style processors applied to each document, in order, before it is written: a YAML,
    /// JSON or TOML file (a list, or a `processors:` list), or the list inline as JSON. In the
    /// configuration file: `[[processors]]` tables. See README "Processors".
    #[arg(long, value_name = "FILE|JSON", env = "WAFSTREAM_PROCESSORS")]
    pub processors: Option<String>,
    /// Processors for the documents of one input kind, after `--processors`: a file or inline
    /// JSON mapping an input (`tcp`, `udp`, `tls`, `file`, `stdin`, `pull`, `s3`) to its list.
    /// In the configuration file: `[[input_processors.<input>]]` tables.
    #[arg(long, value_name = "FILE|JSON", env = "WAFSTREAM_INPUT_PROCESSORS")]
    pub input_processors: Option<String>,
}

impl MappingArgs {
    /// The processors, compiled (every problem of every list at once).
    pub fn processors(&self) -> anyhow::Result<Option<std::sync::Arc<crate::ecs::processors::ProcessorSet>>> {
        if self.processors.is_none() && self.input_processors.is_none() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let mut value = |arg: &Option<String>, key: &str| match arg {
            Some(a) => match crate::config::processors_value(a, key) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.extend(e);
                    None
                }
            },
            None => None,
        };
        let all = value(&self.processors, "processors");
        let by_input = value(&self.input_processors, "input_processors");
        let set = if problems.is_empty() {
            crate::ecs::processors::ProcessorSet::parse(all.as_ref(), by_input.as_ref())
                .map_err(|e| problems.extend(e))
                .ok()
        } else {
            None
        };
        let Some(set) = set else {
            anyhow::bail!(
                "processors: {} problem(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            );
        };
        if set.is_empty() {
            return Ok(None);
        }
        let set = std::sync::Arc::new(set);
        crate::telemetry::global().register("processors", set.clone());
        Ok(Some(set))
    }

    /// Validate into mapping options.
    pub fn options(&self) -> anyhow::Result<Options> {
        let zone = match &self.tz {
            Some(z) => Zone::parse(z).ok_or_else(|| anyhow::anyhow!("--tz {z:?}: not an IANA zone or ±HHMM offset"))?,
            None => Zone::Utc,
        };
        Ok(Options {
            profile: self.profile,
            zone,
            tz_name: self.tz.clone(),
            preserve_original_event: self.preserve_original_event,
            preserve_duplicate_custom_fields: self.preserve_duplicate_custom_fields,
            tags: self.tags.clone(),
            namespace: self.namespace.clone(),
            syslog_fields: self.syslog_fields,
            emit_id: self.emit_id,
            processors: self.processors()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// Directory of Cloud WAF private keys, laid out as `<DIR>/<publicKeyId>/Private.key`.
    #[arg(long, value_name = "DIR", env = "WAFSTREAM_KEYS_DIR")]
    pub keys_dir: Option<std::path::PathBuf>,
    /// Write dead-letter records here instead of stdout (appended to, never truncated).
    #[arg(long, value_name = "FILE", env = "WAFSTREAM_DLQ")]
    pub dlq: Option<std::path::PathBuf>,
    /// Longest line accepted; longer ones are dead-lettered (cut at the limit, with the reason).
    #[arg(
        long,
        default_value_t = 1024 * 1024,
        value_name = "BYTES",
        env = "WAFSTREAM_MAX_LINE_BYTES",
        value_parser = at_least_one
    )]
    pub max_line_bytes: usize,
    /// Largest body a compressed file may inflate to.
    #[arg(
        long,
        default_value_t = 512 * 1024 * 1024,
        value_name = "BYTES",
        env = "WAFSTREAM_MAX_DECOMPRESSED_BYTES",
        value_parser = at_least_one
    )]
    pub max_decompressed_bytes: usize,
    /// Mapping threads (default: one per available core); output order stays input order.
    #[arg(long, value_name = "N", env = "WAFSTREAM_THREADS", value_parser = at_least_one)]
    pub threads: Option<usize>,
    /// Input files; `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Parse(args) => parse::run(args),
        Command::Run(args) => run::run(*args),
        Command::EsSetup(args) => run::es_setup(args),
        Command::ValidateConfig { file, print_default } => {
            if print_default {
                print!("{}", crate::config::reference(&command()));
                return Ok(ExitCode::SUCCESS);
            }
            let file = file.expect("clap requires FILE without --print-default");
            Ok(crate::config::validate_command(&file, &command()))
        }
        Command::Ingress(args) => run::ingress(*args),
        Command::Worker(args) => run::worker(*args),
        Command::Generate(args) => {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let chunk = 10_000;
            let mut done = 0;
            let mut buf = String::new();
            while done < args.count {
                let n = chunk.min(args.count - done);
                buf.clear();
                crate::generate::lines(args.kind, n, args.seed.wrapping_add(done), &mut buf);
                out.write_all(buf.as_bytes())?;
                done += n;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
