//! The configuration file: TOML with one table per concern. Every key is also a command-line
//! flag and a `WAFSTREAM_*` environment variable, with the same meaning and parsing: the flags'
//! definitions (`src/cli`) are the one definition of each setting — its variable, default,
//! value parser and help — and [`KEYS`] only names the file key of each variable. Precedence:
//! flag, then environment, then file, then default. The file is applied by exporting its keys
//! as the `WAFSTREAM_*` variables that are not already set, so the three sources cannot
//! disagree about names or parsing. `wafstream validate-config --print-default` writes every
//! key with its flag, variable, default and meaning.
//!
//! ```toml
//! [mapping]
//! profile = "elastic"            # or "sekoia"
//! tz = "Europe/Paris"            # zone of device times without one
//! preserve_original_event = true
//!
//! [listen]
//! tcp = "0.0.0.0:9507"           # "off" disables
//! files = ["/var/log/imperva/*.log"]
//!
//! [kafka]
//! brokers = "kafka-0:9092,kafka-1:9092"
//! [kafka.properties]             # passed to librdkafka as is
//! "security.protocol" = "SASL_SSL"
//!
//! [elasticsearch]
//! urls = ["https://es-1:9200", "https://es-2:9200"]
//! api_key = "..."                # masked wherever settings are shown
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

