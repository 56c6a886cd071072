//! Conformance: the peers' own test cases from `../shared/conformance/cases.jsonl`, compared
//! field for field with the owner's profile (`elastic/*` → elastic, `sekoia/*` → sekoia).
//! Raw-only cases must parse with no error and keep every key=value pair; the non-ECS
//! assertions of Apache Metron and ParCEFone are checked through a name table.
//!
//! The corpus is third-party data and is read in place, never copied into the repository.
//! Without it the tests say SKIPPED; under CI (`CI=true`) or with `WAFSTREAM_REQUIRE_CONFORMANCE=1`
//! they fail instead.

mod support;

use std::path::Path;

use serde_json::{Map, Value};
use wafstream::container::{self, KeyStore, Limits};
use wafstream::ecs::{FrameMeta, Mapper, Options, Profile};
use wafstream::parse;

const NOW_MS: i64 = 1_700_000_000_000;

fn cases(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("cases.jsonl")).expect("read cases.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("case JSON"))
        .collect()
}

fn map_line(line: &str, opts: Options) -> Value {
    let mapper = Mapper::new(opts);
    let meta = FrameMeta {
        received_ms: NOW_MS,
        input: "file",
        source: None,
        peer: None,
        offset: None,
        tz: None,
        occurrence: None,
        ..FrameMeta::default()
    };
    let mut out = Vec::new();
    let m = mapper.map(line.as_bytes(), &meta, None, &mut out);
    let v: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&out)));
    assert!(!m.is_dead(), "dead-lettered: {:?} for {line}", m.error);
    v
}

/// Rebuild a CEF line from the decoder output a pipeline test starts from.
fn rebuild_cef(pi: &Value) -> String {
    const SHORT: &[(&str, &str)] = &[
        ("deviceAction", "act"),
        ("destinationAddress", "dst"),
        ("destinationPort", "dpt"),
        ("destinationUserName", "duser"),
        ("sourceAddress", "src"),
        ("sourcePort", "spt"),
        ("sourceUserName", "suser"),
        ("transportProtocol", "proto"),
        ("deviceReceiptTime", "rt"),
        ("deviceEventCategory", "cat"),
    ];
    let cef = &pi["cef"];
    let dev = &cef["device"];
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let mut line = format!(
        "CEF:{}|{}|{}|{}|{}|{}|{}|",
        s(&cef["version"]),
        s(&dev["vendor"]),
        s(&dev["product"]),
        s(&dev["version"]),
        s(&dev["event_class_id"]),
        s(&cef["name"]),
        s(&cef["severity"])
    );
    let mut parts = vec![];
    for (k, v) in cef["extensions"].as_object().expect("extensions") {
        let key = SHORT
            .iter()
            .find(|(l, _)| l == k)
            .map(|(_, sh)| sh.to_string())
            .unwrap_or_else(|| k.replace("deviceCustomString", "cs"));
        let val = s(v).replace('\\', "\\\\").replace('=', "\\=");
        parts.push(format!("{key}={val}"));
    }
    line.push_str(&parts.join(" "));
    line
}

fn remove_path(v: &mut Value, path: &str) {
    let mut segs: Vec<&str> = path.split('.').collect();
    let last = segs.pop().expect("path");
    let mut cur = v;
    for s in segs {
        match cur.get_mut(s) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(last);
    }
}

/// Drop objects left empty by removals.
fn drop_empty(v: &mut Value) {
    if let Value::Object(o) = v {
        for (_, x) in o.iter_mut() {
            drop_empty(x);
        }
        o.retain(|_, x| !matches!(x, Value::Object(m) if m.is_empty()));
    }
}

/// Every difference between two documents, as `path: expected vs actual` lines.
fn diff(path: &str, exp: &Value, act: &Value, out: &mut Vec<String>) {
    match (exp, act) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => diff(&p, ev, av, out),
                    None => out.push(format!("{p}: missing (expected {ev})")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(format!("{p}: unexpected {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                diff(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            if e.as_f64() != a.as_f64() {
                out.push(format!("{path}: expected {e}, got {a}"));
            }
        }
        (e, a) => {
            if e != a {
                out.push(format!("{path}: expected {e}, got {a}"));
            }
        }
    }
}

