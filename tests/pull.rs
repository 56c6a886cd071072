//! The Cloud WAF pull connector against a server playing Imperva's log repository, on
//! 127.0.0.1: `logs.index` and files built here (encrypted+zlib with a key made here, plain,
//! gzip, LEEF, W3C), a 429 with `Retry-After`, a file that is not ready at first, a file that
//! never comes (a gap), wrong credentials (401), a restart (nothing downloaded twice) and a
//! missing private key (the file is not done until the key is there). `wafstream run` is the
//! real binary; documents go to an NDJSON file.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::imperva_api::server;
use support::inputs::{W3C, leef};
use support::{Comp, cloud_lines, container, rsa_key, write_key};

struct Run {
    child: Child,
    metrics: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

fn run(url: &str, key: &str, dir: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args(["run", "--listen-tcp", "off", "--listen-udp", "off", "--emit-id"])
        .args(["--pull-url", url, "--pull-api-id", "2398", "--pull-api-key", key])
        .args(["--pull-interval-ms", "200", "--pull-missing-retries", "2"])
        .arg("--pull-state")
        .arg(dir.join("pull.json"))
        .arg("--keys-dir")
        .arg(dir.join("keys"))
        .arg("--output")
        .arg(dir.join("out.ndjson"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(extra);
    let (child, rx) = support::spawn_with_stderr(cmd);
    let metrics = support::listening(&rx, &["metrics"])
        .remove("metrics")
        .unwrap_or_default();
    Run {
        child,
        metrics,
        stderr: rx,
    }
}

fn stop(mut r: Run) -> (Option<i32>, String) {
    let _ = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status();
    let code = r.child.wait().expect("wait").code();
    let log: Vec<String> = support::rest(&r.stderr);
    (code, log.join("\n"))
}

fn docs(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn wait_docs(dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = docs(dir);
        if d.len() >= n || Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(addr: &str, series: &str) -> f64 {
    let (_, body) = support::http(addr, "GET", "/metrics");
    support::sample(&body, series).unwrap_or(-1.0)
}

fn wait_metric(addr: &str, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(addr, series);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cloud(file: usize, n: usize) -> String {
    cloud_lines(n).replace("fileId=", &format!("fileId={file}0"))
}

#[test]
fn every_format_arrives_once_through_429s_late_files_and_a_gap_and_a_restart_downloads_nothing_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rsa_key(5);
    write_key(&dir.path().join("keys"), support::KEY_ID, &key);
    let public = rsa::RsaPublicKey::from(&key);
    let s = server("2398", "s3cret");
    s.add(
        "5678_1.log",
        container(cloud(1, 5).as_bytes(), Comp::Zlib, Some((&public, 32)), None),
    );
    s.add("5678_2.log", container(cloud(2, 4).as_bytes(), Comp::None, None, None));
    s.add("5678_3.log", container(cloud(3, 3).as_bytes(), Comp::Gzip, None, None));
    let mut leef_file = b"format:LEEF\n|==|\n".to_vec();
    leef_file.extend((0..4).map(leef).collect::<String>().as_bytes());
    s.add("5678_4.log", leef_file);
    let mut w3c_file = b"format:W3C\n|==|\n".to_vec();
    w3c_file.extend(W3C.as_bytes());
    s.add("5678_5.log", w3c_file);
    s.add("5678_6.log", container(cloud(6, 2).as_bytes(), Comp::Zlib, None, None));
    s.add("5678_7.log", container(cloud(7, 2).as_bytes(), Comp::None, None, None));
    // Sorted by number, 5678_10 comes last, not after 5678_1.
    s.add(
        "5678_10.log",
        container(cloud(10, 2).as_bytes(), Comp::None, None, None),
    );
    {
        let mut r = s.repo.lock().unwrap();
        r.busy = 1;
        r.not_ready.insert("5678_6.log".into(), 2);
        r.not_ready.insert("5678_7.log".into(), usize::MAX);
    }
    let total = 5 + 4 + 3 + 4 + 3 + 2 + 2;
    let r = run(&s.url, "s3cret", dir.path(), &[]);
    let got = wait_docs(dir.path(), total);
    assert_eq!(wait_metric(&r.metrics, "wafstream_pull_gaps_total", 1.0), 1.0);
    assert_eq!(wait_metric(&r.metrics, "wafstream_pull_files_done_total", 7.0), 7.0);
    assert!(
        metric(&r.metrics, "wafstream_pull_retries_total") >= 1.0,
        "the 429 was retried"
    );
    let (code, log) = stop(r);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(got.len(), total, "{log}");
    let ids: HashSet<&str> = got.iter().filter_map(|d| d["_id"].as_str()).collect();
    assert_eq!(ids.len(), total, "every line once");
    assert!(
        got.iter().all(|d| d["event"]["kind"] != "pipeline_error"),
        "no dead letter"
    );
    let datasets: HashSet<&str> = got
        .iter()
        .filter_map(|d| d["data_stream"]["dataset"].as_str())
        .collect();
    assert_eq!(datasets, HashSet::from(["imperva_cloud_waf.event"]), "{got:?}");
    // The encrypted file's lines, the LEEF and the W3C ones mapped with their fields.
    assert!(got.iter().any(|d| d["log"]["file"]["path"] == "5678_1.log"));
    assert!(
        got.iter().any(|d| d["url"]["original"] == "a.example.com/login"
            && d["http"]["response"]["status_code"] == 403
            && d["log"]["file"]["path"] == "5678_5.log"),
        "W3C columns applied"
    );
    assert!(log.contains("5678_7.log") && log.contains("gap"), "{log}");
    for (name, want) in [
        ("5678_1.log", 1),
        ("5678_2.log", 1),
        ("5678_6.log", 3),
        ("5678_10.log", 1),
    ] {
        assert_eq!(s.gets(name), want, "{name} downloads");
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pull.json")).expect("state")).expect("json");
    assert_eq!(state["accounts"][&s.url]["upto"], "5678_10.log", "{state}");
    assert_eq!(state["accounts"][&s.url]["gaps"][0], "5678_7.log", "{state}");

    // Restart with a new file listed: only it is downloaded.
    s.add(
        "5678_11.log",
        container(cloud(11, 3).as_bytes(), Comp::Gzip, None, None),
    );
    let r = run(&s.url, "s3cret", dir.path(), &[]);
    let got = wait_docs(dir.path(), total + 3);
    let (code, log) = stop(r);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(got.len(), total + 3, "{log}");
    for name in ["5678_1.log", "5678_2.log", "5678_3.log", "5678_10.log", "5678_11.log"] {
        assert_eq!(s.gets(name), 1, "{name} downloaded again after the restart");
    }
    s.rt.shutdown_background();
}

#[test]
fn wrong_credentials_stop_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server("2398", "right");
    s.add("5678_1.log", container(cloud(1, 2).as_bytes(), Comp::None, None, None));
    let r = run(&s.url, "wrong", dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut r = r;
    let code = loop {
        if let Some(st) = r.child.try_wait().expect("wait") {
            break st.code();
        }
        assert!(Instant::now() < deadline, "still running after a 401");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log: Vec<String> = support::rest(&r.stderr);
    let log = log.join("\n");
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("401") && log.contains("--pull-api-key"), "{log}");
    assert!(docs(dir.path()).is_empty());
    s.rt.shutdown_background();
}

#[test]
fn a_file_whose_key_is_missing_stays_not_done_until_the_key_is_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
    let key = rsa_key(6);
    let public = rsa::RsaPublicKey::from(&key);
    let s = server("2398", "k");
    s.add(
        "5678_1.log",
        container(cloud(1, 3).as_bytes(), Comp::Zlib, Some((&public, 16)), None),
    );
    s.add("5678_2.log", container(cloud(2, 2).as_bytes(), Comp::None, None, None));
    let r = run(&s.url, "k", dir.path(), &[]);
    assert!(
        wait_metric(&r.metrics, "wafstream_pull_key_errors_total", 2.0) >= 2.0,
        "asked again"
    );
    // The other file is not held up; the encrypted one is neither done nor dead-lettered.
    let got = wait_docs(dir.path(), 2);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| d["log"]["file"]["path"] == "5678_2.log"), "{got:?}");
    assert_eq!(metric(&r.metrics, "wafstream_pull_files_done_total"), 1.0);
    write_key(&dir.path().join("keys"), support::KEY_ID, &key);
    let got = wait_docs(dir.path(), 5);
    let (code, log) = stop(r);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(got.len(), 5, "{log}");
    assert!(log.contains("cannot decrypt"), "{log}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pull.json")).expect("state")).expect("json");
    assert_eq!(state["accounts"][&s.url]["upto"], "5678_2.log", "{state}");
    s.rt.shutdown_background();
}

#[test]
fn requests_go_through_the_configured_proxy() {
    // The repository server stands in for the proxy: a request for another host that reaches it
    // can only have come through `--pull-proxy`.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server("2398", "k");
    s.add("5678_1.log", container(cloud(1, 2).as_bytes(), Comp::None, None, None));
    let proxy = s.url.split("/api/").next().expect("origin").to_string();
    let r = run(
        "http://logs.invalid:9/api/logs/2398_5678",
        "k",
        dir.path(),
        &["--pull-proxy", &proxy],
    );
    let got = wait_docs(dir.path(), 2);
    let (code, log) = stop(r);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(got.len(), 2, "{log}");
    let r = s.repo.lock().unwrap();
    assert!(
        r.gets.keys().any(|p| p.starts_with("http://logs.invalid:9/")),
        "absolute-form requests, as to a proxy: {:?}",
        r.gets.keys()
    );
}
