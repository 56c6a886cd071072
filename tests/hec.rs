//! The Splunk-HEC-compatible receiver through `wafstream run`: hand-made requests for every
//! endpoint and every refusal, the stock Python HEC clients from PyPI (installed by
//! `tests/services/install-hec-clients.sh`), and HTTPS with and without client certificates.
//! The Kafka path (acknowledged by the broker, a broker outage answered with 503 and nothing
//! lost) is in `tests/kafka.rs`, next to its broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

const TOKEN: &str = "3f2a6c1e-7b4d-4e8f-9a10-b2c3d4e5f601";
const OTHER: &str = "0b5e1f2a-aaaa-4bbb-8ccc-ddddeeee0002";

struct Hec {
    child: Child,
    addr: String,
    metrics: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

fn start(out: &std::path::Path, extra: &[&str]) -> Hec {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args([
        "run",
        "--listen-tcp",
        "off",
        "--listen-udp",
        "off",
        "--listen-hec",
        "127.0.0.1:0",
        "--hec-token",
        &format!("imperva={TOKEN}"),
        "--hec-token",
        &format!("other={OTHER}"),
        "--metrics-addr",
        "127.0.0.1:0",
        "--output",
    ])
    .arg(out)
    .args(extra);
    let (child, rx) = support::spawn_with_stderr(cmd);
    let mut at = support::listening(&rx, &["hec", "metrics"]);
    Hec {
        child,
        addr: at.remove("hec").expect("hec"),
        metrics: at.remove("metrics").expect("metrics"),
        stderr: rx,
    }
}

/// SIGTERM, wait for a clean exit, return stderr.
fn stop(mut h: Hec) -> String {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", h.child.id()))
        .status()
        .expect("kill");
    assert!(status.success());
    let code = h.child.wait().expect("wait");
    let mut all = String::new();
    while let Ok(l) = h.stderr.recv_timeout(Duration::from_secs(2)) {
        all.push_str(&l);
        all.push('\n');
    }
    assert!(code.success(), "exit {code:?}: {all}");
    all
}

use support::http_request as request;

fn splunk() -> String {
    format!("Splunk {TOKEN}")
}

fn post(addr: &str, path: &str, body: &[u8]) -> (u16, Value) {
    request(addr, "POST", path, &[("Authorization", &splunk())], body)
}

fn envelope(event: Value, extra: Value) -> String {
    let mut e = json!({ "event": event });
    if let Value::Object(m) = extra {
        e.as_object_mut().expect("object").extend(m);
    }
    e.to_string()
}

fn wait_for_docs(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let docs: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if docs.len() >= n || Instant::now() > deadline {
            return docs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the series `name` whose labels include every `label="value"` of `labels`.
fn series(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labs, v) = rest.strip_prefix('{')?.split_once("} ")?;
        labels
            .iter()
            .all(|(k, val)| labs.split(',').any(|p| p == format!("{k}=\"{val}\"")))
            .then(|| v.trim().parse().ok())?
    })
}

fn cloud(i: usize) -> String {
    support::cloud_lines(i + 1).lines().nth(i).expect("line").to_string()
}

/// The `fileId` a Cloud WAF document came from (unique per line of `support::cloud_lines`).
fn file_id(d: &Value) -> Option<String> {
    d["file"]["inode"].as_str().map(str::to_string)
}

