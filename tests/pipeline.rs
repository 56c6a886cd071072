//! The pipeline core across its wirings: the same files through `parse` and `run --file` give
//! the same documents (CEF, LEEF, W3C with columns from a directive and from an Imperva file
//! header, Imperva files plain / gzip / zlib / encrypted, gzip line files); file checkpoints
//! advance only over what the sink acknowledged, survive SIGKILL, and an unreadable checkpoint
//! stops `run` with a message.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::inputs::{by_id, input_files, securesphere};

mod support;

fn wafstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wafstream"))
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
}

#[test]
fn parse_and_run_give_the_same_documents_for_line_files_and_whole_imperva_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dir, keys) = (tmp.path().join("in"), tmp.path().join("keys"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let events = input_files(&dir, &keys);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();

    let parsed = wafstream()
        .args(["parse", "--emit-id", "--threads", "3", "--keys-dir"])
        .arg(&keys)
        .args(&names)
        .output()
        .expect("parse");
    let stderr = String::from_utf8_lossy(&parsed.stderr);
    assert_eq!(parsed.status.code(), Some(0), "{stderr}");
    let from_parse = by_id(
        String::from_utf8_lossy(&parsed.stdout)
            .lines()
            .map(support::inputs::json),
    );
    assert_eq!(from_parse.len(), events, "{stderr}");

    let out = tmp.path().join("run.ndjson");
    let mut run = wafstream()
        .args([
            "run",
            "--listen-tcp",
            "off",
            "--listen-udp",
            "off",
            "--emit-id",
            "--threads",
            "2",
            "--file-poll-ms",
            "100",
            "--file",
        ])
        .arg(dir.join("*"))
        .arg("--keys-dir")
        .arg(&keys)
        .arg("--output")
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let text = wait_for("run's documents", 30, || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        (t.lines().count() >= events).then_some(t)
    });
    sigterm(&run);
    assert!(run.wait().expect("wait").success());
    let from_run = by_id(text.lines().map(support::inputs::json));
    assert_eq!(from_run.len(), events);
    for (id, doc) in &from_parse {
        assert_eq!(
            Some(doc),
            from_run.get(id),
            "document {id} differs between parse and run"
        );
    }
    // Each kind of input is there, mapped (not dead-lettered).
    let datasets: HashSet<String> = from_run
        .values()
        .map(|d| {
            d["data_stream"]["dataset"]
                .as_str()
                .unwrap_or("dead letter")
                .to_string()
        })
        .collect();
    assert_eq!(
        datasets,
        HashSet::from([
            "imperva.securesphere".to_string(),
            "imperva_cloud_waf.event".to_string()
        ])
    );
    let paths: HashSet<&str> = from_run
        .values()
        .filter_map(|d| d["log"]["file"]["path"].as_str())
        .collect();
    assert_eq!(paths.len(), names.len(), "every file gave documents: {paths:?}");
    // W3C columns from a body directive, changed halfway, and from an Imperva file header.
    let statuses: HashSet<i64> = from_run
        .values()
        .filter_map(|d| d["http"]["response"]["status_code"].as_i64())
        .collect();
    for code in [200, 403, 404, 500] {
        assert!(statuses.contains(&code), "status {code} missing: {statuses:?}");
    }
}

#[test]
fn an_unreadable_checkpoint_stops_run_with_the_file_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cp = tmp.path().join("checkpoint.json");
    std::fs::write(&cp, b"{\"files\": {\"1:2\": {\"path\": \"x\", \"offs").expect("write");
    std::fs::write(tmp.path().join("a.log"), securesphere(3, 1)).expect("write");
    let out = wafstream()
        .args(["run", "--listen-tcp", "off", "--listen-udp", "off", "--file"])
        .arg(tmp.path().join("*.log"))
        .arg("--checkpoint")
        .arg(&cp)
        .arg("--output")
        .arg(tmp.path().join("out.ndjson"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&cp.display().to_string()), "{stderr}");
    assert!(stderr.contains("move the checkpoint aside"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("out.ndjson")).unwrap_or_default(),
        "",
        "nothing is read when the checkpoint is unusable"
    );
}

/// The byte offset the checkpoint holds for the one file it follows.
fn checkpointed(cp: &Path) -> Option<u64> {
    let v: Value = serde_json::from_slice(&std::fs::read(cp).ok()?).ok()?;
    v["files"].as_object()?.values().next()?["offset"].as_u64()
}