/// File key → the `WAFSTREAM_*` variable (and so the flag) it sets, section by section in the
/// order `--print-default` shows them. `kafka.properties` is a table of librdkafka properties
/// (`WAFSTREAM_KAFKA`, `--kafka key=value`).
pub const KEYS: &[(&str, &str)] = &[
    ("mapping.profile", "WAFSTREAM_PROFILE"),
    ("mapping.tz", "WAFSTREAM_TZ"),
    ("mapping.preserve_original_event", "WAFSTREAM_PRESERVE_ORIGINAL_EVENT"),
    (
        "mapping.preserve_duplicate_custom_fields",
        "WAFSTREAM_PRESERVE_DUPLICATE_CUSTOM_FIELDS",
    ),
    ("mapping.tags", "WAFSTREAM_TAGS"),
    ("mapping.namespace", "WAFSTREAM_NAMESPACE"),
    ("mapping.syslog_fields", "WAFSTREAM_SYSLOG_FIELDS"),
    ("mapping.emit_id", "WAFSTREAM_EMIT_ID"),
    ("mapping.keys_dir", "WAFSTREAM_KEYS_DIR"),
    ("listen.tcp", "WAFSTREAM_LISTEN_TCP"),
    ("listen.udp", "WAFSTREAM_LISTEN_UDP"),
    ("listen.tls", "WAFSTREAM_LISTEN_TLS"),
    ("listen.tls_cert", "WAFSTREAM_TLS_CERT"),
    ("listen.tls_key", "WAFSTREAM_TLS_KEY"),
    ("listen.tls_client_ca", "WAFSTREAM_TLS_CLIENT_CA"),
    ("listen.tls_handshake_timeout_ms", "WAFSTREAM_TLS_HANDSHAKE_TIMEOUT_MS"),
    ("listen.max_message_bytes", "WAFSTREAM_MAX_MESSAGE_BYTES"),
    ("listen.max_connections", "WAFSTREAM_MAX_CONNECTIONS"),
    ("listen.idle_timeout_ms", "WAFSTREAM_IDLE_TIMEOUT_MS"),
    ("listen.bus_capacity", "WAFSTREAM_BUS_CAPACITY"),
    ("listen.files", "WAFSTREAM_FILES"),
    ("listen.file_excludes", "WAFSTREAM_FILE_EXCLUDES"),
    ("listen.file_done", "WAFSTREAM_FILE_DONE"),
    ("listen.file_done_dir", "WAFSTREAM_FILE_DONE_DIR"),
    ("listen.checkpoint", "WAFSTREAM_CHECKPOINT"),
    ("listen.file_poll_ms", "WAFSTREAM_FILE_POLL_MS"),
    ("listen.max_decompressed_bytes", "WAFSTREAM_MAX_DECOMPRESSED_BYTES"),
    ("pull.urls", "WAFSTREAM_PULL_URLS"),
    ("pull.api_ids", "WAFSTREAM_PULL_API_IDS"),
    ("pull.api_keys", "WAFSTREAM_PULL_API_KEYS"),
    ("pull.api_key_files", "WAFSTREAM_PULL_API_KEY_FILES"),
    ("pull.state", "WAFSTREAM_PULL_STATE"),
    ("pull.interval_ms", "WAFSTREAM_PULL_INTERVAL_MS"),
    ("pull.parallel", "WAFSTREAM_PULL_PARALLEL"),
    ("pull.missing_retries", "WAFSTREAM_PULL_MISSING_RETRIES"),
    ("pull.proxy", "WAFSTREAM_PULL_PROXY"),
    ("pull.ca", "WAFSTREAM_PULL_CA"),
    ("pull.request_timeout_ms", "WAFSTREAM_PULL_REQUEST_TIMEOUT_MS"),
    ("hec.listen", "WAFSTREAM_LISTEN_HEC"),
    ("hec.tls", "WAFSTREAM_HEC_TLS"),
    ("hec.tokens", "WAFSTREAM_HEC_TOKENS"),
    ("hec.token_files", "WAFSTREAM_HEC_TOKEN_FILES"),
    ("hec.max_body_bytes", "WAFSTREAM_HEC_MAX_BODY_BYTES"),
    ("hec.max_events", "WAFSTREAM_HEC_MAX_EVENTS"),
    ("hec.max_requests", "WAFSTREAM_HEC_MAX_REQUESTS"),
    ("hec.ack_timeout_ms", "WAFSTREAM_HEC_ACK_TIMEOUT_MS"),
    ("s3.bucket", "WAFSTREAM_S3_BUCKET"),
    ("s3.prefix", "WAFSTREAM_S3_PREFIX"),
    ("s3.region", "WAFSTREAM_S3_REGION"),
    ("s3.endpoint", "WAFSTREAM_S3_ENDPOINT"),
    ("s3.access_key_id", "WAFSTREAM_S3_ACCESS_KEY_ID"),
    ("s3.secret_access_key", "WAFSTREAM_S3_SECRET_ACCESS_KEY"),
    ("s3.state", "WAFSTREAM_S3_STATE"),
    ("s3.interval_ms", "WAFSTREAM_S3_INTERVAL_MS"),
    ("s3.parallel", "WAFSTREAM_S3_PARALLEL"),
    ("s3.request_timeout_ms", "WAFSTREAM_S3_REQUEST_TIMEOUT_MS"),
    ("output.path", "WAFSTREAM_OUTPUT"),
    ("output.dlq", "WAFSTREAM_DLQ"),
    ("pipeline.threads", "WAFSTREAM_THREADS"),
    ("pipeline.drain_timeout_ms", "WAFSTREAM_DRAIN_TIMEOUT_MS"),
    ("pipeline.give_up_after_ms", "WAFSTREAM_GIVE_UP_AFTER_MS"),
    ("parse.max_line_bytes", "WAFSTREAM_MAX_LINE_BYTES"),
    ("kafka.brokers", "WAFSTREAM_BROKERS"),
    ("kafka.raw_topic", "WAFSTREAM_RAW_TOPIC"),
    ("kafka.properties", "WAFSTREAM_KAFKA"),
    ("worker.group", "WAFSTREAM_GROUP"),
    ("worker.topic_securesphere", "WAFSTREAM_TOPIC_SECURESPHERE"),
    ("worker.topic_cloud_waf", "WAFSTREAM_TOPIC_CLOUD_WAF"),
    ("worker.topic_siem", "WAFSTREAM_TOPIC_SIEM"),
    ("worker.dlq_topic", "WAFSTREAM_DLQ_TOPIC"),
    ("worker.max_inflight", "WAFSTREAM_MAX_INFLIGHT"),
    ("worker.exit_when_idle_ms", "WAFSTREAM_EXIT_WHEN_IDLE_MS"),
    ("elasticsearch.urls", "WAFSTREAM_ES_URLS"),
    ("elasticsearch.api_key", "WAFSTREAM_ES_API_KEY"),
    ("elasticsearch.user", "WAFSTREAM_ES_USER"),
    ("elasticsearch.password", "WAFSTREAM_ES_PASSWORD"),
    ("elasticsearch.bearer_token", "WAFSTREAM_ES_BEARER_TOKEN"),
    ("elasticsearch.ca", "WAFSTREAM_ES_CA"),
    ("elasticsearch.client_cert", "WAFSTREAM_ES_CLIENT_CERT"),
    ("elasticsearch.client_key", "WAFSTREAM_ES_CLIENT_KEY"),
    ("elasticsearch.setup", "WAFSTREAM_ES_SETUP"),
    ("elasticsearch.setup_force", "WAFSTREAM_ES_SETUP_FORCE"),
    ("elasticsearch.retention", "WAFSTREAM_ES_RETENTION"),
    ("elasticsearch.max_batch_docs", "WAFSTREAM_ES_MAX_BATCH_DOCS"),
    ("elasticsearch.flush_interval_ms", "WAFSTREAM_ES_FLUSH_INTERVAL_MS"),
    ("elasticsearch.request_timeout_ms", "WAFSTREAM_ES_REQUEST_TIMEOUT_MS"),
    (
        "elasticsearch.max_inflight_requests",
        "WAFSTREAM_ES_MAX_INFLIGHT_REQUESTS",
    ),
    ("elasticsearch.backoff_max_ms", "WAFSTREAM_ES_BACKOFF_MAX_MS"),
    ("telemetry.metrics_addr", "WAFSTREAM_METRICS_ADDR"),
    ("telemetry.otlp_endpoint", "WAFSTREAM_OTLP_ENDPOINT"),
    ("telemetry.otlp_interval_ms", "WAFSTREAM_OTLP_INTERVAL_MS"),
    ("telemetry.log_format", "WAFSTREAM_LOG_FORMAT"),
    ("telemetry.log_level", "WAFSTREAM_LOG_LEVEL"),
    ("processors", "WAFSTREAM_PROCESSORS"),
    ("input_processors", "WAFSTREAM_INPUT_PROCESSORS"),
];

