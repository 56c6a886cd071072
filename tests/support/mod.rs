//! Builders for test inputs: Imperva containers (plain, compressed, encrypted with a key made
//! here), CEF lines. Shared by the integration tests.
#![allow(dead_code)]

pub mod imperva_api;
pub mod inputs;
pub mod otlp;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};

pub mod services;

pub const KEY_ID: &str = "7";

/// A 2048-bit key from a fixed seed, so runs are reproducible.
pub fn rsa_key(seed: u64) -> RsaPrivateKey {
    let mut rng = StdRng::seed_from_u64(seed);
    RsaPrivateKey::new(&mut rng, 2048).expect("rsa keygen")
}

/// Write `key` as `<dir>/<id>/Private.key` (PKCS#1 PEM, as Imperva's tooling writes it).
pub fn write_key(dir: &Path, id: &str, key: &RsaPrivateKey) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).expect("mkdir");
    let pem = key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).expect("pem");
    std::fs::write(d.join("Private.key"), pem.as_bytes()).expect("write key");
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn md5_hex(data: &[u8]) -> String {
    wafstream::container::md5_hex(data)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Zlib,
    Gzip,
}

/// Build a container file around `plaintext` (the event lines).
pub fn container(
    plaintext: &[u8],
    comp: Comp,
    encrypt_with: Option<(&RsaPublicKey, usize)>,
    checksum: Option<&str>,
) -> Vec<u8> {
    let compressed = match comp {
        Comp::None => plaintext.to_vec(),
        Comp::Zlib => zlib(plaintext),
        Comp::Gzip => gzip(plaintext),
    };
    let mut header = String::from("accountId:123456\nconfigId:12345\n");
    let sum = checksum.map(str::to_string).unwrap_or_else(|| md5_hex(plaintext));
    header.push_str(&format!(
        "checksum:{sum}\nformat:CEF\nstartTime:1705705619206\nendTime:1705705805378\n"
    ));
    let body = match encrypt_with {
        None => compressed,
        Some((public, key_len)) => {
            let mut rng = StdRng::seed_from_u64(99);
            let aes_key: Vec<u8> = (0..key_len)
                .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
                .collect();
            let wrapped = public
                .encrypt(&mut rng, Pkcs1v15Encrypt, STANDARD.encode(&aes_key).as_bytes())
                .expect("rsa encrypt");
            header.push_str(&format!("publicKeyId:{KEY_ID}\nkey:{}\n", STANDARD.encode(wrapped)));
            let iv = [0u8; 16];
            match key_len {
                16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&aes_key, &iv)
                    .expect("aes")
                    .encrypt_padded_vec_mut::<Pkcs7>(&compressed),
                24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(&aes_key, &iv)
                    .expect("aes")
                    .encrypt_padded_vec_mut::<Pkcs7>(&compressed),
                32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(&aes_key, &iv)
                    .expect("aes")
                    .encrypt_padded_vec_mut::<Pkcs7>(&compressed),
                n => panic!("aes key length {n}"),
            }
        }
    };
    let mut file = header.into_bytes();
    file.extend_from_slice(b"|==|\n");
    file.extend_from_slice(&body);
    file
}

/// Cloud WAF CEF lines written for these tests (not copied from any peer).
pub fn cloud_lines(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| fileId={} sourceServiceName=shop.example.net siteid=42 suid=7 \
requestClientApplication=Mozilla/5.0 (X11; Linux x86_64; rv:99.0) Gecko/20100101 Firefox/99.0 deviceFacility=fra \
cs2=true cs2Label=Javascript Support ccode=DE cicode=Frankfurt cs7=50.11 cs7Label=latitude cs8=8.68 cs8Label=longitude \
start={} request=shop.example.net/cart/{i}.html requestMethod=GET cn1=200 app=HTTPS act=REQ_PASSED \
deviceExternalId={} cpt={} src=203.0.113.{} ver=TLSv1.3 TLS_AES_128_GCM_SHA256 end={}\n",
            1000 + i,
            1_700_000_000_000u64 + i as u64,
            5000 + i,
            40000 + i,
            i % 250 + 1,
            1_700_000_000_100u64 + i as u64,
        ));
    }
    s
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub fn pki(dir: &std::path::Path) -> bool {
    let sh = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=wafstream-test-ca")
        && sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1")
        && sh("printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext")
        && sh(
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext",
        )
        && sh("openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=securesphere-gw")
        && sh("printf 'extendedKeyUsage=clientAuth\\n' > client.ext")
        && sh(
            "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext",
        )
}

/// Send `input` through `openssl s_client` to `addr`, with extra s_client arguments.
pub fn s_client(dir: &std::path::Path, addr: &str, extra: &[&str], input: &str) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-CAfile",
            "ca.pem",
            "-quiet",
            "-no_ign_eof",
        ])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let _ = child.wait();
}