#[test]
fn run_killed_while_elasticsearch_stalls_loses_nothing_and_repeats_nothing_acknowledged() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stall = Arc::new(AtomicBool::new(false));
    let s = stall.clone();
    let (url, seen) = rt.block_on(support::start(
        Arc::new(|_, _| (201, "")),
        Arc::new(move |_| s.load(Ordering::Relaxed).then_some(503)),
    ));
    let tmp = tempfile::tempdir().expect("tmp");
    let (log, cp) = (tmp.path().join("waf.log"), tmp.path().join("checkpoint.json"));
    let start = || {
        wafstream()
            .args([
                "run",
                "--listen-tcp",
                "off",
                "--listen-udp",
                "off",
                "--file-poll-ms",
                "100",
            ])
            .arg("--file")
            .arg(&log)
            .arg("--checkpoint")
            .arg(&cp)
            .args(["--es-url", &url, "--es-flush-interval-ms", "50", "--output"])
            .arg(tmp.path().join("dead.ndjson"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run")
    };
    let ids = |seen: &support::Seen| -> BTreeMap<String, usize> {
        seen.docs
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.1))
            .collect()
    };

    // Phase 1: 30 lines delivered; the checkpoint reaches the end of the file.
    let first = securesphere(30, 5);
    std::fs::write(&log, &first).expect("write");
    let mut run = start();
    wait_for("30 documents", 30, || (ids(&seen).len() == 30).then_some(()));
    wait_for("the checkpoint at the end of the file", 10, || {
        (checkpointed(&cp) == Some(first.len() as u64)).then_some(())
    });
    let delivered = ids(&seen);

    // Phase 2: Elasticsearch stalls; 20 more lines are read but never acknowledged; SIGKILL.
    stall.store(true, Ordering::Relaxed);
    let more = securesphere(20, 6);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, more.as_bytes()))
        .expect("append");
    let before = seen.requests.load(Ordering::Relaxed);
    wait_for("refused bulk requests", 20, || {
        (seen.requests.load(Ordering::Relaxed) > before + 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        checkpointed(&cp),
        Some(first.len() as u64),
        "the checkpoint must not pass unacknowledged lines"
    );
    run.kill().expect("SIGKILL");
    run.wait().expect("wait");

    // Phase 3: Elasticsearch is back; a restart delivers the 20, and repeats none of the 30.
    stall.store(false, Ordering::Relaxed);
    let mut run = start();
    wait_for("50 documents", 30, || (ids(&seen).len() == 50).then_some(()));
    sigterm(&run);
    assert!(run.wait().expect("wait").success());
    let now = ids(&seen);
    for id in delivered.keys() {
        assert_eq!(
            now[id], 1,
            "document {id} was acknowledged before the kill and sent again"
        );
    }
    assert_eq!(checkpointed(&cp), Some((first.len() + more.len()) as u64));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("dead.ndjson")).unwrap_or_default(),
        "",
        "nothing dead-lettered"
    );
}

#[test]
fn readyz_follows_the_search_engine_and_healthz_stays_up() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A port with nothing behind it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cmd = wafstream();
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
        "--metrics-addr",
        "127.0.0.1:0",
        "--es-url",
        &url,
        "--output",
    ])
    .arg(tmp.path().join("out.ndjson"));
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let at = support::listening(&rx, &["metrics", "tcp"]);
    let metrics = at["metrics"].clone();
    // Listening, but the search engine is not there: not ready, and it says why.
    let (status, body) = wait_for("/readyz to name only the search engine", 10, || {
        let (status, body) = support::http(&metrics, "GET", "/readyz");
        (body.trim() == "not ready: elasticsearch").then_some((status, body))
    });
    assert!(status.contains("503"), "{status} {body}");
    assert!(support::http(&metrics, "GET", "/healthz").0.contains("200"));
    // The search engine comes up: ready within a few probes.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .expect("bind the engine's port");
    rt.spawn(support::serve(
        listener,
        Arc::new(support::Seen::default()),
        Arc::new(|_, _| (201, "")),
        Arc::new(|_| None),
    ));
    wait_for("/readyz to answer 200", 15, || {
        support::http(&metrics, "GET", "/readyz")
            .0
            .contains("200")
            .then_some(())
    });
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn json_logs_are_one_object_per_line_and_carry_no_event_contents() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("a.log"), "not an event: SECRET-PAYLOAD\n").expect("write");
    let mut cmd = wafstream();
    cmd.args([
        "--log-format",
        "json",
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
        "--file-poll-ms",
        "50",
        "--file",
    ])
    .arg(tmp.path().join("*.log"))
    .arg("--output")
    .arg(tmp.path().join("out.ndjson"));
    let (child, rx) = support::spawn_with_stderr(cmd);
    support::listening(&rx, &["tcp"]);
    wait_for("the dead letter", 10, || {
        std::fs::read_to_string(tmp.path().join("out.ndjson"))
            .unwrap_or_default()
            .contains("pipeline_error")
            .then_some(())
    });
    sigterm(&child);
    let mut child = child;
    assert!(child.wait().expect("wait").success());
    let lines: Vec<String> = support::rest(&rx);
    assert!(lines.iter().any(|l| l.contains("1 dead-lettered")), "{lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
        assert!(!l.contains("SECRET-PAYLOAD"), "event contents in the log: {l}");
    }
}

