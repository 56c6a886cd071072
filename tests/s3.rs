//! The S3 input end to end: a real S3 API server (s3s-fs, SigV4 verified, see
//! `tests/support/services.rs`), the real `wafstream run` binary, documents to an NDJSON file.
//! Each test has its own bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rsa::RsaPublicKey;
use serde_json::Value;
use support::services::{self, S3};
use support::{Comp, cloud_lines, container, rsa_key, write_key};

mod support;

struct Running {
    child: Child,
    metrics: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

struct Setup {
    s3: &'static S3,
    bucket: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(s3: &'static S3) -> Setup {
        Setup {
            bucket: s3.bucket("waf"),
            s3,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.ndjson")
    }

    fn keys(&self) -> PathBuf {
        let k = self.dir.path().join("keys");
        std::fs::create_dir_all(&k).expect("keys dir");
        k
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("s3-state.json")
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        self.s3.put(&self.bucket, key, body);
    }

    fn command(&self, secret: &str, extra: &[&str]) -> Command {
        self.command_at(&self.s3.endpoint, secret, extra)
    }

    fn command_at(&self, endpoint: &str, secret: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
        cmd.args(["run", "--listen-tcp", "off", "--listen-udp", "off", "--s3-bucket"])
            .arg(&self.bucket)
            .args(["--s3-endpoint", endpoint])
            .args([
                "--s3-access-key-id",
                self.s3.access_key,
                "--s3-secret-access-key",
                secret,
            ])
            .args(["--s3-prefix", "logs", "--s3-interval-ms", "200"])
            .arg("--keys-dir")
            .arg(self.keys())
            .arg("--output")
            .arg(self.out())
            .args(extra);
        cmd
    }

    fn start(&self, extra: &[&str]) -> Running {
        let mut cmd = self.command(self.s3.secret_key, extra);
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        let (child, rx) = support::spawn_with_stderr(cmd);
        let metrics = support::listening(&rx, &["metrics"])
            .remove("metrics")
            .expect("metrics");
        Running {
            child,
            metrics,
            stderr: rx,
        }
    }

    fn docs(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Wait (up to 30 s) for at least `n` documents.
    fn wait_docs(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.docs();
            if d.len() >= n || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Running {
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = support::http(&self.metrics, "GET", "/metrics");
        support::sample(&body, series).unwrap_or(0.0)
    }

    /// Wait (up to 30 s) until `series` is at least `want`; returns its value.
    fn wait_metric(&self, series: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.metric(series);
            if v >= want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; the process must exit 0. Returns its log.
    fn stop(mut self) -> String {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", self.child.id()))
            .status()
            .expect("kill");
        assert!(status.success());
        let code = self.child.wait().expect("wait");
        let log = drain(&self.stderr);
        assert!(code.success(), "exit {code:?}\n{log}");
        log
    }
}

fn drain(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let mut all = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        all.push_str(&l);
        all.push('\n');
    }
    all
}

/// The CEF lines of `n` events, numbered from `from` (distinct `fileId`s across objects).
fn lines(from: usize, n: usize) -> String {
    cloud_lines(from + n)
        .lines()
        .skip(from)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn public(key: &rsa::RsaPrivateKey) -> RsaPublicKey {
    RsaPublicKey::from(key)
}

/// `log.file.path` of every document, sorted.
fn sources(docs: &[Value]) -> Vec<String> {
    let mut s: Vec<String> = docs
        .iter()
        .map(|d| d["log"]["file"]["path"].as_str().unwrap_or("-").to_string())
        .collect();
    s.sort();
    s
}

fn count(v: &[String], what: &str) -> usize {
    v.iter().filter(|s| *s == what).count()
}

fn state_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into());
    let v: Value = serde_json::from_str(&text).expect("state is JSON");
    v["done"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn plain_compressed_and_encrypted_objects_each_come_out_once() {
    let Some(s3) = services::s3() else { return };
    let t = Setup::new(s3);
    let key = rsa_key(31);
    write_key(&t.keys(), support::KEY_ID, &key);
    let pk = public(&key);
    t.put(
        "logs/100_1.log",
        container(lines(0, 3).as_bytes(), Comp::None, None, None),
    );
    t.put(
        "logs/100_2.log",
        container(lines(3, 4).as_bytes(), Comp::Zlib, None, None),
    );
    t.put(
        "logs/100_3.log",
        container(lines(7, 5).as_bytes(), Comp::Gzip, None, None),
    );
    t.put(
        "logs/100_4.log",
        container(lines(12, 6).as_bytes(), Comp::Zlib, Some((&pk, 32)), None),
    );
    // Outside the prefix: never read.
    t.put(
        "other/100_5.log",
        container(lines(18, 2).as_bytes(), Comp::None, None, None),
    );
    let t0 = Instant::now();
    let r = t.start(&[]);
    let docs = t.wait_docs(18);
    eprintln!("18 documents from 4 objects in {:?}", t0.elapsed());
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 4.0), 4.0);
    // A few more listings: nothing is read twice.
    let listed = r.metric("wafstream_s3_objects_listed_total");
    r.wait_metric("wafstream_s3_objects_listed_total", listed + 8.0);
    assert_eq!(r.metric("wafstream_s3_objects_fetched_total"), 4.0);
    assert_eq!(r.metric("wafstream_s3_pending_objects"), 0.0);
    assert_eq!(r.metric("wafstream_s3_lines_total"), 18.0);
    let (_, scrape) = support::http(&r.metrics, "GET", "/metrics");
    assert!(
        support::sample(&scrape, "wafstream_s3_lag_seconds").is_some(),
        "lag shown once an object is done: {scrape}"
    );
    let log = r.stop();
    let docs2 = t.docs();
    assert_eq!(docs2.len(), 18, "every line once: {log}");
    assert_eq!(docs.len(), 18);
    let src = sources(&docs2);
    for (k, n) in [
        ("logs/100_1.log", 3),
        ("logs/100_2.log", 4),
        ("logs/100_3.log", 5),
        ("logs/100_4.log", 6),
    ] {
        assert_eq!(count(&src, k), n, "{k}: {src:?}");
    }
    let mut lines_seen: Vec<String> = docs2
        .iter()
        .map(|d| format!("{}@{}", d["log"]["file"]["path"], d["log"]["offset"]))
        .collect();
    lines_seen.sort();
    lines_seen.dedup();
    assert_eq!(lines_seen.len(), 18, "18 distinct lines");
    assert!(
        docs2.iter().all(|d| d["event"]["kind"] != "pipeline_error"),
        "{docs2:?}"
    );
}

#[test]
fn a_restart_reads_nothing_again_and_new_objects_are_picked_up() {
    let Some(s3) = services::s3() else { return };
    let t = Setup::new(s3);
    t.put(
        "logs/200_1.log",
        container(lines(0, 5).as_bytes(), Comp::Gzip, None, None),
    );
    t.put(
        "logs/200_2.log",
        container(lines(5, 7).as_bytes(), Comp::Zlib, None, None),
    );
    let state = t.state();
    let state_arg = state.to_str().expect("utf-8 path");
    let r = t.start(&["--s3-state", state_arg]);
    assert_eq!(t.wait_docs(12).len(), 12);
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 2.0), 2.0);
    r.stop();
    assert_eq!(state_keys(&state), ["logs/200_1.log", "logs/200_2.log"]);