const HARNESS_FIELDS: &[&str] = &[
    "agent",
    "elastic_agent",
    "input",
    "data_stream",
    "event.ingested",
    "event.dataset",
    "event.agent_id_status",
    "host",
    "log",
    "aws",
    "cloud",
];
const HARNESS_TAGS: &[&str] = &[
    "forwarded",
    "collect_sqs_logs",
    "imperva.securesphere",
    "imperva_cloud_waf-event",
];

fn normalise(v: &mut Value, drop_timestamp: bool, drop_original: bool) {
    for f in HARNESS_FIELDS {
        remove_path(v, f);
    }
    if drop_timestamp {
        remove_path(v, "@timestamp");
    }
    if drop_original {
        remove_path(v, "event.original");
    }
    if let Some(tags) = v.get_mut("tags").and_then(Value::as_array_mut) {
        tags.retain(|t| !HARNESS_TAGS.contains(&t.as_str().unwrap_or("")));
        if tags.is_empty() {
            remove_path(v, "tags");
        }
    }
    drop_empty(v);
}

fn has_tag(expected: &Value, tag: &str) -> bool {
    expected["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag))
}

/// The line a case feeds in: its raw line, or one rebuilt from the decoder output.
fn case_line(case: &Value) -> (String, bool) {
    match case["raw"].as_str() {
        Some(r) => (r.to_string(), false),
        None => {
            let pi = &case["pipeline_input"];
            match pi["event"]["original"].as_str() {
                Some(o) => (o.to_string(), false),
                None => (rebuild_cef(pi), true),
            }
        }
    }
}

fn check_expected(case: &Value, line: &str, rebuilt: bool) -> Vec<String> {
    let suite = case["suite"].as_str().unwrap_or("");
    let expected = case["expected"].clone();
    let mut opts = Options::default();
    if suite.starts_with("sekoia") {
        opts.profile = Profile::Sekoia;
    } else {
        opts.preserve_original_event = has_tag(&expected, "preserve_original_event");
        opts.preserve_duplicate_custom_fields = has_tag(&expected, "preserve_duplicate_custom_fields");
    }
    let profile = opts.profile;
    let mut actual = map_line(line, opts);
    let mut expected = expected;
    // Elastic leaves @timestamp at ingest time when the line has no `rt`.
    let no_event_time = profile == Profile::Elastic && !line.contains(" rt=");
    normalise(&mut expected, no_event_time, rebuilt);
    normalise(&mut actual, no_event_time, rebuilt);
    let mut out = vec![];
    diff("", &expected, &actual, &mut out);
    out
}

#[test]
fn peer_expected_documents_match_field_for_field() {
    let Some(dir) = support::corpus_dir() else { return };
    let mut compared = 0;
    let mut failures = vec![];
    for case in cases(&dir) {
        let suite = case["suite"].as_str().unwrap_or("").to_string();
        let id = case["id"].as_str().unwrap_or("").to_string();
        if case["expected"].is_null() || !(suite.starts_with("elastic") || suite.starts_with("sekoia")) {
            continue;
        }
        let (line, rebuilt) = case_line(&case);
        let diffs = check_expected(&case, &line, rebuilt);
        compared += 1;
        if !diffs.is_empty() {
            failures.push(format!("{suite} {id}:\n  {}", diffs.join("\n  ")));
        }
    }
    eprintln!("conformance: compared {compared} documents");
    assert!(
        compared >= 19,
        "expected at least 19 comparable cases, found {compared}"
    );
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fields whose value is transformed by design (times, JSON, lists), checked elsewhere.
const TRANSFORMED: &[&str] = &[
    "rt",
    "start",
    "end",
    "additionalReqHeaders",
    "additionalResHeaders",
    "cs10",
    "cs11",
    "xff",
];

fn leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => o.values().for_each(|x| leaves(x, out)),
        Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
        Value::String(s) => out.push(s.clone()),
        other => out.push(other.to_string()),
    }
}