#[test]
fn each_endpoint_answers_as_hec_does_and_keeps_exactly_what_it_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let h = start(&out, &["--hec-max-body-bytes", "65536", "--hec-max-events", "50"]);
    let a = h.addr.as_str();

    // Health, routing and authentication.
    let (s, b) = request(a, "GET", "/services/collector/health", &[], b"");
    assert_eq!((s, &b), (200, &json!({"text": "HEC is healthy", "code": 17})));
    assert_eq!(request(a, "GET", "/services/collector/event", &[], b"").0, 405);
    let (s, b) = request(a, "POST", "/services/nope", &[("Authorization", &splunk())], b"x");
    assert_eq!((s, b["code"].as_u64()), (404, Some(404)));
    let one = envelope(json!(cloud(0)), json!({}));
    let (s, b) = request(a, "POST", "/services/collector/event", &[], one.as_bytes());
    assert_eq!((s, &b), (401, &json!({"text": "Token is required", "code": 2})));
    let (s, b) = request(
        a,
        "POST",
        "/services/collector/event",
        &[("Authorization", "Splunk not-a-token")],
        one.as_bytes(),
    );
    assert_eq!((s, &b), (403, &json!({"text": "Invalid token", "code": 4})));
    let (s, b) = request(
        a,
        "POST",
        "/services/collector/event",
        &[("Authorization", "Bearer x")],
        one.as_bytes(),
    );
    assert_eq!((s, b["code"].as_u64()), (401, Some(3)));

    // Malformed requests: nothing of them is kept, and the bad event is named.
    let bad = format!("{one}{{\"event\":");
    let (s, b) = post(a, "/services/collector/event", bad.as_bytes());
    assert_eq!(
        (s, &b),
        (
            400,
            &json!({"text": "Invalid data format", "code": 6, "invalid-event-number": 1})
        )
    );
    let (s, b) = post(
        a,
        "/services/collector/event",
        format!("{one} {{\"time\": 1}}").as_bytes(),
    );
    assert_eq!(
        (s, b["code"].as_u64(), b["invalid-event-number"].as_u64()),
        (400, Some(12), Some(1))
    );
    let (s, b) = post(a, "/services/collector/event", br#"{"event": "   "}"#);
    assert_eq!((s, b["code"].as_u64()), (400, Some(13)));
    let (s, b) = post(a, "/services/collector/event", b"");
    assert_eq!((s, &b), (400, &json!({"text": "No data", "code": 5})));
    let (s, b) = post(a, "/services/collector/ack", br#"{"acks":[0]}"#);
    assert_eq!((s, &b), (400, &json!({"text": "Data channel is missing", "code": 10})));

    // Limits: a body over the size limit (answered from its length alone), one that inflates
    // past it, too many events.
    let big = vec![b' '; 70_000];
    let (s, _) = post(a, "/services/collector/event", &big);
    assert_eq!(s, 413);
    let bomb = support::gzip(envelope(json!("x".repeat(200_000)), json!({})).as_bytes());
    let (s, _) = request(
        a,
        "POST",
        "/services/collector/event",
        &[("Authorization", &splunk()), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(s, 413);
    let many: String = (0..51).map(|i| envelope(json!(cloud(i)), json!({}))).collect();
    let (s, _) = post(a, "/services/collector/event", many.as_bytes());
    assert_eq!(s, 413);

    // Accepted: concatenated envelopes (a SecureSphere line, a Cloud WAF line, a JSON object
    // of a producer with no mapping), on each path and way of sending.
    let ss = support::inputs::securesphere(1, 7);
    let abp =
        json!({"eventType": "ABP", "requestId": "r-1", "score": 0.9, "nested": {"a": [1, 2]}, "dotted.key": true});
    let body = [
        envelope(json!(ss.trim_end()), json!({"sourcetype": "imperva:securesphere"})),
        envelope(
            json!(cloud(1)),
            json!({"sourcetype": "imperva:cloudwaf", "host": "h", "index": "main"}),
        ),
        envelope(
            abp.clone(),
            json!({"sourcetype": "imperva:abp", "time": 1_700_000_000.25, "source": "abp-feed"}),
        ),
    ]
    .join("\n");
    let (s, b) = post(a, "/services/collector/event", body.as_bytes());
    assert_eq!((s, &b), (200, &json!({"text": "Success", "code": 0})));
    // Basic authentication (any user, the token as password) on the bare path, another token.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x:{OTHER}"))
    );
    let (s, _) = request(
        a,
        "POST",
        "/services/collector",
        &[("Authorization", &basic)],
        envelope(json!(cloud(2)), json!({})).as_bytes(),
    );
    assert_eq!(s, 200);
    let raw = format!("{}\r\n\n{}\n", cloud(3), cloud(4));
    let (s, _) = post(
        a,
        "/services/collector/raw?sourcetype=imperva%3Acef&source=gw-1",
        raw.as_bytes(),
    );
    assert_eq!(s, 200);
    let gz = support::gzip(
        [
            envelope(json!(cloud(5)), json!({})),
            envelope(json!(cloud(6)), json!({})),
        ]
        .concat()
        .as_bytes(),
    );
    let (s, _) = request(
        a,
        "POST",
        "/services/collector/event/1.0",
        &[("Authorization", &splunk()), ("Content-Encoding", "gzip")],
        &gz,
    );
    assert_eq!(s, 200);

    // Indexer acknowledgement over a channel.
    let ch = "b7d1c6a2-1111-4222-8333-944455556666";
    let with_channel = |body: &str| {
        request(
            a,
            "POST",
            "/services/collector/event",
            &[("Authorization", &splunk()), ("X-Splunk-Request-Channel", ch)],
            body.as_bytes(),
        )
    };
    let (s, b) = with_channel(&envelope(json!(cloud(7)), json!({})));
    assert_eq!((s, &b["text"], &b["code"]), (200, &json!("Success"), &json!(0)), "{b}");
    let first = b["ackId"].as_u64().expect("ackId");
    let (s, b) = with_channel(&envelope(json!(cloud(8)), json!({})));
    assert_eq!((s, b["ackId"].as_u64()), (200, Some(first + 1)));
    let ack_query = |ids: &[u64]| {
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        request(
            a,
            "POST",
            &format!("/services/collector/ack?channel={ch}"),
            &[("Authorization", &splunk())],
            format!("{{\"acks\":[{}]}}", ids.join(",")).as_bytes(),
        )
    };
    // A `true` is reported once, then forgotten: collect them. An id the channel never gave
    // (one below its first) is never acknowledged.
    let never = first.wrapping_sub(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = std::collections::BTreeSet::new();
    while acked.len() < 2 {
        let (s, b) = ack_query(&[first, first + 1, never]);
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["acks"][never.to_string()],
            false,
            "an unknown id is never acknowledged: {b}"
        );
        for id in [first, first + 1] {
            if b["acks"][id.to_string()] == true {
                assert!(acked.insert(id), "{id} reported twice: {b}");
            }
        }
        assert!(Instant::now() < deadline, "never acknowledged: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An acknowledgement is reported once.
    assert_eq!(ack_query(&[first]).1, json!({"acks": {first.to_string(): false}}));

    let scrape = support::http(&h.metrics, "GET", "/metrics").1;
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "imperva"), ("sourcetype", "imperva:abp")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "imperva"), ("sourcetype", "imperva:cef")]
        ),
        Some(2.0)
    );
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "other"), ("sourcetype", "")]
        ),
        Some(1.0)
    );
    for (token, reason, n) in [
        ("", "token_required", 1.0),
        ("", "invalid_token", 1.0),
        ("", "invalid_authorization", 1.0),
        ("imperva", "invalid_data_format", 1.0),
        ("imperva", "event_missing", 1.0),
        ("imperva", "event_blank", 1.0),
        ("imperva", "no_data", 1.0),
        ("imperva", "body_too_large", 2.0),
        ("imperva", "too_many_events", 1.0),
        ("imperva", "channel_missing", 1.0),
    ] {
        assert_eq!(
            series(
                &scrape,
                "wafstream_hec_refused_total",
                &[("token", token), ("reason", reason)]
            ),
            Some(n),
            "{token} {reason}: {scrape}"
        );
    }
    assert!(
        series(&scrape, "wafstream_hec_acked_requests_total", &[("token", "imperva")]).unwrap_or(0.0) >= 4.0,
        "{scrape}"
    );
    assert_eq!(
        series(
            &scrape,
            "wafstream_siem_documents_total",
            &[("sourcetype", "imperva:abp")]
        ),
        Some(1.0)
    );

    let docs = wait_for_docs(&out, 10);
    let err = stop(h);
    let docs_after = wait_for_docs(&out, 10);
    assert_eq!(docs.len(), 10, "{err}");
    assert_eq!(docs_after.len(), 10, "nothing more after the stop: {err}");
    let by = |ds: &str| docs.iter().filter(|d| d["event"]["dataset"] == ds).collect::<Vec<_>>();
    assert_eq!(by("imperva.securesphere").len(), 1);
    let cloud_docs = by("imperva_cloud_waf.event");
    let mut ids: Vec<String> = cloud_docs.iter().filter_map(|d| file_id(d)).collect();
    ids.sort();
    let want: Vec<String> = (1..=8).map(|i| (1000 + i).to_string()).collect();
    assert_eq!(ids, want, "each accepted Cloud WAF event once");
    assert!(docs.iter().all(|d| d["input"]["type"] == "hec"));
    let raw_doc = cloud_docs
        .iter()
        .find(|d| file_id(d).as_deref() == Some("1003"))
        .expect("raw line");
    assert_eq!(raw_doc["log"]["file"]["path"], "gw-1");
    let siem = by("imperva.siem");
    assert_eq!(siem.len(), 1);
    let s = siem[0];
    assert_eq!(s["@timestamp"], "2023-11-14T22:13:20.250Z");
    assert_eq!(s["event"]["provider"], "imperva:abp");
    assert_eq!(s["data_stream"]["dataset"], "imperva.siem");
    assert_eq!(s["log"]["file"]["path"], "abp-feed");
    assert_eq!(
        s["imperva"]["siem"],
        json!({"eventType": "ABP", "requestId": "r-1", "score": 0.9, "nested": {"a": [1, 2]}, "dotted_key": true})
    );
    assert!(
        !err.contains(TOKEN) && !err.contains(OTHER),
        "tokens never logged: {err}"
    );
}

