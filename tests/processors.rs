//! Processors on real mapped documents (the generator's Cloud WAF and SecureSphere lines),
//! through the binary: each action and condition against the same documents without
//! processors; a Beats list from Elastic's documentation, ported; every broken processor
//! reported at once; drops through `run` (counted, checkpoint advanced) and `rate_limit` under a
//! burst.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn lines(kind: &str, n: usize) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["generate", "--kind", kind, "--count", &n.to_string(), "--seed", "1"])
        .output()
        .expect("generate");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `parse` the lines with the processors given (YAML or JSON), returning documents and stderr.
fn parse(dir: &Path, input: &str, processors: Option<&str>) -> (Vec<Value>, String) {
    let inp = dir.join("in.log");
    std::fs::write(&inp, input).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.arg("parse");
    if let Some(p) = processors {
        let f = dir.join("processors.yml");
        std::fs::write(&f, p).expect("write");
        cmd.arg("--processors").arg(&f);
    }
    let out = cmd.arg(&inp).output().expect("parse");
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (docs, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Which documents a condition should match.
type Check = Box<dyn Fn(&Value) -> bool>;

/// The third number of a document's `203.0.x.y` source address.
fn third_octet(d: &Value) -> u32 {
    d["source"]["ip"]
        .as_str()
        .and_then(|ip| ip.split('.').nth(2))
        .and_then(|x| x.parse().ok())
        .unwrap_or(999)
}

fn at<'v>(d: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(d, |v, k| &v[k])
}

#[test]
fn each_action_and_condition_on_mapped_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines("cloud-waf", 200);
    let (base, _) = parse(dir.path(), &input, None);
    assert_eq!(base.len(), 200);
    let count = |f: &dyn Fn(&Value) -> bool| base.iter().filter(|d| f(d)).count();

    // drop_event + equals
    let (out, err) = parse(
        dir.path(),
        &input,
        Some("- drop_event:\n    when:\n      equals:\n        event.action: req-passed\n"),
    );
    let passed = count(&|d| d["event"]["action"] == "req-passed");
    assert!(passed > 0);
    assert_eq!(out.len(), 200 - passed);
    assert!(out.iter().all(|d| d["event"]["action"] != "req-passed"));
    assert!(err.contains(&format!("{} dropped by processors", passed)), "{err}");
    assert!(
        err.contains(&format!("processor 0 (drop_event): {passed} dropped")),
        "{err}"
    );

    // range + or + not + contains + regexp + has_fields + network
    let cases: Vec<(&str, Check)> = vec![
        (
            "range: {http.response.status_code: {gte: 400}}",
            Box::new(|d: &Value| d["http"]["response"]["status_code"].as_i64().unwrap_or(0) >= 400),
        ),
        (
            "or: [{equals: {event.action: req-passed}}, {equals: {event.action: req-cached-fresh}}]",
            Box::new(|d: &Value| d["event"]["action"] == "req-passed" || d["event"]["action"] == "req-cached-fresh"),
        ),
        (
            "not: {equals: {event.action: req-passed}}",
            Box::new(|d: &Value| d["event"]["action"] != "req-passed"),
        ),
        (
            "contains: {event.action: blocked}",
            Box::new(|d: &Value| d["event"]["action"].as_str().unwrap_or("").contains("blocked")),
        ),
        (
            "regexp: {event.action: '^req-(bad|blocked)'}",
            Box::new(|d: &Value| {
                let a = d["event"]["action"].as_str().unwrap_or("");
                a.starts_with("req-bad") || a.starts_with("req-blocked")
            }),
        ),
        (
            "has_fields: [rule.name, url.query]",
            Box::new(|d: &Value| !d["rule"]["name"].is_null() && !d["url"]["query"].is_null()),
        ),
        (
            "network: {source.ip: ['203.0.0.0/17', loopback]}",
            Box::new(|d: &Value| third_octet(d) < 128),
        ),
        (
            "and: [{network: {destination.ip: private}}, {network: {source.ip: '203.0.128.0/17'}}]",
            Box::new(|d: &Value| third_octet(d) >= 128),
        ),
        (
            "and: [{network: {source.ip: public}}, {equals: {http.response.status_code: 403}}]",
            Box::new(|d: &Value| d["http"]["response"]["status_code"] == 403 && !d["source"]["ip"].is_null()),
        ),
    ];
    for (cond, want) in cases {
        let yaml = format!("- drop_event:\n    when:\n      {cond}\n");
        let (out, err) = parse(dir.path(), &input, Some(&yaml));
        let dropped = count(&*want);
        assert!(
            dropped > 0 && dropped < 200,
            "{cond}: a condition that tells documents apart ({dropped})"
        );
        assert_eq!(out.len(), 200 - dropped, "{cond}\n{err}");
        assert!(out.iter().all(|d| !want(d)), "{cond}");
    }

    // Field actions, in order: each sees what the one before did.
    let yaml = r#"
- drop_fields:
    fields: [related, imperva_cloud_waf.event.extensions.device, labels.absent]
    ignore_missing: true
- add_fields:
    target: labels
    fields: {environment: prod, tier: 2}
- add_labels:
    labels: {site: shop}
- add_tags:
    tags: [dc1, waf]
- rename:
    fields: [{from: event.action, to: event.reason}]
- copy_fields:
    fields: [{from: source.ip, to: labels.client}]
- truncate_fields:
    fields: [message]
    max_characters: 3
- add_fields:
    target: observer
    fields: {name: edge-1}
"#;
    let (out, err) = parse(dir.path(), &input, Some(yaml));
    assert_eq!(out.len(), 200, "{err}");
    for (d, b) in out.iter().zip(&base) {
        assert!(d["related"].is_null() && d["imperva_cloud_waf"]["event"]["extensions"]["device"].is_null());
        assert_eq!(
            d["imperva_cloud_waf"]["event"]["extensions"]["site"],
            b["imperva_cloud_waf"]["event"]["extensions"]["site"]
        );
        assert_eq!(d["labels"]["environment"], "prod");
        assert_eq!(d["labels"]["tier"], 2);
        assert_eq!(d["labels"]["site"], "shop");
        assert_eq!(d["labels"]["client"], b["source"]["ip"]);
        assert_eq!(d["source"]["ip"], b["source"]["ip"], "copy keeps the source");
        let mut tags: Vec<Value> = b["tags"].as_array().cloned().unwrap_or_default();
        tags.extend([json!("dc1"), json!("waf")]);
        assert_eq!(d["tags"], Value::Array(tags));
        assert!(d["event"]["action"].is_null());
        assert_eq!(d["event"]["reason"], b["event"]["action"]);
        assert_eq!(
            d["message"],
            b["message"]
                .as_str()
                .map(|m| m.chars().take(3).collect::<String>())
                .unwrap()
        );
        assert_eq!(d["observer"]["name"], "edge-1");
        assert_eq!(d["observer"]["vendor"], b["observer"]["vendor"]);
    }
    assert!(
        err.contains("processor 7 (add_fields): 0 dropped, 200 changed, 0 errors"),
        "{err}"
    );

    // include_fields keeps a subset (and @timestamp and data_stream).
    let (out, _) = parse(
        dir.path(),
        &input,
        Some("- include_fields:\n    fields: [source.ip, event.action, http]\n"),
    );
    for (d, b) in out.iter().zip(&base) {
        let mut keys: Vec<&String> = d.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["@timestamp", "data_stream", "event", "http", "source"]);
        assert_eq!(d["event"].as_object().expect("event").len(), 1);
        assert_eq!(d["event"]["action"], b["event"]["action"]);
        assert_eq!(d["http"], b["http"]);
        assert_eq!(at(d, "source.ip"), at(b, "source.ip"));
    }

    // An error is recorded in the document, which goes on (Beats' behaviour).
    let (out, err) = parse(
        dir.path(),
        &input,
        Some("- rename:\n    fields: [{from: event.action, to: message}]\n"),
    );
    assert_eq!(out.len(), 200);
    assert!(
        out.iter().all(|d| d["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("message already exists")),
        "{:?}",
        out[0]
    );
    assert!(err.contains("200 errors"), "{err}");
}

/// A list in the YAML layout Beats documents (`processors:`, one action per item, `when`
/// conditions and parameters beside each other), applied to SecureSphere documents as written.
#[test]
fn a_beats_list_from_the_docs_ports_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines("securesphere", 100);
    let (base, _) = parse(dir.path(), &input, None);
    let yaml = r#"
processors:
  - drop_event:
      when:
        equals:
          event.severity: 0
  - drop_fields:
      fields: ["imperva.securesphere.device"]
      ignore_missing: true
  - add_fields:
      target: ''
      fields:
        team: secops
"#;
    let (out, err) = parse(dir.path(), &input, Some(yaml));
    let low = base.iter().filter(|d| d["event"]["severity"] == 0).count();
    assert!(low > 0, "the generator writes some severity-0 events");
    assert_eq!(out.len(), 100 - low, "{err}");
    assert!(out.iter().all(|d| d["team"] == "secops"
        && d["imperva"]["securesphere"]["device"].is_null()
        && !d["imperva"]["securesphere"]["severity"].is_null()));
}