#[test]
fn raw_only_lines_parse_without_error_and_keep_every_pair() {
    let Some(dir) = support::corpus_dir() else { return };
    let mut checked = 0;
    for case in cases(&dir) {
        let suite = case["suite"].as_str().unwrap_or("");
        let has_ecs_expectation =
            !case["expected"].is_null() && (suite.starts_with("elastic") || suite.starts_with("sekoia"));
        if has_ecs_expectation {
            continue;
        }
        let (line, _) = case_line(&case);
        let rec = parse::parse_event(&line, None).unwrap_or_else(|e| panic!("{suite}: {e}: {line}"));
        let opts = Options {
            preserve_duplicate_custom_fields: true,
            ..Options::default()
        };
        let doc = map_line(&line, opts);
        assert!(
            doc.get("error").is_none(),
            "{suite} {}: error {}",
            case["id"],
            doc["error"]
        );
        let mut all = vec![];
        leaves(&doc, &mut all);
        for f in &rec.fields {
            let v = f.value();
            if v.is_empty() || TRANSFORMED.iter().any(|k| k.eq_ignore_ascii_case(f.key)) {
                continue;
            }
            let found = all.iter().any(|l| l == v.as_ref() || l.eq_ignore_ascii_case(&v));
            assert!(
                found,
                "{suite} {}: value of {}={:?} is in no output field\n{doc}",
                case["id"], f.key, v
            );
        }
        checked += 1;
    }
    eprintln!("conformance: {checked} raw-only lines kept every pair");
    assert!(checked >= 20, "expected at least 20 raw-only lines, found {checked}");
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |cur, s| cur.get(s).unwrap_or(&Value::Null))
}

fn custom_by_label<'a>(doc: &'a Value, label: &str) -> Option<&'a Value> {
    let dev = doc["imperva"]["securesphere"]["device"].as_object()?;
    dev.values().find(|cs| cs["label"] == label).map(|cs| &cs["value"])
}