/// The processor lists of `--processors` / `--input-processors`: a file (YAML, JSON, or TOML
/// by its `.toml` name) or the value inline (JSON or YAML). A top-level `key` (`processors`,
/// `input_processors`) is unwrapped.
pub fn processors_value(arg: &str, key: &str) -> Result<serde_json::Value, Vec<String>> {
    let t = arg.trim_start();
    let v: serde_json::Value = if t.starts_with('[') || t.starts_with('{') {
        serde_yaml::from_str(arg).map_err(|e| vec![format!("{key}: {e}")])?
    } else {
        let text = std::fs::read_to_string(arg).map_err(|e| vec![format!("{arg}: {e}")])?;
        if arg.ends_with(".toml") {
            let v: toml::Value = toml::from_str(&text).map_err(|e| vec![format!("{arg}: {e}")])?;
            serde_json::to_value(v).map_err(|e| vec![format!("{arg}: {e}")])?
        } else {
            serde_yaml::from_str(&text).map_err(|e| vec![format!("{arg}: {e}")])?
        }
    };
    Ok(match v {
        serde_json::Value::Object(mut m) if m.contains_key(key) => m.remove(key).unwrap_or_default(),
        other => other,
    })
}

/// The variable a file key sets.
fn env_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
}

/// Every argument of `cmd` and its subcommands, with the subcommand path it belongs to.
pub fn all_args(cmd: &clap::Command) -> Vec<(String, clap::Arg)> {
    fn walk(c: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in c.get_arguments() {
            out.push((path.to_string(), a.clone()));
        }
        for sub in c.get_subcommands() {
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, "", &mut out);
    out
}

/// The argument reading `env`, and the subcommands that have it.
fn arg_of(cmd: &clap::Command, env: &str) -> Option<(clap::Arg, Vec<String>)> {
    let mut found: Option<clap::Arg> = None;
    let mut used = Vec::new();
    for (path, a) in all_args(cmd) {
        if a.get_env() == Some(OsStr::new(env)) {
            found.get_or_insert(a);
            let p = if path.is_empty() { "all".to_string() } else { path };
            if !used.contains(&p) {
                used.push(p);
            }
        }
    }
    found.map(|a| (a, used))
}

/// A file, loaded and checked.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The `WAFSTREAM_*` variables it sets, in [`KEYS`] order.
    pub env: Vec<(String, String)>,
    /// Every problem found (all of them, not just the first).
    pub problems: Vec<String>,
}