#[test]
fn every_broken_processor_is_reported_at_once_with_its_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[[processors]]
drop_evnt = {}

[[processors]]
drop_event = { when = { regexp = { "event.action" = "([unclosed" } } }

[[processors]]
drop_event = { when = { network = { "source.ip" = "10.0.0.0/33" } } }

[[processors]]
drop_fields = { fields = ["event.actoin"] }

[[processors]]
drop_event = { when = { range = { "http.response.status_code" = { gte = "many" } } } }

[[processors]]
rate_limit = { limit = "fast" }
"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["validate-config", cfg.to_str().unwrap()])
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "processors[0] drop_evnt: unknown action",
        "processors[1] drop_event: regexp.event.action",
        "processors[2] drop_event: network.source.ip",
        "processors[3] drop_fields: \"event.actoin\" is not a field",
        "processors[4] drop_event: range.http.response.status_code.gte",
        "processors[5] rate_limit: limit",
    ] {
        assert!(err.contains(want), "{want} not in:\n{err}");
    }
    assert!(err.contains("6 problem(s)"), "{err}");
    // A good list validates and becomes the variable the flag reads.
    std::fs::write(
        &cfg,
        "[[processors]]\ndrop_event = { when = { equals = { \"event.action\" = \"req-passed\" } } }\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["validate-config", cfg.to_str().unwrap()])
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WAFSTREAM_PROCESSORS=[{\"drop_event\""));
    // And the file's processors apply: through `--config`.
    let input = lines("cloud-waf", 50);
    let inp = dir.path().join("in.log");
    std::fs::write(&inp, &input).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["--config", cfg.to_str().unwrap(), "parse", inp.to_str().unwrap()])
        .output()
        .expect("parse");
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    let passed = input.lines().filter(|l| l.contains("act=REQ_PASSED")).count();
    assert!(passed > 0);
    assert_eq!(n, 50 - passed, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rate_limit_lets_the_configured_rate_through_a_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines("cloud-waf", 3000);
    // 60 per minute: a full bucket (60) at once, then one a second; the burst takes far less
    // than a minute, so 60 pass, plus one per second it lasted.
    let t0 = std::time::Instant::now();
    let (out, err) = parse(dir.path(), &input, Some("- rate_limit:\n    limit: 60/m\n"));
    let secs = t0.elapsed().as_secs() as usize;
    assert!(
        out.len() >= 60 && out.len() <= 61 + secs,
        "{} passed in {secs} s\n{err}",
        out.len()
    );
    // Keyed by a field: each key has its own bucket.
    let (out, _) = parse(
        dir.path(),
        &input,
        Some("- rate_limit:\n    limit: 10/h\n    fields: [event.action]\n"),
    );
    let keys: std::collections::HashSet<&str> = out.iter().filter_map(|d| d["event"]["action"].as_str()).collect();
    assert_eq!(out.len(), 10 * keys.len(), "10 per action");
}