    // Same state: several listings, no download, no document.
    let r = t.start(&["--s3-state", state_arg]);
    r.wait_metric("wafstream_s3_objects_listed_total", 10.0);
    assert_eq!(
        r.metric("wafstream_s3_objects_fetched_total"),
        0.0,
        "nothing downloaded again"
    );
    assert_eq!(t.docs().len(), 12);
    // A new object while running.
    t.put(
        "logs/200_3.log",
        container(lines(12, 4).as_bytes(), Comp::None, None, None),
    );
    let docs = t.wait_docs(16);
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 1.0), 1.0);
    assert_eq!(r.metric("wafstream_s3_objects_fetched_total"), 1.0);
    // A deleted object leaves the state.
    t.s3.delete(&t.bucket, "logs/200_1.log");
    let listed = r.metric("wafstream_s3_objects_listed_total");
    r.wait_metric("wafstream_s3_objects_listed_total", listed + 6.0);
    r.stop();
    assert_eq!(docs.len(), 16);
    assert_eq!(t.docs().len(), 16, "nothing twice");
    assert_eq!(state_keys(&state), ["logs/200_2.log", "logs/200_3.log"]);
    assert_eq!(count(&sources(&docs), "logs/200_3.log"), 4);
}

#[test]
fn an_object_whose_key_is_missing_stays_pending_until_the_key_is_there() {
    let Some(s3) = services::s3() else { return };
    let t = Setup::new(s3);
    let key = rsa_key(32);
    let pk = public(&key);
    t.put(
        "logs/300_1.log",
        container(lines(0, 6).as_bytes(), Comp::Gzip, Some((&pk, 16)), None),
    );
    t.put(
        "logs/300_2.log",
        container(lines(6, 2).as_bytes(), Comp::None, None, None),
    );
    let state = t.state();
    let r = t.start(&["--s3-state", state.to_str().expect("utf-8 path")]);
    assert_eq!(t.wait_docs(2).len(), 2);
    assert!(
        r.wait_metric("wafstream_s3_key_errors_total", 2.0) >= 2.0,
        "read again at each poll"
    );
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 1.0), 1.0);
    // Listed after the plain object was done: only the encrypted one is pending.
    let listed = r.metric("wafstream_s3_objects_listed_total");
    r.wait_metric("wafstream_s3_objects_listed_total", listed + 4.0);
    assert_eq!(r.metric("wafstream_s3_pending_objects"), 1.0);
    assert_eq!(t.docs().len(), 2, "nothing from the encrypted object");
    assert_eq!(state_keys(&state), ["logs/300_2.log"], "not marked done");
    // The key arrives: read at the next poll.
    write_key(&t.keys(), support::KEY_ID, &key);
    let docs = t.wait_docs(8);
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 2.0), 2.0);
    let log = r.stop();
    assert!(log.contains("cannot decrypt"), "{log}");
    assert_eq!(docs.len(), 8);
    assert_eq!(count(&sources(&docs), "logs/300_1.log"), 6);
    assert_eq!(state_keys(&state), ["logs/300_1.log", "logs/300_2.log"]);
}