/// Apache Metron's and ParCEFone's assertions, in their own names, against our documents.
#[test]
fn other_parsers_assertions_hold() {
    let Some(dir) = support::corpus_dir() else { return };
    let names: Map<String, Value> = serde_json::from_value(serde_json::json!({
        "deviceAction": "event.action",
        "deviceEventCategory": "imperva.securesphere.device.event.category",
        "device_product": "observer.product",
        "device_vendor": "observer.vendor",
        "device_version": "observer.version",
        "dst_username": "destination.user.name",
        "event_class_id": "event.code",
        "ip_dst_addr": "destination.ip",
        "ip_dst_port": "destination.port",
        "ip_src_addr": "source.ip",
        "ip_src_port": "source.port",
        "protocol": "imperva.securesphere.transport_protocol",
        "severity": "imperva.securesphere.severity",
        "priority": "log.syslog.priority",
        "dst": "destination.ip",
        "src": "source.ip",
        "fileId": "file.inode",
        "requestClientApplication": "user_agent.original",
        "eventId": "imperva.securesphere.extensions.eventId",
        "deviceZoneURI": "imperva.securesphere.extensions.deviceZoneURI",
    }))
    .expect("table");
    let mut checked = 0;
    for case in cases(&dir) {
        let suite = case["suite"].as_str().unwrap_or("");
        if !(suite.starts_with("apache/metron") || suite.starts_with("fluenda")) || case["expected"].is_null() {
            continue;
        }
        let (line, _) = case_line(&case);
        let opts = Options {
            preserve_duplicate_custom_fields: true,
            syslog_fields: true,
            ..Options::default()
        };
        let doc = map_line(&line, opts);
        for (k, want) in case["expected"].as_object().expect("object") {
            let got = if k == "timestamp" || k == "rt" {
                let ts = doc["@timestamp"].as_str().expect("@timestamp");
                Value::from(
                    chrono::DateTime::parse_from_rfc3339(ts)
                        .expect("rfc3339")
                        .timestamp_millis(),
                )
            } else if let Some(path) = names.get(k).and_then(Value::as_str) {
                get(&doc, path).clone()
            } else if let Some(v) = custom_by_label(&doc, k) {
                v.clone()
            } else if k == "event_name" {
                doc.get("message").cloned().unwrap_or(Value::Null)
            } else if k == "longitude" {
                assert!(get(&doc, "source.geo.location.lon").is_number(), "{suite}: longitude");
                continue;
            } else if k.starts_with("cs8") {
                // Metron renames csN to its label; we map cs8 (longitude) to source.geo.
                continue;
            } else {
                panic!("{suite}: no mapping for asserted field {k}");
            };
            let same = match (&got, want) {
                (g, Value::String(w)) => g
                    .as_str()
                    .map(|s| s == w)
                    .unwrap_or_else(|| g.to_string().as_str() == w.as_str()),
                // Numbers asserted by the peer may be kept as their text (unknown keys).
                (Value::String(g), w) => g.as_str() == w.to_string().as_str(),
                (g, w) => g == w || g.as_f64().is_some() && g.as_f64() == w.as_f64(),
            };
            assert!(same, "{suite} {}: {k}: expected {want}, got {got}\n{doc}", case["id"]);
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "Metron WAF, Metron LEEF and ParCEFone cases");
}

/// Elastic's system-test file (header, `|==|`, CEF line) through the container path gives the
/// same document as its expected output; its bogus checksum is reported, the event kept.
#[test]
fn elastic_cloud_waf_file_through_container() {
    let Some(dir) = support::corpus_dir() else { return };
    let path = dir.join("elastic/imperva_cloud_waf/_dev/deploy/tf/files/test-events.log");
    let bytes = std::fs::read(&path).expect("test-events.log");
    assert!(container::looks_like_container(&bytes));
    let opened = container::open(&bytes, &KeyStore::none(), Limits::default()).expect("open");
    assert!(
        matches!(opened.checksum, container::Checksum::Mismatch { .. }),
        "{:?}",
        opened.checksum
    );
    let lines: Vec<_> = opened.lines().collect();
    assert_eq!(lines.len(), 1);
    let case = cases(&dir)
        .into_iter()
        .find(|c| c["id"] == "test-events.log#CEF")
        .expect("case");
    let line = std::str::from_utf8(lines[0]).expect("utf8");
    let diffs = check_expected(&case, line, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// The checker itself can fail: a changed, a missing and an extra field are all reported.
#[test]
fn diff_reports_every_kind_of_difference() {
    let exp = serde_json::json!({"a": {"b": 1, "c": "x"}, "l": [1, 2], "n": 2});
    let act = serde_json::json!({"a": {"b": 1.0, "d": true}, "l": [2, 1], "n": 2.0});
    let mut out = vec![];
    diff("", &exp, &act, &mut out);
    out.sort();
    assert_eq!(
        out,
        vec![
            "a.c: missing (expected \"x\")",
            "a.d: unexpected true",
            "l[0]: expected 1, got 2",
            "l[1]: expected 2, got 1"
        ]
    );
}

/// The index template gives every field of Elastic's Cloud WAF field table the type Elastic's
/// integration maps it to (constant_keyword ≈ keyword: wafstream templates do not pin values;
/// `object` JSON fields are `flattened` here).
#[test]
fn template_types_match_elastics_cloud_waf_field_table() {
    let Some(dir) = support::corpus_dir() else { return };
    let table = std::fs::read_to_string(dir.join("elastic/imperva_cloud_waf/docs/README.fields-excerpt.md"))
        .expect("field table");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for row in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| Field"))
    {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let (path, theirs) = (cols[1], cols[cols.len() - 2]);
        let ours = wafstream::sink::es_setup::field_type(path)["type"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let same = match theirs {
            "constant_keyword" => ours == "keyword",
            "object" => ours == "flattened",
            t => ours == t,
        };
        if !same {
            wrong.push(format!("{path}: Elastic {theirs}, wafstream {ours}"));
        }
        checked += 1;
    }
    assert!(checked > 60, "only {checked} rows read");
    assert!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