/// `run` with a whole Imperva file and a checkpoint: dropped documents are counted, not
/// dead-lettered, and the file is done (its checkpoint advanced over them).
#[test]
fn dropped_documents_advance_the_checkpoint_in_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines("cloud-waf", 100);
    let passed = input.lines().filter(|l| l.contains("act=REQ_PASSED")).count();
    assert!(passed > 0);
    std::fs::write(
        dir.path().join("f.log"),
        support::container(input.as_bytes(), support::Comp::Zlib, None, None),
    )
    .expect("write");
    let out = dir.path().join("out.ndjson");
    let cp = dir.path().join("cp.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args([
        "run",
        "--listen-tcp",
        "off",
        "--listen-udp",
        "off",
        "--file-poll-ms",
        "100",
    ])
    .arg("--file")
    .arg(dir.path().join("*.log"))
    .arg("--checkpoint")
    .arg(&cp)
    .arg("--output")
    .arg(&out)
    .args(["--metrics-addr", "127.0.0.1:0"])
    .args([
        "--processors",
        r#"[{"drop_event": {"when": {"equals": {"event.action": "req-passed"}}}}]"#,
    ]);
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let metrics = support::listening(&rx, &["metrics"])
        .remove("metrics")
        .unwrap_or_default();
    let series = "wafstream_processor_events_total{name=\"drop_event\",outcome=\"dropped\",processor=\"0\"}";
    let scrape = support::scrape_until(&metrics, series, passed as f64);
    assert_eq!(support::sample(&scrape, series), Some(passed as f64), "{scrape}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let done = loop {
        let v: Value = std::fs::read(&cp)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let done = v["files"]
            .as_object()
            .is_some_and(|f| f.values().any(|e| e["done"] == true));
        if done || std::time::Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(done, "the checkpoint marks the file done");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().expect("wait").success());
    let log: Vec<String> = support::rest(&rx);
    let log = log.join("\n");
    let docs = std::fs::read_to_string(&out).expect("out");
    assert_eq!(docs.lines().count(), 100 - passed, "{log}");
    assert!(docs.lines().all(|l| !l.contains("pipeline_error")));
    assert!(
        log.contains(&format!(
            "{} documents, 0 dead-lettered, {passed} dropped by processors",
            100 - passed
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("processor 0 (drop_event): {passed} dropped")),
        "{log}"
    );
}