/// Run until the process exits by itself (at most 30 s); its exit code and log.
fn run_to_exit(cmd: Command) -> (Option<i32>, String) {
    let (mut child, rx) = support::spawn_with_stderr(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 30 s:\n{}", drain(&rx));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), drain(&rx))
}

#[test]
fn wrong_credentials_or_a_missing_bucket_stop_the_process_with_exit_2() {
    let Some(s3) = services::s3() else { return };
    let t = Setup::new(s3);
    t.put(
        "logs/400_1.log",
        container(lines(0, 2).as_bytes(), Comp::None, None, None),
    );
    let t0 = Instant::now();
    let (code, log) = run_to_exit(t.command("not-the-secret", &[]));
    eprintln!("wrong secret: exit {code:?} after {:?}", t0.elapsed());
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("access denied or credentials refused"), "{log}");
    assert!(t.docs().is_empty());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args(["run", "--listen-tcp", "off", "--listen-udp", "off"])
        .args(["--s3-bucket", "no-such-bucket-here", "--s3-endpoint", &s3.endpoint])
        .args([
            "--s3-access-key-id",
            s3.access_key,
            "--s3-secret-access-key",
            s3.secret_key,
        ])
        .arg("--output")
        .arg(t.out());
    let (code, log) = run_to_exit(cmd);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("no such bucket"), "{log}");
}

#[test]
fn a_store_unreachable_at_start_is_retried_until_it_answers() {
    let Some(s3) = services::s3() else { return };
    let Some(bin) = std::env::var_os("WAFSTREAM_S3S_FS") else {
        return;
    };
    // A server of this test's own, started late on a port chosen now; its bucket is a folder.
    let t = Setup::new(s3);
    let root = t.dir.path().join("late-root");
    let objects = root.join(&t.bucket).join("logs");
    std::fs::create_dir_all(&objects).expect("bucket dir");
    std::fs::write(
        objects.join("500_1.log"),
        container(lines(0, 3).as_bytes(), Comp::Gzip, None, None),
    )
    .expect("object");
    let port = services::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cmd = t.command_at(&endpoint, s3.secret_key, &["--metrics-addr", "127.0.0.1:0"]);
    let (child, rx) = support::spawn_with_stderr(cmd);
    let metrics = support::listening(&rx, &["metrics"])
        .remove("metrics")
        .expect("metrics");
    let r = Running {
        child,
        metrics,
        stderr: rx,
    };
    assert!(
        r.wait_metric("wafstream_s3_retries_total", 2.0) >= 2.0,
        "connection refused is retried"
    );
    assert!(t.docs().is_empty());
    let mut server = Command::new(bin);
    server
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", s3.access_key, "--secret-key", s3.secret_key])
        .arg(&root);
    let (mut server, _server_log) = support::spawn_with_stderr(server);
    // Backoff: the next listing comes within 4 s.
    let docs = t.wait_docs(3);
    assert_eq!(r.wait_metric("wafstream_s3_objects_done_total", 1.0), 1.0);
    let log = r.stop();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(docs.len(), 3, "{log}");
    assert!(log.contains("S3 listing failed; retrying"), "{log}");
}