#[test]
fn outputs_are_appended_to_and_a_line_cut_by_a_crash_is_replaced_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (out, dead) = (tmp.path().join("out.ndjson"), tmp.path().join("dead.ndjson"));
    // What an earlier run left: a whole document, then one cut short by a crash.
    std::fs::write(&out, "{\"earlier\":1}\n{\"cut\":").expect("write");
    std::fs::write(&dead, "{\"earlier_dead\":1}\n").expect("write");
    std::fs::write(
        tmp.path().join("a.log"),
        format!("{}not an event\n", securesphere(3, 2)),
    )
    .expect("write");
    let mut run = wafstream()
        .args([
            "run",
            "--listen-tcp",
            "off",
            "--listen-udp",
            "off",
            "--file-poll-ms",
            "50",
            "--file",
        ])
        .arg(tmp.path().join("*.log"))
        .arg("--output")
        .arg(&out)
        .arg("--dlq")
        .arg(&dead)
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    wait_for("the documents", 20, || {
        (std::fs::read_to_string(&out).unwrap_or_default().lines().count() >= 4).then_some(())
    });
    sigterm(&run);
    assert!(run.wait().expect("wait").success());
    let text = std::fs::read_to_string(&out).expect("out");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{\"earlier\":1}");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(!text.contains("\"cut\""), "{text}");
    for l in &lines[1..] {
        support::inputs::json(l);
    }
    let dead_text = std::fs::read_to_string(&dead).expect("dead");
    assert!(dead_text.starts_with("{\"earlier_dead\":1}\n"), "{dead_text}");
    assert_eq!(dead_text.lines().count(), 2, "{dead_text}");
    // parse --dlq appends too.
    let parsed = wafstream()
        .args(["parse", "--dlq"])
        .arg(&dead)
        .arg(tmp.path().join("a.log"))
        .output()
        .expect("parse");
    assert_eq!(parsed.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&dead).expect("dead").lines().count(), 3);
}

#[test]
fn a_stop_while_elasticsearch_is_down_ends_within_the_drain_timeout_or_at_a_second_signal() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (url, seen) = rt.block_on(support::start(Arc::new(|_, _| (201, "")), Arc::new(|_| Some(503))));
    for (drain_ms, second_signal) in [("1500", false), ("600000", true)] {
        let tmp = tempfile::tempdir().expect("tmp");
        let (log, cp) = (tmp.path().join("waf.log"), tmp.path().join("checkpoint.json"));
        std::fs::write(&log, securesphere(20, 8)).expect("write");
        let before = seen.requests.load(Ordering::Relaxed);
        let mut run = wafstream()
            .args([
                "run",
                "--listen-tcp",
                "off",
                "--listen-udp",
                "off",
                "--file-poll-ms",
                "50",
            ])
            .arg("--file")
            .arg(&log)
            .arg("--checkpoint")
            .arg(&cp)
            .args([
                "--es-url",
                &url,
                "--es-flush-interval-ms",
                "50",
                "--drain-timeout-ms",
                drain_ms,
            ])
            .arg("--output")
            .arg(tmp.path().join("dead.ndjson"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        wait_for("bulk requests refused", 20, || {
            (seen.requests.load(Ordering::Relaxed) > before).then_some(())
        });
        let t0 = Instant::now();
        sigterm(&run);
        if second_signal {
            std::thread::sleep(Duration::from_millis(300));
            sigterm(&run);
        }
        let out = run.wait().expect("wait");
        let took = t0.elapsed();
        let mut stderr = String::new();
        std::io::Read::read_to_string(run.stderr.as_mut().expect("stderr"), &mut stderr).expect("stderr");
        assert_eq!(out.code(), Some(2), "{stderr}");
        assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
        let why = if second_signal {
            "interrupted again"
        } else {
            "drain timeout"
        };
        assert!(
            stderr.contains("stopped before every output was delivered") && stderr.contains(why),
            "{stderr}"
        );
        // Nothing was delivered, so nothing was checkpointed: a restart reads it all again.
        assert!(
            checkpointed(&cp).unwrap_or(0) == 0,
            "{:?}",
            std::fs::read_to_string(&cp)
        );
    }
}

/// Known secrets given on the command line never appear in what a run prints, even at debug
/// level: stderr (logs) and stdout.
#[test]
fn secrets_are_never_printed() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (url, _seen) = rt.block_on(support::start(Arc::new(|_, _| (201, "")), Arc::new(|_| None)));
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("a.log"), securesphere(5, 3)).expect("write");
    let secrets = ["pw-Zq81-secret", "apikey-Xr52-secret"];
    let mut cmd = wafstream();
    cmd.args([
        "--log-level",
        "debug",
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
    ])
    .args(["--file-poll-ms", "50", "--es-url", &url])
    .args([
        "--es-user",
        "elastic",
        "--es-password",
        secrets[0],
        "--es-flush-interval-ms",
        "20",
    ])
    .arg("--file")
    .arg(tmp.path().join("*.log"))
    .arg("--output")
    .arg(tmp.path().join("out.ndjson"));
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    support::listening(&rx, &["tcp"]);
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    let mut printed: Vec<String> = support::rest(&rx);
    // And validate-config with the secrets in a file.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"k:9092\"\n[kafka.properties]\n\"sasl.password\" = \"{}\"\n",
            secrets[1]
        ),
    )
    .expect("write");
    let out = wafstream().arg("validate-config").arg(&cfg).output().expect("validate");
    printed.push(String::from_utf8_lossy(&out.stdout).into_owned());
    printed.push(String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(printed.len() > 5, "the run said something: {printed:?}");
    for line in &printed {
        for s in secrets {
            assert!(!line.contains(s), "a secret was printed: {line}");
        }
    }
}

