//! The configuration file: TOML with one table per concern. Every key has the same meaning as
//! the command-line flag of the same name and the `WAFSTREAM_<KEY>` environment variable;
//! precedence is flag, then environment, then file, then default. The file is loaded by
//! exporting its keys as `WAFSTREAM_*` variables that are not already set, so the three
//! sources can never disagree about names or parsing.
//!
//! ```toml
//! [mapping]
//! profile = "elastic"            # or "sekoia"
//! tz = "Europe/Paris"            # zone of device times without one
//! preserve_original_event = true
//! tags = ["dc1"]
//! namespace = "prod"
//!
//! [listen]
//! tcp = "0.0.0.0:9507"           # "off" disables
//! udp = "0.0.0.0:9507"
//! tls = "0.0.0.0:6514"
//! tls_cert = "/etc/wafstream/tls/server.pem"
//! tls_key = "/etc/wafstream/tls/server.key"
//! max_message_bytes = 51200
//! files = ["/var/log/imperva/*.log"]
//! checkpoint = "/var/lib/wafstream/files.json"
//!
//! [kafka]
//! brokers = "kafka-0:9092,kafka-1:9092"
//! raw_topic = "imperva.raw"
//! [kafka.properties]             # passed to librdkafka as is
//! "security.protocol" = "SASL_SSL"
//!
//! [worker]
//! group = "wafstream"
//! dlq_topic = "imperva.dlq"
//!
//! [pipeline]
//! threads = 4                    # mapping threads (default: one per core)
//!
//! [telemetry]
//! metrics_addr = "0.0.0.0:9508"  # Prometheus GET /metrics, /healthz, /readyz
//! log_format = "json"            # or "human"
//! log_level = "info"             # or a RUST_LOG-style filter
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use serde::Deserialize;

use crate::parse::time::Zone;

/// `[mapping]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `elastic` or `sekoia`.
    pub profile: Option<String>,
    /// IANA zone or `±HHMM` for device times without a zone.
    pub tz: Option<String>,
    pub preserve_original_event: Option<bool>,
    pub preserve_duplicate_custom_fields: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub syslog_fields: Option<bool>,
    /// Directory of Cloud WAF private keys (`<dir>/<publicKeyId>/Private.key`).
    pub keys_dir: Option<String>,
}

/// `[listen]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub tcp: Option<String>,
    pub udp: Option<String>,
    pub tls: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_client_ca: Option<String>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub bus_capacity: Option<u64>,
    /// Globs of files to follow.
    pub files: Option<Vec<String>>,
    /// Checkpoint file for file progress.
    pub checkpoint: Option<String>,
    pub file_poll_ms: Option<u64>,
    /// Largest body a compressed Imperva or gzip file may inflate to.
    pub max_decompressed_bytes: Option<u64>,
}

/// `[pipeline]` (parse, run, worker)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Mapping threads.
    pub threads: Option<u64>,
    /// How long a stop waits for outputs in flight.
    pub drain_timeout_ms: Option<u64>,
}

/// `[kafka]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub brokers: Option<String>,
    pub raw_topic: Option<String>,
    /// librdkafka properties passed through.
    pub properties: Option<BTreeMap<String, String>>,
}

/// `[worker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub group: Option<String>,
    pub topic_securesphere: Option<String>,
    pub topic_cloud_waf: Option<String>,
    pub dlq_topic: Option<String>,
    pub max_inflight: Option<u64>,
}

/// `[output]` (embedded `run` mode)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// NDJSON documents: a file, or `-` for stdout.
    pub path: Option<String>,
    /// Dead-letter records, when not with the documents.
    pub dlq: Option<String>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// `ip:port` of the Prometheus `/metrics` endpoint, or `off`.
    pub metrics_addr: Option<String>,
    /// `human` or `json`.
    pub log_format: Option<String>,
    /// Level or `RUST_LOG`-style filter.
    pub log_level: Option<String>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub mapping: Mapping,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub kafka: Kafka,
    #[serde(default)]
    pub worker: Worker,
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub pipeline: Pipeline,
    #[serde(default)]
    pub telemetry: Telemetry,
}