/// Spawn `cmd` with stderr piped into a channel of lines (stdin and stdout closed).
pub fn spawn_with_stderr(mut cmd: Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    // A test that fails leaves its wafstream process behind otherwise: the process gets
    // SIGKILL when the thread that started it (the test's) ends.
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Every stderr line of a process that has exited: what [`spawn_with_stderr`]'s reader thread
/// has not forwarded yet is waited for until the pipe closes (at most 10 s), so the last lines
/// (the exit report) are not missed.
pub fn rest(rx: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut out = Vec::new();
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        out.push(l);
    }
    out
}

/// A real server speaking the Elasticsearch API (noida-db, installed by
/// `tests/services/install-noida.sh`, path in `WAFSTREAM_NOIDA`), on a free 127.0.0.1 port.
pub struct Noida {
    child: std::process::Child,
    pub url: String,
    bin: std::ffi::OsString,
    dir: tempfile::TempDir,
}

impl Drop for Noida {
    fn drop(&mut self) {
        // `noida-db start` is a launcher; the server it starts outlives a killed launcher, so
        // stop the server first.
        let _ = std::process::Command::new(&self.bin)
            .arg("down")
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn noida() -> Option<Noida> {
    let Some(bin) = std::env::var_os("WAFSTREAM_NOIDA") else {
        if services::required() {
            panic!("WAFSTREAM_NOIDA not set: run the suite with tests/suite.sh");
        }
        eprintln!("SKIPPED: WAFSTREAM_NOIDA not set (tests/suite.sh installs noida-db and sets it)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = std::process::Command::new(&bin)
        .args([
            "start",
            "--only",
            "elasticsearch",
            "--host",
            "127.0.0.1",
            "--elasticsearch-port",
            &port.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start noida-db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "noida-db did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(Noida {
        child,
        url: format!("http://127.0.0.1:{port}"),
        bin,
        dir,
    })
}

/// Documents in `index` after a refresh.
pub async fn count(client: &reqwest::Client, url: &str, index: &str) -> u64 {
    let _ = client.post(format!("{url}/{index}/_refresh")).send().await;
    let body = client
        .get(format!("{url}/{index}/_count"))
        .send()
        .await
        .expect("count")
        .bytes()
        .await
        .expect("count body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("count json");
    v["count"].as_u64().unwrap_or(0)
}

// An in-test server answering `_bulk` in Elasticsearch 8's response shape, for fault injection.
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Per-document answer: (status, error type) given the id and how often it was seen.
pub type ItemPolicy = Arc<dyn Fn(&str, usize) -> (u16, &'static str) + Send + Sync>;
/// Whole-request answer given the request number: `Some(status)` to fail it.
pub type RequestPolicy = Arc<dyn Fn(usize) -> Option<u16> + Send + Sync>;

#[derive(Default)]
pub struct Seen {
    /// id → (index, times seen)
    pub docs: Mutex<HashMap<String, (String, usize)>>,
    pub requests: AtomicUsize,
    pub gzip: AtomicUsize,
}

pub async fn serve(listener: TcpListener, seen: Arc<Seen>, items: ItemPolicy, whole: RequestPolicy) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(answer(sock, seen.clone(), items.clone(), whole.clone()));
    }
}

/// As [`start`], over TLS with `acceptor` (which may require client certificates); the URL is
/// `https://127.0.0.1:<port>`.
pub async fn start_tls(
    items: ItemPolicy,
    whole: RequestPolicy,
    acceptor: tokio_rustls::TlsAcceptor,
) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen, items, whole) = (acceptor.clone(), s.clone(), items.clone(), whole.clone());
            tokio::spawn(async move {
                // A failed handshake (e.g. no client certificate) just closes the connection.
                if let Ok(tls) = acceptor.accept(sock).await {
                    answer(tls, seen, items, whole).await;
                }
            });
        }
    });
    (url, seen)
}