/// splunk-handler (a `logging` handler: string events as concatenated envelopes) and
/// splunk-data-sender (health check, gzip, a request channel with indexer acknowledgement),
/// both stock from PyPI, send Cloud WAF CEF lines; every line comes out once.
#[test]
fn stock_python_hec_clients_deliver_every_event_once() {
    let Some(python) = std::env::var_os("WAFSTREAM_HEC_PYTHON") else {
        assert!(
            !support::services::required(),
            "WAFSTREAM_HEC_PYTHON is not set: run tests/suite.sh (tests/services/install-hec-clients.sh)"
        );
        eprintln!("SKIPPED: WAFSTREAM_HEC_PYTHON is not set");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let h = start(&out, &[]);
    let (host, port) = h.addr.rsplit_once(':').expect("addr");
    let lines = support::cloud_lines(600);
    let evens: Vec<&str> = lines.lines().step_by(2).collect();
    let odds: Vec<&str> = lines.lines().skip(1).step_by(2).collect();
    std::fs::write(dir.path().join("a.txt"), evens.join("\n")).expect("write");
    std::fs::write(dir.path().join("b.txt"), odds.join("\n")).expect("write");
    let script = format!(
        r#"
import logging, sys, time, uuid
from splunk_handler import SplunkHandler
from splunk_data_sender import SplunkSender

host, port, token, other = "{host}", {port}, "{TOKEN}", "{OTHER}"
log = logging.getLogger("imperva")
log.setLevel(logging.INFO)
log.propagate = False
h = SplunkHandler(host=host, port=port, token=token, index="main", protocol="http",
                  sourcetype="imperva:cef", flush_interval=0.2, queue_size=0, retry_count=5,
                  force_keep_ahead=True, record_format=False)
h.setFormatter(logging.Formatter("%(message)s"))
log.addHandler(h)
for line in open(sys.argv[1]).read().splitlines():
    log.info(line)
h.close()
logging.shutdown()

s = SplunkSender(endpoint=host, port=port, token=other, protocol="http", channel=str(uuid.uuid4()),
                 channel_in="header", source_type="imperva:cef", api_url="collector/event",
                 max_buf_size=50, compress=True)
assert s.get_health(), "health"
acks = []
batch = []
for line in open(sys.argv[2]).read().splitlines():
    batch.append(line)
    if len(batch) == 50:
        acks.append(s.send_data(batch)["ackId"])
        batch = []
if batch:
    acks.append(s.send_data(batch)["ackId"])
deadline = time.time() + 30
pending = list(acks)
while pending and time.time() < deadline:
    got = s.send_acks(pending)["acks"]
    pending = [a for a in pending if not got.get(str(a))]
    time.sleep(0.1)
assert not pending, "not acknowledged: %r" % pending
print("sent", len(acks), "acknowledged batches")
"#
    );
    let st = Command::new(&python)
        .arg("-c")
        .arg(&script)
        .arg(dir.path().join("a.txt"))
        .arg(dir.path().join("b.txt"))
        .output()
        .expect("python");
    let py = format!(
        "{}{}",
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(st.status.success(), "{py}");
    assert!(py.contains("sent 6 acknowledged batches"), "{py}");
    let docs = wait_for_docs(&out, 600);
    let scrape = support::http(&h.metrics, "GET", "/metrics").1;
    let err = stop(h);
    let mut ids: Vec<String> = docs.iter().filter_map(file_id).collect();
    ids.sort();
    let mut want: Vec<String> = (0..600).map(|i| (1000 + i).to_string()).collect();
    want.sort();
    assert_eq!(ids.len(), 600, "{err}\n{py}");
    assert_eq!(ids, want, "every event once");
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "imperva"), ("sourcetype", "imperva:cef")]
        ),
        Some(300.0),
        "{scrape}"
    );
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "other"), ("sourcetype", "imperva:cef")]
        ),
        Some(300.0),
        "{scrape}"
    );
}