impl File {
    pub fn parse(text: &str) -> Result<File, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn load(path: &Path) -> Result<File, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        File::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every problem in the file, not just the first.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let m = &self.mapping;
        if let Some(profile) = &m.profile {
            if !matches!(profile.as_str(), "elastic" | "sekoia") {
                p.push(format!(
                    "mapping.profile = {profile:?}: expected \"elastic\" or \"sekoia\""
                ));
            }
        }
        if let Some(tz) = &m.tz {
            if Zone::parse(tz).is_none() {
                p.push(format!("mapping.tz = {tz:?}: not an IANA zone or ±HHMM offset"));
            }
        }
        if let Some(ns) = &m.namespace {
            if ns.is_empty() || ns.contains(['-', ' ', '*', '\\', '/', '?', '"', '<', '>', '|', ',']) {
                p.push(format!(
                    "mapping.namespace = {ns:?}: must be non-empty, without '-' or spaces"
                ));
            }
        }
        if let Some(tags) = &m.tags {
            if tags.iter().any(|t| t.contains(',')) {
                p.push("mapping.tags: a tag may not contain ','".into());
            }
        }
        let l = &self.listen;
        for (name, v) in [
            ("listen.tcp", &l.tcp),
            ("listen.udp", &l.udp),
            ("listen.tls", &l.tls),
            ("telemetry.metrics_addr", &self.telemetry.metrics_addr),
        ] {
            if let Some(a) = v {
                if !a.eq_ignore_ascii_case("off") && a.parse::<std::net::SocketAddr>().is_err() {
                    p.push(format!("{name} = {a:?}: expected ip:port or \"off\""));
                }
            }
        }
        let tls_on = l.tls.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("off"));
        if tls_on && (l.tls_cert.is_none() || l.tls_key.is_none()) {
            p.push("listen.tls is set: listen.tls_cert and listen.tls_key are required".into());
        }
        for (name, v) in [
            ("listen.tls_cert", &l.tls_cert),
            ("listen.tls_key", &l.tls_key),
            ("listen.tls_client_ca", &l.tls_client_ca),
        ] {
            if let Some(f) = v {
                if !Path::new(f).is_file() {
                    p.push(format!("{name} = {f:?}: no such file"));
                }
            }
        }
        for (name, v) in [
            ("listen.max_message_bytes", l.max_message_bytes),
            ("listen.max_connections", l.max_connections),
            ("listen.bus_capacity", l.bus_capacity),
            ("worker.max_inflight", self.worker.max_inflight),
            ("pipeline.threads", self.pipeline.threads),
            ("listen.max_decompressed_bytes", l.max_decompressed_bytes),
        ] {
            if v == Some(0) {
                p.push(format!("{name} = 0: must be at least 1"));
            }
        }
        // Folders that must already exist: a missing one would fail only later, in a loop.
        for (name, v) in [
            ("listen.checkpoint", &l.checkpoint),
            ("output.path", &self.output.path),
            ("output.dlq", &self.output.dlq),
        ] {
            if let Some(f) = v.as_deref().filter(|f| *f != "-") {
                let dir = match Path::new(f).parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    p.push(format!("{name} = {f:?}: folder {} does not exist", dir.display()));
                }
            }
        }
        if let Some(files) = &l.files {
            for f in files {
                if f.contains(',') || glob::Pattern::new(f).is_err() {
                    p.push(format!("listen.files: {f:?} is not a usable glob (no ',' allowed)"));
                }
            }
        }
        if let Some(f) = &self.telemetry.log_format {
            if !matches!(f.as_str(), "human" | "json") {
                p.push(format!("telemetry.log_format = {f:?}: expected \"human\" or \"json\""));
            }
        }
        if let Some(b) = &self.kafka.brokers {
            if b.trim().is_empty() {
                p.push("kafka.brokers is empty".into());
            }
        }
        if let Some(props) = &self.kafka.properties {
            for (k, v) in props {
                if k.contains('=') || k.contains(';') || v.contains(';') {
                    p.push(format!(
                        "kafka.properties.{k}: keys may not contain '=' and neither keys nor values ';'"
                    ));
                }
            }
        }
        p
    }

    /// The settings as the `WAFSTREAM_*` variables the flags read.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                e.push((format!("WAFSTREAM_{k}"), v));
            }
        };
        let m = &self.mapping;
        put("PROFILE", m.profile.clone());
        put("TZ", m.tz.clone());
        put(
            "PRESERVE_ORIGINAL_EVENT",
            m.preserve_original_event.map(|b| b.to_string()),
        );
        put(
            "PRESERVE_DUPLICATE_CUSTOM_FIELDS",
            m.preserve_duplicate_custom_fields.map(|b| b.to_string()),
        );
        put("TAGS", m.tags.as_ref().map(|t| t.join(",")));
        put("NAMESPACE", m.namespace.clone());
        put("SYSLOG_FIELDS", m.syslog_fields.map(|b| b.to_string()));
        put("KEYS_DIR", m.keys_dir.clone());
        let l = &self.listen;
        put("LISTEN_TCP", l.tcp.clone());
        put("LISTEN_UDP", l.udp.clone());
        put("LISTEN_TLS", l.tls.clone());
        put("TLS_CERT", l.tls_cert.clone());
        put("TLS_KEY", l.tls_key.clone());
        put("TLS_CLIENT_CA", l.tls_client_ca.clone());
        put(
            "TLS_HANDSHAKE_TIMEOUT_MS",
            l.tls_handshake_timeout_ms.map(|v| v.to_string()),
        );
        put("MAX_MESSAGE_BYTES", l.max_message_bytes.map(|v| v.to_string()));
        put("MAX_CONNECTIONS", l.max_connections.map(|v| v.to_string()));
        put("IDLE_TIMEOUT_MS", l.idle_timeout_ms.map(|v| v.to_string()));
        put("BUS_CAPACITY", l.bus_capacity.map(|v| v.to_string()));
        put("FILES", l.files.as_ref().map(|f| f.join(",")));
        put("CHECKPOINT", l.checkpoint.clone());
        put("FILE_POLL_MS", l.file_poll_ms.map(|v| v.to_string()));
        put(
            "MAX_DECOMPRESSED_BYTES",
            l.max_decompressed_bytes.map(|v| v.to_string()),
        );
        put("THREADS", self.pipeline.threads.map(|v| v.to_string()));
        put(
            "DRAIN_TIMEOUT_MS",
            self.pipeline.drain_timeout_ms.map(|v| v.to_string()),
        );
        let k = &self.kafka;
        put("BROKERS", k.brokers.clone());
        put("RAW_TOPIC", k.raw_topic.clone());
        put(
            "KAFKA",
            k.properties
                .as_ref()
                .map(|p| p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")),
        );
        let w = &self.worker;
        put("GROUP", w.group.clone());
        put("TOPIC_SECURESPHERE", w.topic_securesphere.clone());
        put("TOPIC_CLOUD_WAF", w.topic_cloud_waf.clone());
        put("DLQ_TOPIC", w.dlq_topic.clone());
        put("MAX_INFLIGHT", w.max_inflight.map(|v| v.to_string()));
        let o = &self.output;
        put("OUTPUT", o.path.clone());
        put("DLQ", o.dlq.clone());
        put("METRICS_ADDR", self.telemetry.metrics_addr.clone());
        put("LOG_FORMAT", self.telemetry.log_format.clone());
        put("LOG_LEVEL", self.telemetry.log_level.clone());
        e
    }
}