/// SIGTERM while a sender is mid-stream: the connection keeps being read until the sender
/// closes, so every line it wrote comes out; a message the sender cut short (octet counting)
/// becomes a dead letter with what arrived.
#[test]
fn lines_a_sender_writes_during_the_drain_and_a_cut_octet_frame_all_come_out() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out.ndjson");
    let mut cmd = wafstream();
    cmd.args(["run", "--listen-tcp", "127.0.0.1:0", "--listen-udp", "off", "--output"])
        .arg(&out);
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let tcp = support::listening(&rx, &["tcp"]).remove("tcp").expect("tcp");
    let lines: Vec<String> = securesphere(3000, 4).lines().map(str::to_string).collect();
    let mut a = std::net::TcpStream::connect(&tcp).expect("connect");
    for l in &lines[..2000] {
        writeln!(a, "{l}").expect("write");
    }
    // A second sender starts an octet-counted message and closes half way.
    let mut b = std::net::TcpStream::connect(&tcp).expect("connect");
    write!(b, "500 {}", &lines[0][..100]).expect("write");
    wait_for("the first lines", 20, || {
        (std::fs::read_to_string(&out).unwrap_or_default().lines().count() >= 1000).then_some(())
    });
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    // Still being read after the signal.
    for l in &lines[2000..] {
        writeln!(a, "{l}").expect("write during the drain");
    }
    drop(b);
    drop(a);
    assert!(child.wait().expect("wait").success());
    let docs: Vec<Value> = std::fs::read_to_string(&out)
        .expect("out")
        .lines()
        .map(support::inputs::json)
        .collect();
    let dead: Vec<&Value> = docs.iter().filter(|d| d["event"]["kind"] == "pipeline_error").collect();
    assert_eq!(docs.len() - dead.len(), 3000, "every line the sender wrote");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let why = dead[0]["error"]["message"].as_str().unwrap_or("");
    assert!(
        why.contains("announced 500 bytes") && why.contains("closed after 100"),
        "{why}"
    );
    assert_eq!(dead[0]["event"]["original"], &lines[0][..100]);
}