/// A scalar TOML value as the flag would read it.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The known key closest to an unknown one (same name in another table, or a small typo).
fn suggestion(key: &str) -> Option<&'static str> {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if let Some((k, _)) = KEYS.iter().find(|(k, _)| k.rsplit('.').next() == Some(leaf)) {
        return Some(k);
    }
    KEYS.iter()
        .map(|(k, _)| (distance(k, key), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance (short strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parse and check a file's text against the command-line definition `cmd`.
pub fn load_text(text: &str, cmd: &clap::Command) -> Result<Loaded, String> {
    let root: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Loaded::default();
    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    for (section, v) in &root {
        if section == "processors" || section == "input_processors" {
            // `[[processors]]`, `[[input_processors.<input>]]`: checked whole here, handed on
            // as JSON.
            let (env, all) = if section == "processors" {
                ("WAFSTREAM_PROCESSORS", true)
            } else {
                ("WAFSTREAM_INPUT_PROCESSORS", false)
            };
            match serde_json::to_value(v) {
                Ok(json) => {
                    let checked = if all {
                        crate::ecs::processors::ProcessorSet::parse(Some(&json), None)
                    } else {
                        crate::ecs::processors::ProcessorSet::parse(None, Some(&json))
                    };
                    match checked {
                        Ok(_) => {
                            values.insert(env, json.to_string());
                        }
                        Err(problems) => out.problems.extend(problems),
                    }
                }
                Err(e) => out.problems.push(format!("{section}: {e}")),
            }
            continue;
        }
        let Some(table) = v.as_table() else {
            out.problems.push(format!(
                "{section}: keys belong in a table such as [{}]",
                suggestion(section)
                    .and_then(|k| k.split('.').next())
                    .unwrap_or("mapping")
            ));
            continue;
        };
        for (name, v) in table {
            let key = format!("{section}.{name}");
            let Some(env) = env_of(&key) else {
                out.problems.push(match suggestion(&key) {
                    Some(s) => format!("{key}: unknown key (did you mean {s}?)"),
                    None => format!("{key}: unknown key (see `wafstream validate-config --print-default`)"),
                });
                continue;
            };
            // An empty list sets nothing (the flag's default stays).
            if v.as_array().is_some_and(|a| a.is_empty()) {
                continue;
            }
            if key == "kafka.properties" {
                match kafka_properties(v) {
                    Ok(s) => {
                        values.insert(env, s);
                    }
                    Err(e) => out.problems.push(format!("{key}: {e}")),
                }
                continue;
            }
            match check_value(cmd, env, v) {
                Ok(s) => {
                    values.insert(env, s);
                }
                Err(e) => out.problems.push(format!("{key} = {v}: {e}")),
            }
        }
    }
    out.problems.extend(cross_checks(&values));
    for (_, env) in KEYS {
        if let Some(v) = values.remove(env) {
            out.env.push((env.to_string(), v));
        }
    }
    Ok(out)
}

/// `[kafka.properties]` → `key=value;key=value`.
fn kafka_properties(v: &toml::Value) -> Result<String, String> {
    let t = v
        .as_table()
        .ok_or("expected a table of librdkafka properties, e.g. [kafka.properties] \"security.protocol\" = \"SSL\"")?;
    let mut pairs = Vec::new();
    let mut bad = Vec::new();
    for (k, v) in t {
        let Some(v) = scalar(v) else {
            bad.push(format!("{k}: expected a string, number or boolean"));
            continue;
        };
        if k.contains('=') || k.contains(';') || v.contains(';') {
            bad.push(format!("{k}: keys may not contain '=' and neither keys nor values ';'"));
            continue;
        }
        pairs.push(format!("{k}={v}"));
    }
    if bad.is_empty() {
        Ok(pairs.join(";"))
    } else {
        Err(bad.join("; "))
    }
}

/// A value checked by the value parser of the flag that reads `env`; returned as the variable
/// would hold it.
fn check_value(cmd: &clap::Command, env: &str, v: &toml::Value) -> Result<String, String> {
    let Some((arg, _)) = arg_of(cmd, env) else {
        return Err(format!("no flag reads {env}"));
    };
    let is_flag = !arg.get_action().takes_values();
    let delimiter = arg.get_value_delimiter();
    let pieces: Vec<String> = match v {
        toml::Value::Array(items) => {
            let Some(d) = delimiter else {
                return Err("expected a single value, not a list".into());
            };
            let mut p = Vec::new();
            for i in items {
                let s = scalar(i).ok_or("list items must be strings or numbers")?;
                if s.contains(d) {
                    return Err(format!("an item may not contain {d:?}"));
                }
                p.push(s);
            }
            p
        }
        toml::Value::Boolean(_) if !is_flag => return Err("expected a value, not true/false".into()),
        _ if is_flag => {
            return match v {
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err("expected true or false".into()),
            };
        }
        other => {
            let s = scalar(other).ok_or("expected a string or a number")?;
            match delimiter {
                Some(d) => s.split(d).map(str::to_string).collect(),
                None => vec![s],
            }
        }
    };
    // The flag's own value parser, in a one-argument command.
    let check = clap::Command::new("check").no_binary_name(true).arg(
        clap::Arg::new("v")
            .long("v")
            .num_args(1)
            .value_parser(arg.get_value_parser().clone()),
    );
    for p in &pieces {
        if let Err(e) = check.clone().try_get_matches_from([format!("--v={p}")]) {
            return Err(clap_message(&e));
        }
    }
    Ok(match delimiter {
        Some(d) => pieces.join(&d.to_string()),
        None => pieces.concat(),
    })
}

/// The reason in a value parser's error, without clap's decorations.
fn clap_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let mut why = e
        .context()
        .find_map(|(k, v)| match (k, v) {
            (ContextKind::Custom, ContextValue::String(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    if let Some(ContextValue::Strings(v)) = e.get(ContextKind::ValidValue) {
        why = format!("expected one of {}", v.join(", "));
    }
    if why.is_empty() {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
        why = match first.rsplit_once(": ") {
            Some((_, reason)) => reason.to_string(),
            None => first.to_string(),
        };
    }
    why
}

/// Problems between keys or with the machine: files that must exist, folders to write into.
fn cross_checks(v: &BTreeMap<&'static str, String>) -> Vec<String> {
    let mut p = Vec::new();
    let get = |env: &str| v.get(env).map(String::as_str);
    let tls_on = get("WAFSTREAM_LISTEN_TLS").is_some_and(|t| !t.is_empty() && !t.eq_ignore_ascii_case("off"));
    if tls_on && (get("WAFSTREAM_TLS_CERT").is_none() || get("WAFSTREAM_TLS_KEY").is_none()) {
        p.push("listen.tls is set: listen.tls_cert and listen.tls_key are required".into());
    }
    let hec_on = get("WAFSTREAM_LISTEN_HEC").is_some_and(|t| !t.is_empty() && !t.eq_ignore_ascii_case("off"));
    if hec_on && get("WAFSTREAM_HEC_TOKENS").is_none() && get("WAFSTREAM_HEC_TOKEN_FILES").is_none() {
        p.push("hec.listen is set: at least one of hec.tokens or hec.token_files is required".into());
    }
    if get("WAFSTREAM_HEC_TLS").is_some_and(|t| t == "true")
        && (get("WAFSTREAM_TLS_CERT").is_none() || get("WAFSTREAM_TLS_KEY").is_none())
    {
        p.push("hec.tls is set: listen.tls_cert and listen.tls_key are required".into());
    }
    if let Some(files) = get("WAFSTREAM_HEC_TOKEN_FILES") {
        for f in files.split(',').filter(|f| !f.is_empty()) {
            if !Path::new(f).is_file() {
                p.push(format!("hec.token_files: {f:?}: no such file"));
            }
        }
    }
    for (key, env) in [
        ("listen.tls_cert", "WAFSTREAM_TLS_CERT"),
        ("listen.tls_key", "WAFSTREAM_TLS_KEY"),
        ("listen.tls_client_ca", "WAFSTREAM_TLS_CLIENT_CA"),
        ("elasticsearch.ca", "WAFSTREAM_ES_CA"),
        ("pull.ca", "WAFSTREAM_PULL_CA"),
        ("elasticsearch.client_cert", "WAFSTREAM_ES_CLIENT_CERT"),
        ("elasticsearch.client_key", "WAFSTREAM_ES_CLIENT_KEY"),
    ] {
        if let Some(f) = get(env) {
            if !Path::new(f).is_file() {
                p.push(format!("{key} = {f:?}: no such file"));
            }
        }
    }
    if get("WAFSTREAM_ES_CLIENT_CERT").is_some() != get("WAFSTREAM_ES_CLIENT_KEY").is_some() {
        p.push("elasticsearch.client_cert and elasticsearch.client_key go together".into());
    }
    if let Some(d) = get("WAFSTREAM_KEYS_DIR") {
        if !Path::new(d).is_dir() {
            p.push(format!("mapping.keys_dir = {d:?}: no such directory"));
        }
    }
    // Folders that must already exist: a missing one would fail only later, in a loop.
    for (key, env) in [
        ("listen.checkpoint", "WAFSTREAM_CHECKPOINT"),
        ("s3.state", "WAFSTREAM_S3_STATE"),
        ("output.path", "WAFSTREAM_OUTPUT"),
        ("output.dlq", "WAFSTREAM_DLQ"),
    ] {
        if let Some(f) = get(env).filter(|f| *f != "-") {
            let dir = match Path::new(f).parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                p.push(format!("{key} = {f:?}: folder {} does not exist", dir.display()));
            }
        }
    }
    if let Some(files) = get("WAFSTREAM_FILES") {
        for f in files.split(',') {
            if glob::Pattern::new(f).is_err() {
                p.push(format!("listen.files: {f:?} is not a usable glob"));
            }
        }
    }
    if let Some(files) = get("WAFSTREAM_PULL_API_KEY_FILES") {
        for f in files.split(',') {
            if !Path::new(f).is_file() {
                p.push(format!("pull.api_key_files: {f:?}: no such file"));
            }
        }
    }
    if let Some(urls) = get("WAFSTREAM_PULL_URLS") {
        let n = urls.split(',').count();
        for (key, env) in [
            ("pull.api_ids", "WAFSTREAM_PULL_API_IDS"),
            ("pull.api_keys", "WAFSTREAM_PULL_API_KEYS"),
            ("pull.api_key_files", "WAFSTREAM_PULL_API_KEY_FILES"),
        ] {
            if let Some(v) = get(env) {
                if v.split(',').count() != n {
                    p.push(format!(
                        "{key}: {} given for {n} pull.urls (one per account, in the same order)",
                        v.split(',').count()
                    ));
                }
            }
        }
    }
    if get("WAFSTREAM_S3_ACCESS_KEY_ID").is_some() != get("WAFSTREAM_S3_SECRET_ACCESS_KEY").is_some() {
        p.push("s3.access_key_id and s3.secret_access_key go together".into());
    }
    if get("WAFSTREAM_BROKERS").is_some_and(|b| b.trim().is_empty()) {
        p.push("kafka.brokers is empty".into());
    }
    p
}

/// Load a file and check it against `cmd`.
pub fn load(path: &Path, cmd: &clap::Command) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    load_text(&text, cmd).map_err(|e| format!("{}: {e}", path.display()))
}

/// Export the file's settings as environment variables not already set (the environment
/// wins over the file). Must run before any thread starts.
pub fn apply(path: &Path, cmd: &clap::Command) -> Result<(), String> {
    let f = load(path, cmd)?;
    if !f.problems.is_empty() {
        return Err(format!("{}:\n  {}", path.display(), f.problems.join("\n  ")));
    }
    for (k, v) in f.env {
        if std::env::var_os(&k).is_none() {
            // SAFETY: called from `main` before the runtime or any other thread is started, so
            // no other thread can be reading the environment concurrently.
            unsafe { std::env::set_var(&k, v) };
        }
    }
    Ok(())
}

/// Every key as a commented TOML file: meaning, flag, variable, the subcommands that read it,
/// and its default.
pub fn reference(cmd: &clap::Command) -> String {
    let mut out = String::new();
    let mut section = "";
    for (key, env) in KEYS {
        if *key == "input_processors" {
            out.push_str(
                "# Processors for the documents of one input kind only (tcp, udp, tls, file, stdin, pull, s3),\n# after the list above:\n#   --input-processors, WAFSTREAM_INPUT_PROCESSORS; parse, run, worker\n# [[input_processors.tcp]]\n# add_labels = { labels = { source = \"securesphere-gateways\" } }\n",
            );
            continue;
        }
        if *key == "processors" {
            out.push_str(
                "\n# Processors applied to each document, in order (see README \"Processors\"):\n#   --processors, WAFSTREAM_PROCESSORS; parse, run, worker\n# [[processors]]\n# drop_event = { when = { equals = { \"event.action\" = \"REQ_PASSED\" } } }\n",
            );
            continue;
        }
        let (sec, name) = key.split_once('.').unwrap_or(("", key));
        if sec != section {
            if !section.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{sec}]\n"));
            section = sec;
        }
        let Some((arg, used)) = arg_of(cmd, env) else {
            continue;
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        for line in wrap(&help, 94) {
            out.push_str(&format!("# {line}\n"));
        }
        let flag = arg.get_long().map(|l| format!("--{l}")).unwrap_or_default();
        out.push_str(&format!("#   {flag}, {env}; {}\n", used.join(", ")));
        if *key == "kafka.properties" {
            out.push_str("# [kafka.properties]\n# \"security.protocol\" = \"SASL_SSL\"\n");
            continue;
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let value = if !arg.get_action().takes_values() {
            "false".to_string()
        } else if arg.get_value_delimiter().is_some() {
            format!(
                "[{}]",
                defaults.iter().map(|d| toml_scalar(d)).collect::<Vec<_>>().join(", ")
            )
        } else if let Some(d) = defaults.first() {
            toml_scalar(d)
        } else {
            let what = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| "VALUE".into());
            format!("\"\"  # {what}; not set by default")
        };
        out.push_str(&format!("#{name} = {value}\n"));
    }
    out
}

fn toml_scalar(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.to_string()
    } else {
        toml::Value::String(s.to_string()).to_string()
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
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
pub fn validate_command(path: &Path, cmd: &clap::Command) -> ExitCode {
    match load(path, cmd) {
        Err(e) => {
            eprintln!("wafstream: {e}");
            ExitCode::from(1)
        }
        Ok(f) => {
            if f.problems.is_empty() {
                for (k, v) in &f.env {
                    println!("{k}={}", masked(k, v));
                }
                eprintln!("wafstream: {} is valid", path.display());
                ExitCode::SUCCESS
            } else {
                for p in &f.problems {
                    eprintln!("wafstream: {}: {p}", path.display());
                }
                eprintln!("wafstream: {} problem(s)", f.problems.len());
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        load_text(text, &crate::cli::command()).expect("parses")
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let f = load(
            r#"
            [mapping]
            profile = "splunk"
            tz = "Mars/Olympus"
            namespace = "a-b"
            profil = "elastic"
            [listen]
            tcp = "not an address"
            tls = "127.0.0.1:6514"
            max_connections = 0
            bogus = 1
            [elasticsearch]
            max_batch_docs = "many"
            "#,
        );
        let p = &f.problems;
        assert_eq!(p.len(), 9, "{p:#?}");
        for want in [
            "listen.max_connections = 0",
            "mapping.profile",
            "mapping.tz",
            "mapping.namespace",
            "listen.tcp",
            "tls_cert and listen.tls_key",
            "mapping.profil: unknown key (did you mean mapping.profile?)",
            "listen.bogus: unknown key",
            "elasticsearch.max_batch_docs",
        ] {
            assert!(p.iter().any(|x| x.contains(want)), "{want} not in {p:#?}");
        }
    }

    #[test]
    fn settings_become_the_flags_variables() {
        let f = load(
            "[mapping]\ntz = \"+0200\"\ntags = [\"a\", \"b\"]\npreserve_original_event = true\n[kafka]\nbrokers = \"k:9092\"\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/ca.pem\"\n[elasticsearch]\nurls = [\"http://a:9200\", \"http://b:9200\"]\nmax_batch_docs = 200\n",
        );
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        let env: BTreeMap<String, String> = f.env.into_iter().collect();
        assert_eq!(env["WAFSTREAM_TZ"], "+0200");
        assert_eq!(env["WAFSTREAM_TAGS"], "a,b");
        assert_eq!(env["WAFSTREAM_PRESERVE_ORIGINAL_EVENT"], "true");
        assert_eq!(env["WAFSTREAM_BROKERS"], "k:9092");
        assert_eq!(env["WAFSTREAM_KAFKA"], "security.protocol=SSL;ssl.ca.location=/ca.pem");
        assert_eq!(env["WAFSTREAM_ES_URLS"], "http://a:9200,http://b:9200");
        assert_eq!(env["WAFSTREAM_ES_MAX_BATCH_DOCS"], "200");
    }

    #[test]
    fn types_are_checked_by_the_flags_parsers() {
        let f = load(
            "[mapping]\npreserve_original_event = \"yes\"\nprofile = true\n[listen]\nfiles = \"a.log,b.log\"\nmax_message_bytes = [1, 2]\n",
        );
        assert_eq!(f.problems.len(), 3, "{:#?}", f.problems);
        assert!(
            f.problems
                .iter()
                .any(|p| p.contains("preserve_original_event") && p.contains("true or false"))
        );
        assert!(
            f.problems
                .iter()
                .any(|p| p.contains("mapping.profile") && p.contains("not true/false"))
        );
        assert!(
            f.problems
                .iter()
                .any(|p| p.contains("max_message_bytes") && p.contains("not a list"))
        );
    }
}