/// Export the file's settings as environment variables not already set (the environment
/// wins over the file). Must run before any thread starts.
pub fn apply(path: &Path) -> Result<(), String> {
    let f = File::load(path)?;
    let problems = f.problems();
    if !problems.is_empty() {
        return Err(format!("{}:\n  {}", path.display(), problems.join("\n  ")));
    }
    for (k, v) in f.env() {
        if std::env::var_os(&k).is_none() {
            // SAFETY: called from `main` before the runtime or any other thread is started, so
            // no other thread can be reading the environment concurrently.
            unsafe { std::env::set_var(&k, v) };
        }
    }
    Ok(())
}

/// Whether a setting's name says it holds a secret (password, key material, token).
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "api_key",
        "api-key",
        "apikey",
        "jaas",
        "ssl.key.pem",
        "private",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// A setting as it may be shown: secrets (and the secret `key=value` pairs of pass-through
/// properties) replaced by `****`.
pub fn masked(name: &str, value: &str) -> String {
    if is_secret(name) {
        return "****".into();
    }
    if name == "WAFSTREAM_KAFKA" {
        return value
            .split(';')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret(k) => format!("{k}=****"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";");
    }
    value.to_string()
}

/// `wafstream validate-config FILE`.
pub fn validate_command(path: &Path) -> ExitCode {
    match File::load(path) {
        Err(e) => {
            eprintln!("wafstream: {e}");
            ExitCode::from(1)
        }
        Ok(f) => {
            let problems = f.problems();
            if problems.is_empty() {
                for (k, v) in f.env() {
                    println!("{k}={}", masked(&k, &v));
                }
                eprintln!("wafstream: {} is valid", path.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("wafstream: {}: {p}", path.display());
                }
                eprintln!("wafstream: {} problem(s)", problems.len());
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = File::parse(
            r#"
            [mapping]
            profile = "splunk"
            tz = "Mars/Olympus"
            namespace = "a-b"
            [listen]
            tcp = "not an address"
            tls = "127.0.0.1:6514"
            max_connections = 0
            "#,
        )
        .expect("parses");
        let p = f.problems();
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p.iter().any(|x| x.contains("listen.max_connections = 0")));
        assert!(p.iter().any(|x| x.contains("mapping.profile")));
        assert!(p.iter().any(|x| x.contains("mapping.tz")));
        assert!(p.iter().any(|x| x.contains("mapping.namespace")));
        assert!(p.iter().any(|x| x.contains("listen.tcp")));
        assert!(p.iter().any(|x| x.contains("tls_cert and listen.tls_key")));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = File::parse("[mapping]\nprofil = \"elastic\"\n").unwrap_err();
        assert!(e.contains("profil"), "{e}");
    }

    #[test]
    fn settings_become_the_flags_variables() {
        let f = File::parse(
            "[mapping]\ntz = \"+0200\"\ntags = [\"a\", \"b\"]\n[kafka]\nbrokers = \"k:9092\"\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/ca.pem\"\n",
        )
        .expect("parses");
        let env: BTreeMap<String, String> = f.env().into_iter().collect();
        assert_eq!(env["WAFSTREAM_TZ"], "+0200");
        assert_eq!(env["WAFSTREAM_TAGS"], "a,b");
        assert_eq!(env["WAFSTREAM_BROKERS"], "k:9092");
        assert_eq!(env["WAFSTREAM_KAFKA"], "security.protocol=SSL;ssl.ca.location=/ca.pem");
    }
}