/// Per-input lists apply after the common list, to the documents of their input only.
#[test]
fn input_lists_apply_to_their_input_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = lines("cloud-waf", 20);
    let inp = dir.path().join("in.log");
    std::fs::write(&inp, &input).expect("write");
    let lists = r#"{"file": [{"add_labels": {"labels": {"via": "file"}}}], "stdin": [{"add_labels": {"labels": {"via": "stdin"}}}, {"drop_event": {"when": {"equals": {"event.action": "req-passed"}}}}]}"#;
    let common = r#"[{"add_tags": {"tags": ["all"]}}]"#;
    let run = |args: &[&str], stdin: Option<&str>| -> (Vec<Value>, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
        cmd.args(["parse", "--processors", common, "--input-processors", lists])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("wait");
        let docs = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        (docs, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (from_file, err) = run(&[inp.to_str().unwrap()], None);
    assert_eq!(from_file.len(), 20, "{err}");
    assert!(
        from_file
            .iter()
            .all(|d| d["labels"]["via"] == "file" && d["tags"] == json!(["all"]))
    );
    let (from_stdin, err) = run(&["-"], Some(&input));
    let passed = input.lines().filter(|l| l.contains("act=REQ_PASSED")).count();
    assert_eq!(from_stdin.len(), 20 - passed, "{err}");
    assert!(
        from_stdin
            .iter()
            .all(|d| d["labels"]["via"] == "stdin" && d["tags"] == json!(["all"]))
    );
    assert!(err.contains("processor stdin/1 (drop_event)"), "{err}");
    // An unknown input and a broken per-input list are reported with their place.
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[input_processors.tpc]]\ndrop_event = {}\n\n[[input_processors.udp]]\ndrop_fields = { fields = [\"nope.nope\"] }\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["validate-config", cfg.to_str().unwrap()])
        .output()
        .expect("validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("input_processors.tpc: unknown input"), "{err}");
    assert!(
        err.contains("input_processors.udp[0] drop_fields: \"nope.nope\""),
        "{err}"
    );
}

/// The peers' own lines (every raw line of the conformance corpus: SecureSphere and Cloud WAF,
/// elastic profile): each condition drops exactly the documents a predicate written here picks,
/// and a list of field actions turns each document into the one computed here from the
/// unprocessed document. Documents are compared whole, so nothing else may change.
#[test]
fn conditions_and_actions_on_the_conformance_corpus() {
    let Some(corpus) = support::corpus_dir() else { return };
    let text = std::fs::read_to_string(corpus.join("cases.jsonl")).expect("read cases.jsonl");
    let input: String = text
        .lines()
        .filter_map(|l| {
            let case: Value = serde_json::from_str(l).expect("case");
            case["raw"].as_str().map(|r| format!("{}\n", r.trim_end()))
        })
        .collect();
    let n = input.lines().count();
    let dir = tempfile::tempdir().expect("tempdir");
    // A line without a device time is stamped with the time it was read, which differs between
    // two runs: documents are compared without `@timestamp`, once each is known to carry one.
    let timeless = |docs: Vec<Value>| -> Vec<Value> {
        docs.into_iter()
            .map(|mut d| {
                let ts = d.as_object_mut().and_then(|o| o.remove("@timestamp"));
                assert!(ts.as_ref().is_some_and(Value::is_string), "@timestamp in {d}");
                d
            })
            .collect()
    };
    let (base, err) = parse(dir.path(), &input, None);
    let base = timeless(base);
    assert_eq!(base.len(), n, "every raw line maps: {err}");

    let ip = |d: &Value| {
        at(d, "source.ip")
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
    };
    let action = |d: &Value| at(d, "event.action").as_str().unwrap_or("").to_owned();
    let status = |d: &Value| at(d, "http.response.status_code").as_i64();
    let cases: Vec<(&str, Check)> = vec![
        (
            "equals: {event.dataset: imperva.securesphere}",
            Box::new(|d: &Value| at(d, "event.dataset") == "imperva.securesphere"),
        ),
        (
            "equals: {http.response.status_code: 200}",
            Box::new(move |d: &Value| status(d) == Some(200)),
        ),
        (
            "contains: {url.path: '.css'}",
            Box::new(|d: &Value| at(d, "url.path").as_str().is_some_and(|p| p.contains(".css"))),
        ),
        (
            "regexp: {event.action: '^req-(blocked|bad)-'}",
            Box::new(move |d: &Value| action(d).starts_with("req-blocked-") || action(d).starts_with("req-bad-")),
        ),
        (
            "range: {http.response.status_code: {gte: 200, lt: 300}}",
            Box::new(move |d: &Value| status(d).is_some_and(|s| (200..300).contains(&s))),
        ),
        (
            "network: {source.ip: private}",
            Box::new(move |d: &Value| matches!(ip(d), Some(std::net::IpAddr::V4(a)) if a.is_private())),
        ),
        (
            "network: {source.ip: [loopback, '172.105.147.0/25']}",
            Box::new(
                move |d: &Value| matches!(ip(d), Some(std::net::IpAddr::V4(a)) if a.is_loopback() || (a.octets()[..3] == [172, 105, 147] && a.octets()[3] < 128)),
            ),
        ),
        (
            "has_fields: [http.response.status_code, url.path]",
            Box::new(move |d: &Value| status(d).is_some() && !at(d, "url.path").is_null()),
        ),
        (
            "not: {has_fields: [event.action]}",
            Box::new(|d: &Value| at(d, "event.action").is_null()),
        ),
        (
            "or: [{equals: {event.action: block}}, {and: [{equals: {event.dataset: imperva_cloud_waf.event}}, {not: {range: {http.response.status_code: {lt: 300}}}}]}]",
            Box::new(move |d: &Value| {
                action(d) == "block"
                    || (at(d, "event.dataset") == "imperva_cloud_waf.event" && status(d).is_none_or(|s| s >= 300))
            }),
        ),
    ];
    for (cond, picks) in cases {
        let yaml = format!("- drop_event:\n    when:\n      {cond}\n");
        let (out, err) = parse(dir.path(), &input, Some(&yaml));
        let out = timeless(out);
        let kept: Vec<&Value> = base.iter().filter(|d| !picks(d)).collect();
        assert!(
            !kept.is_empty() && kept.len() < n,
            "{cond}: the corpus has documents on both sides ({} kept)",
            kept.len()
        );
        assert_eq!(out.iter().collect::<Vec<_>>(), kept, "{cond}\n{err}");
        assert!(
            err.contains(&format!("{} dropped by processors", n - kept.len())),
            "{cond}: {err}"
        );
    }

    // Field actions, in order, each result computed from the unprocessed document.
    let yaml = r#"
- drop_fields:
    fields: [related, observer.version]
    ignore_missing: true
- add_fields:
    target: labels
    fields: {environment: prod}
- add_tags:
    tags: [corpus]
- rename:
    fields: [{from: event.action, to: event.reason}]
    ignore_missing: true
- copy_fields:
    fields: [{from: source.ip, to: labels.client}]
    ignore_missing: true
- truncate_fields:
    fields: [message]
    max_characters: 12
    ignore_missing: true
"#;
    let (out, err) = parse(dir.path(), &input, Some(yaml));
    let out = timeless(out);
    assert_eq!(out.len(), n, "{err}");
    fn take(d: &mut Value, path: &str) -> Option<Value> {
        let (parent, leaf) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
        let obj = if parent.is_empty() {
            Some(&mut *d)
        } else {
            d.pointer_mut(&format!("/{}", parent.replace('.', "/")))
        };
        obj?.as_object_mut()?.remove(leaf)
    }
    fn put(d: &mut Value, path: &str, v: Value) {
        let mut cur = d;
        let mut parts = path.split('.').peekable();
        while let Some(k) = parts.next() {
            let obj = cur.as_object_mut().expect("object on the way");
            if parts.peek().is_none() {
                obj.insert(k.to_owned(), v);
                return;
            }
            cur = obj.entry(k).or_insert_with(|| json!({}));
        }
    }
    for (got, b) in out.iter().zip(&base) {
        let mut want = b.clone();
        take(&mut want, "related");
        take(&mut want, "observer.version");
        put(&mut want, "labels.environment", json!("prod"));
        let mut tags = want["tags"].as_array().cloned().unwrap_or_default();
        tags.push(json!("corpus"));
        put(&mut want, "tags", Value::Array(tags));
        if let Some(a) = take(&mut want, "event.action") {
            put(&mut want, "event.reason", a);
        }
        if let Some(ip) = b["source"]["ip"].as_str() {
            put(&mut want, "labels.client", json!(ip));
        }
        if let Some(m) = b["message"].as_str() {
            put(&mut want, "message", json!(m.chars().take(12).collect::<String>()));
        }
        assert_eq!(*got, want, "from {b}");
    }
}