/// Answer `_bulk` requests on one connection until it closes.
async fn answer<S>(mut sock: S, seen: Arc<Seen>, items: ItemPolicy, whole: RequestPolicy)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    {
        {
            let mut buf = Vec::new();
            loop {
                // Headers.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = [0u8; 8192];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                let gz = head.contains("content-encoding: gzip");
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 65536];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let raw: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                let body = if gz {
                    seen.gzip.fetch_add(1, Ordering::Relaxed);
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&raw[..])
                        .read_to_end(&mut out)
                        .expect("gzip body");
                    out
                } else {
                    raw
                };
                // `GET /` (the sink's reachability probe) gets the cluster's greeting and is not
                // a `_bulk` request: not counted, no policy.
                if head.starts_with("get ") {
                    let json = r#"{"name":"fault-server","version":{"number":"8.15.0"}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                let n = seen.requests.fetch_add(1, Ordering::Relaxed);
                let (status, json) = match whole(n) {
                    Some(s) => (s, r#"{"error":"busy"}"#.to_string()),
                    None => {
                        let text = String::from_utf8(body).expect("utf8 body");
                        let lines: Vec<&str> = text.lines().collect();
                        let mut out = Vec::new();
                        let mut errors = false;
                        for pair in lines.chunks(2) {
                            let action: serde_json::Value = serde_json::from_str(pair[0]).expect("action");
                            let _doc: serde_json::Value = serde_json::from_str(pair[1]).expect("document");
                            let index = action["create"]["_index"].as_str().expect("create._index").to_string();
                            let id = action["create"]["_id"].as_str().expect("create._id").to_string();
                            let times = {
                                let mut d = seen.docs.lock().expect("lock");
                                let e = d.entry(id.clone()).or_insert((index.clone(), 0));
                                e.1 += 1;
                                e.1
                            };
                            let (status, kind) = items(&id, times);
                            let mut item = serde_json::json!({"_index": index, "_id": id, "status": status});
                            if status >= 300 {
                                errors = true;
                                item["error"] = serde_json::json!({"type": kind, "reason": format!("{kind} for {id}")});
                            }
                            out.push(serde_json::json!({ "create": item }));
                        }
                        (
                            200,
                            serde_json::json!({"took": 1, "errors": errors, "items": out}).to_string(),
                        )
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                    json.len()
                );
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub async fn start(items: ItemPolicy, whole: RequestPolicy) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    tokio::spawn(serve(listener, seen.clone(), items, whole));
    (url, seen)
}

/// The addresses a wafstream process announces in its log (`... listening on <kind> <addr>`),
/// kind → address, once every kind in `want` has been seen (at most 20 s).
pub fn listening(rx: &std::sync::mpsc::Receiver<String>, want: &[&str]) -> HashMap<String, String> {
    let mut at = HashMap::new();
    let mut other = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while want.iter().any(|k| !at.contains_key(*k)) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| {
                panic!("no `listening on` line for every one of {want:?}; got {at:?}; stderr: {other:?}")
            });
        other.push(line.clone());
        if let Some((kind, addr)) = line.split_once("listening on ").and_then(|(_, r)| r.split_once(' ')) {
            // The address ends where the message does (human or JSON log line).
            let end = addr
                .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
                .unwrap_or(addr.len());
            let addr = &addr[..end];
            at.insert(kind.to_string(), addr.to_string());
        }
    }
    at
}

/// One HTTP/1.1 request over a plain socket; returns (status line, body).
pub fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// One HTTP/1.1 request on its own connection (`Connection: close`): the status and the body
/// as JSON (or as a JSON string when it is not JSON). A body the server refuses from its
/// headers alone may not be sent whole: write errors are ignored, the answer is read.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_string())),
    )
}

/// A HEC `POST` with `Authorization: Splunk <token>`.
pub fn hec_post(addr: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    http_request(
        addr,
        "POST",
        path,
        &[("Authorization", &format!("Splunk {token}"))],
        body.as_bytes(),
    )
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Wait (up to 20 s) for `series` on the `/metrics` endpoint at `addr` to reach `want`;
/// returns the last scrape.
pub fn scrape_until(addr: &str, series: &str, want: f64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, body) = http(addr, "GET", "/metrics");
        if sample(&body, series) == Some(want) || std::time::Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The tool (a path) a test needs, from the variable `tests/suite.sh` sets; `None` after
/// printing SKIPPED when it is not set, a panic when services are required
/// ([`services::required`]).
pub fn tool(var: &str, installer: &str) -> Option<std::path::PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(std::path::PathBuf::from(p)),
        _ => {
            assert!(
                !services::required(),
                "{var} is not set: run the tests with tests/suite.sh ({installer})"
            );
            eprintln!("SKIPPED: {var} is not set (tests/suite.sh runs {installer})");
            None
        }
    }
}

/// `../shared/conformance` (or `WAFSTREAM_CONFORMANCE_DIR`); `None` (the test says SKIPPED)
/// when it is missing, a panic when CI or `WAFSTREAM_REQUIRE_CONFORMANCE=1` requires it.
pub fn corpus_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("WAFSTREAM_CONFORMANCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    if dir.join("cases.jsonl").is_file() {
        return Some(dir);
    }
    let required = std::env::var("WAFSTREAM_REQUIRE_CONFORMANCE").as_deref() == Ok("1")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if required {
        panic!("conformance corpus required but not found at {}", dir.display());
    }
    eprintln!(
        "SKIPPED: conformance corpus not found at {} (set WAFSTREAM_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}