/// A TCP burst that fills the bus while the search engine stalls does not make UDP datagrams
/// sent meanwhile get dropped: UDP has its own queue.
#[test]
fn udp_datagrams_survive_a_tcp_burst_that_fills_the_bus() {
    use std::io::Write;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stall = Arc::new(AtomicBool::new(true));
    let s = stall.clone();
    let (url, seen) = rt.block_on(support::start(
        Arc::new(|_, _| (201, "")),
        Arc::new(move |_| s.load(Ordering::Relaxed).then_some(503)),
    ));
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cmd = wafstream();
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "127.0.0.1:0",
        "--bus-capacity",
        "1024",
    ])
    .args(["--es-url", &url, "--es-flush-interval-ms", "20", "--output"])
    .arg(tmp.path().join("dead.ndjson"));
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let at = support::listening(&rx, &["tcp", "udp"]);
    let lines: Vec<String> = securesphere(15_000, 6).lines().map(str::to_string).collect();
    // More than the core keeps in flight (10,000) plus the bus: TCP backs up.
    let tcp = at["tcp"].clone();
    let burst = std::thread::spawn(move || {
        let mut c = std::io::BufWriter::new(std::net::TcpStream::connect(&tcp).expect("tcp"));
        for (i, l) in lines.iter().enumerate() {
            writeln!(c, "{l} cs9=tcp-{i}").expect("write");
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let ss = securesphere(300, 7);
    for (i, l) in ss.lines().enumerate() {
        udp.send_to(format!("{l} cs9=udp-{i}").as_bytes(), &at["udp"])
            .expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    stall.store(false, Ordering::Relaxed);
    burst.join().expect("burst");
    wait_for("every document", 60, || {
        (seen.docs.lock().expect("lock").len() == 15_300).then_some(())
    });
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    let report: Vec<String> = support::rest(&rx);
    assert!(
        report.iter().any(|l| l.contains("0 UDP datagrams dropped")),
        "{report:?}"
    );
}

/// Idle connections holding the connection limit do not lock a new sender out: the one idle
/// the longest is closed (its lines were kept) and the newcomer's lines arrive at once.
#[test]
fn a_new_sender_at_the_connection_limit_gets_in_at_once() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out.ndjson");
    let mut cmd = wafstream();
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
        "--max-connections",
        "3",
    ])
    .arg("--output")
    .arg(&out);
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let tcp = support::listening(&rx, &["tcp"]).remove("tcp").expect("tcp");
    let lines: Vec<String> = securesphere(8, 9).lines().map(str::to_string).collect();
    let count = || std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    let mut idle = Vec::new();
    for l in &lines[..3] {
        let mut c = std::net::TcpStream::connect(&tcp).expect("connect");
        writeln!(c, "{l}").expect("write");
        idle.push(c);
        let want = idle.len();
        wait_for("the idle sender's line", 10, || (count() >= want).then_some(()));
    }
    let t0 = Instant::now();
    let mut new = std::net::TcpStream::connect(&tcp).expect("connect");
    for l in &lines[3..] {
        writeln!(new, "{l}").expect("write");
    }
    wait_for("the new sender's lines", 10, || (count() >= 8).then_some(()));
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    drop(new);
    drop(idle);
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    let report: Vec<String> = support::rest(&rx);
    assert!(report.iter().any(|l| l.contains("1 closed at the limit")), "{report:?}");
}

/// The same alert sent twice (byte-identical lines, same second) is two events: two documents
/// with two ids. A file line's id stays its own across re-reads (file and offset).
#[test]
fn identical_events_are_two_documents() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out.ndjson");
    let mut cmd = wafstream();
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
        "--emit-id",
        "--output",
    ])
    .arg(&out);
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let tcp = support::listening(&rx, &["tcp"]).remove("tcp").expect("tcp");
    let line = securesphere(1, 5);
    let cloud = support::cloud_lines(1);
    let mut c = std::net::TcpStream::connect(&tcp).expect("connect");
    write!(c, "{line}{line}{cloud}{cloud}").expect("write");
    drop(c);
    wait_for("four documents", 10, || {
        (std::fs::read_to_string(&out).unwrap_or_default().lines().count() >= 4).then_some(())
    });
    sigterm(&child);
    assert!(child.wait().expect("wait").success());
    let ids: HashSet<String> = std::fs::read_to_string(&out)
        .expect("out")
        .lines()
        .map(|l| support::inputs::json(l)["_id"].as_str().expect("_id").to_string())
        .collect();
    assert_eq!(ids.len(), 4, "identical events share an id: {ids:?}");
    // The same file parsed twice gives the same ids (a re-read is not a new occurrence).
    std::fs::write(tmp.path().join("a.log"), format!("{line}{line}")).expect("write");
    let parse = || {
        let o = wafstream()
            .args(["parse", "--emit-id"])
            .arg(tmp.path().join("a.log"))
            .output()
            .expect("parse");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| support::inputs::json(l)["_id"].as_str().expect("_id").to_string())
            .collect::<Vec<_>>()
    };
    let (first, again) = (parse(), parse());
    assert_eq!(first, again);
    assert_ne!(first[0], first[1], "two lines, two occurrences");
}