/// `--hec-tls`: HTTPS with the TLS listener's certificate; with `--tls-client-ca`, a client
/// without a certificate is refused in the handshake and one with a certificate is served.
#[test]
fn https_with_and_without_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    if !support::pki(dir.path()) {
        panic!("openssl could not make the test certificates");
    }
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let curl = |addr: &str, extra: &[&str], body: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert", &p("ca.pem")])
            .args(extra)
            .args(["-H", &format!("Authorization: Splunk {TOKEN}"), "--data-binary", body])
            .arg(format!("https://{addr}/services/collector/event"));
        let o = cmd.output().expect("curl");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let out = dir.path().join("plain.ndjson");
    let h = start(
        &out,
        &[
            "--hec-tls",
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
        ],
    );
    let (ok, body, err) = curl(&h.addr, &[], &envelope(json!(cloud(0)), json!({})));
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"text": "Success", "code": 0}))
    );
    // Plain HTTP to the HTTPS port gets no HEC answer.
    let mut plain = TcpStream::connect(&h.addr).expect("connect");
    let _ = plain.write_all(b"GET /services/collector/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    plain.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HEC is healthy"));
    assert_eq!(wait_for_docs(&out, 1).len(), 1);
    stop(h);

    let out = dir.path().join("mtls.ndjson");
    let h = start(
        &out,
        &[
            "--hec-tls",
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    );
    let (ok, _, _) = curl(&h.addr, &[], &envelope(json!(cloud(1)), json!({})));
    assert!(!ok, "a client without a certificate is refused");
    let (ok, body, err) = curl(
        &h.addr,
        &["--cert", &p("client.pem"), "--key", &p("client.key")],
        &envelope(json!(cloud(2)), json!({})),
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"text": "Success", "code": 0}))
    );
    let docs = wait_for_docs(&out, 1);
    let scrape = support::http(&h.metrics, "GET", "/metrics").1;
    stop(h);
    assert_eq!(
        docs.iter().filter_map(file_id).collect::<Vec<_>>(),
        vec!["1002".to_string()]
    );
    assert!(
        support::sample(&scrape, "wafstream_ingress_tls_handshake_failures_total").unwrap_or(0.0) >= 1.0,
        "{scrape}"
    );
}

/// `--hec-max-requests 1`: while a request is still sending its body, another is answered
/// `503 Server is busy` (counted as `too_many_requests`), and served once the first is done.
/// A token given in a file (`--hec-token-file`) authenticates, named after the file.
#[test]
fn request_limit_answers_busy_and_token_files_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let token_file = dir.path().join("edge");
    std::fs::write(&token_file, "file-token-0123\n").expect("write");
    let h = start(
        &out,
        &[
            "--hec-max-requests",
            "1",
            "--hec-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let a = h.addr.as_str();
    let file_auth = [("Authorization", "Splunk file-token-0123")];
    let slow_body = envelope(json!(cloud(0)), json!({}));
    let mut slow = TcpStream::connect(a).expect("connect");
    write!(
        slow,
        "POST /services/collector/event HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nAuthorization: Splunk {TOKEN}\r\nContent-Length: {}\r\n\r\n{}",
        slow_body.len(),
        &slow_body[..10]
    )
    .expect("write");
    // The slow request holds the only slot once it is counted (the count and the slot are
    // taken in one step, before its body is read).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = support::http(&h.metrics, "GET", "/metrics").1;
        if series(&scrape, "wafstream_hec_requests_total", &[("token", "imperva")]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow request was never counted: {scrape}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (s, refused) = request(
        a,
        "POST",
        "/services/collector/event",
        &file_auth,
        envelope(json!(cloud(1)), json!({})).as_bytes(),
    );
    assert_eq!(s, 503);
    assert_eq!(refused, json!({"text": "Server is busy", "code": 9}));
    slow.write_all(&slow_body.as_bytes()[10..]).expect("rest of the body");
    let mut resp = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let _ = slow.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let (s, _) = request(
        a,
        "POST",
        "/services/collector/event",
        &file_auth,
        envelope(json!(cloud(1)), json!({})).as_bytes(),
    );
    assert_eq!(s, 200);
    let scrape = support::http(&h.metrics, "GET", "/metrics").1;
    let docs = wait_for_docs(&out, 2);
    stop(h);
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_refused_total",
            &[("token", "edge"), ("reason", "too_many_requests")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        series(
            &scrape,
            "wafstream_hec_events_total",
            &[("token", "edge"), ("sourcetype", "")]
        ),
        Some(1.0),
        "{scrape}"
    );
    let mut ids: Vec<String> = docs.iter().filter_map(file_id).collect();
    ids.sort();
    let want: Vec<String> = (0..2).map(|i| (1000 + i).to_string()).collect();
    assert_eq!(ids, want, "every accepted event once, the refused one not at all");
}
