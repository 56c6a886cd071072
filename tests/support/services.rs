//! Real services for the integration tests, started once per test binary on free 127.0.0.1
//! ports: Apache Kafka 4.4.0 (single-node KRaft, `tests/services/kafka.sh`) and OpenSearch
//! 2.19.1 (`tests/services/opensearch.sh`). `tests/suite.sh` installs them and exports
//! `WAFSTREAM_KAFKA_LIB` / `WAFSTREAM_OPENSEARCH_HOME`; without those a test prints `SKIPPED` and
//! returns, unless `WAFSTREAM_REQUIRE_SERVICES=1` (or `CI=true`), which makes it fail.
//!
//! Each service's data dir is under `$TMPDIR/wafstream-services/<kind>-<pid>-<n>`. The service
//! scripts watch this process: when it exits (Rust never drops statics) they stop the service
//! and remove its data dir; dirs still left by binaries that are gone (killed watchdogs) are
//! removed when the next one starts. Tests share the
//! broker and the node: each test makes its own topics, groups, indices or namespaces
//! ([`unique`]). [`kafka`] hands out a shared hold on the broker; a test that stops it takes
//! [`kafka_exclusive`], so no other test of the binary runs against a broker that is down.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Whether a missing service fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("WAFSTREAM_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The install path in `var`, or `None` after printing SKIPPED (a panic when services are
/// required).
fn installed(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            if required() {
                panic!("{var} not set and WAFSTREAM_REQUIRE_SERVICES=1: run the tests with tests/suite.sh");
            }
            eprintln!("SKIPPED: {var} not set (tests/suite.sh installs {what} and sets it)");
            None
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A name no other test of any binary uses: `<prefix>-<pid>-<n>` (lower case, `[a-z0-9-]`).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A data-stream namespace of its own (no `-` allowed there).
pub fn unique_namespace() -> String {
    unique("t").replace('-', "x")
}

/// A fresh data dir for a service of this process; removes the dirs of processes that are gone.
fn data_dir(kind: &str) -> PathBuf {
    let base = std::env::temp_dir().join("wafstream-services");
    std::fs::create_dir_all(&base).expect("services dir");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(unique(kind));
    std::fs::create_dir_all(&dir).expect("service data dir");
    dir
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One service process started by a script in `tests/services/`, restartable on its data dir.
struct Service {
    name: &'static str,
    script: &'static str,
    env: (&'static str, PathBuf),
    dir: PathBuf,
    ports: (u16, u16),
    /// The file (in `dir`) whose `ready` line says the service is up, and that line.
    ready_file: &'static str,
    ready: &'static str,
    child: Mutex<Option<Child>>,
}

impl Service {
    fn start(&self) -> Duration {
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        assert!(slot.is_none(), "{} already running", self.name);
        let ready_file = self.dir.join(self.ready_file);
        let _ = std::fs::rename(&ready_file, ready_file.with_extension("log.1"));
        let out = std::fs::File::create(self.dir.join("stdout.log")).expect("stdout.log");
        let err = out.try_clone().expect("stdout.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/services")
            .join(self.script);
        let t0 = Instant::now();
        let mut child = Command::new("bash")
            .arg(script)
            .arg(&self.dir)
            .arg(self.ports.0.to_string())
            .arg(self.ports.1.to_string())
            .arg(std::process::id().to_string())
            .env(self.env.0, &self.env.1)
            // Once this process is gone, the script's watchdog stops the service and removes
            // its data dir.
            .env("WAFSTREAM_SERVICE_CLEANUP", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        let deadline = t0 + Duration::from_secs(120);
        loop {
            if std::fs::read_to_string(&ready_file).is_ok_and(|t| t.contains(self.ready)) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "{} exited at start ({st}):\n{}\n{}",
                    self.name,
                    tail(&self.dir.join("stdout.log"), 30),
                    tail(&ready_file, 30)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} not ready in 120 s:\n{}", self.name, tail(&ready_file, 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *slot = Some(child);
        let took = t0.elapsed();
        eprintln!(
            "{} ready in {:.1} s ({})",
            self.name,
            took.as_secs_f64(),
            self.dir.display()
        );
        took
    }

    fn stop(&self) {
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = slot.take() else { return };
        // SIGTERM (a clean shutdown, which keeps the data), SIGKILL after 30 s.
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The Apache Kafka broker of this test binary.
pub struct Kafka {
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub addr: String,
    svc: Service,
}

static KAFKA: OnceLock<Option<Kafka>> = OnceLock::new();
static KAFKA_USE: RwLock<()> = RwLock::new(());

/// A test's hold on the broker: others may use it at the same time, nobody stops it meanwhile.
pub struct SharedKafka {
    pub kafka: &'static Kafka,
    _hold: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for SharedKafka {
    type Target = Kafka;
    fn deref(&self) -> &Kafka {
        self.kafka
    }
}

/// A test's sole hold on the broker: it may stop and start it.
pub struct ExclusiveKafka {
    pub kafka: &'static Kafka,
    _hold: RwLockWriteGuard<'static, ()>,
}

impl std::ops::Deref for ExclusiveKafka {
    type Target = Kafka;
    fn deref(&self) -> &Kafka {
        self.kafka
    }
}

fn kafka_instance() -> Option<&'static Kafka> {
    let lib = installed("WAFSTREAM_KAFKA_LIB", "Apache Kafka")?;
    KAFKA
        .get_or_init(|| {
            let port = free_port();
            let k = Kafka {
                addr: format!("127.0.0.1:{port}"),
                svc: Service {
                    name: "kafka",
                    script: "kafka.sh",
                    env: ("WAFSTREAM_KAFKA_LIB", lib),
                    dir: data_dir("kafka"),
                    ports: (port, free_port()),
                    ready_file: "server.log",
                    ready: "Kafka Server started",
                    child: Mutex::new(None),
                },
            };
            k.svc.start();
            Some(k)
        })
        .as_ref()
}

/// The broker, shared with the other tests of this binary (started on first use).
pub fn kafka() -> Option<SharedKafka> {
    let kafka = kafka_instance()?;
    let hold = KAFKA_USE.read().unwrap_or_else(|e| e.into_inner());
    Some(SharedKafka { kafka, _hold: hold })
}

/// The broker, for a test that stops and restarts it: waits until no other test uses it.
pub fn kafka_exclusive() -> Option<ExclusiveKafka> {
    let kafka = kafka_instance()?;
    let hold = KAFKA_USE.write().unwrap_or_else(|e| e.into_inner());
    Some(ExclusiveKafka { kafka, _hold: hold })
}

impl Kafka {
    /// SIGTERM the broker and wait for it to exit (its data stays).
    pub fn stop(&self) {
        self.svc.stop();
    }

    /// Start the broker again on the same data dir and ports; returns how long it took.
    pub fn start(&self) -> Duration {
        self.svc.start()
    }

    pub fn data_dir(&self) -> &Path {
        &self.svc.dir
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client")
    }

    /// Create topics (name, partitions), replication 1; they exist when this returns.
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
            .collect();
        let admin = self.admin();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in rt.block_on(admin.create_topics(&new, &opts)).expect("create topics") {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
        // Wait until the broker's metadata has every partition with a leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        for (t, p) in topics {
            loop {
                let ok = admin
                    .inner()
                    .fetch_metadata(Some(t), Duration::from_secs(5))
                    .ok()
                    .and_then(|m| {
                        m.topics()
                            .first()
                            .map(|tm| tm.error().is_none() && tm.partitions().len() == *p as usize)
                    })
                    .unwrap_or(false);
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "topic {t} has no metadata after 30 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Number of partitions of `topic` (retried for 30 s, e.g. right after a restart).
    pub fn partitions(&self, topic: &str) -> i32 {
        let c: BaseConsumer = self.client_config().create().expect("consumer");
        retry(&format!("metadata of {topic}"), || {
            let m = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
            Ok(m.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0))
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Every record of `topic` from the beginning up to its high watermarks as they are now
    /// (no consumer group; order kept within each partition).
    pub fn read_to_end(&self, topic: &str) -> Vec<Record> {
        let c: BaseConsumer = self
            .client_config()
            .set("group.id", unique("read-to-end"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer");
        let n = self.partitions(topic);
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            let (lo, hi) = retry(&format!("watermarks of {topic}/{p}"), || {
                c.fetch_watermarks(topic, p, Duration::from_secs(5))
            });
            if hi > lo {
                tpl.add_partition_offset(topic, p, Offset::Offset(lo)).expect("tpl");
                ends.push((p, hi));
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        c.assign(&tpl).expect("assign");
        let mut next: std::collections::HashMap<i32, i64> = ends.iter().map(|(p, _)| (*p, 0)).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ends.iter().any(|(p, hi)| next[p] < *hi) {
            assert!(Instant::now() < deadline, "{topic} not read to its end in 60 s");
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    next.insert(m.partition(), m.offset() + 1);
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                }
                Some(Err(e)) => eprintln!("read_to_end {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// The group's committed offsets on `topic` (partition → offset; partitions without a
    /// commit are absent). Retries NOT_COORDINATOR and the like right after a restart.
    pub fn committed(&self, group: &str, topic: &str) -> std::collections::HashMap<i32, i64> {
        let c: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions(topic) {
            tpl.add_partition(topic, p);
        }
        let got = retry(&format!("committed offsets of {group}"), || {
            c.committed_offsets(tpl.clone(), Duration::from_secs(5))
        });
        got.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }
}

/// `f` until it succeeds, for up to 30 s: right after a (re)start the broker may answer
/// NOT_COORDINATOR, NOT_LEADER or time out for a moment.
fn retry<T>(what: &str, mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// One record read back by [`Kafka::read_to_end`].
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("record is not JSON ({e}): {}", String::from_utf8_lossy(&self.payload)))
    }
}

/// The OpenSearch node of this test binary.
pub struct OpenSearch {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    addr: String,
    svc: Service,
}

static OPENSEARCH: OnceLock<Option<OpenSearch>> = OnceLock::new();

/// The OpenSearch node, shared with the other tests of this binary (started on first use).
pub fn opensearch() -> Option<&'static OpenSearch> {
    let home = installed("WAFSTREAM_OPENSEARCH_HOME", "OpenSearch")?;
    OPENSEARCH
        .get_or_init(|| {
            let port = free_port();
            let os = OpenSearch {
                url: format!("http://127.0.0.1:{port}"),
                addr: format!("127.0.0.1:{port}"),
                svc: Service {
                    name: "opensearch",
                    script: "opensearch.sh",
                    env: ("WAFSTREAM_OPENSEARCH_HOME", home),
                    dir: data_dir("opensearch"),
                    ports: (port, free_port()),
                    ready_file: "stdout.log",
                    ready: "opensearch ready",
                    child: Mutex::new(None),
                },
            };
            os.svc.start();
            Some(os)
        })
        .as_ref()
}

impl OpenSearch {
    pub fn stop(&self) {
        self.svc.stop();
    }

    pub fn start(&self) -> Duration {
        self.svc.start()
    }

    /// One JSON request (blocking, plain HTTP/1.1); returns the status and the parsed body
    /// (`Null` when empty or not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, "application/json", body.as_bytes())
    }

    /// `_bulk` with an NDJSON body as given.
    pub fn bulk(&self, ndjson: &str) -> (u16, serde_json::Value) {
        self.raw("POST", "/_bulk", "application/x-ndjson", ndjson.as_bytes())
    }

    fn raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(&self.addr).expect("connect opensearch");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("write");
        s.write_all(body).expect("write body");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read");
        let text = String::from_utf8_lossy(&resp);
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }

    /// `wafstream es-setup`'s component and index templates for OpenSearch (`flat_object` where
    /// Elasticsearch has `flattened`), installed once per binary.
    pub fn install_wafstream_templates(&self) {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            use wafstream::sink::es_setup::{
                COMPONENT, Engine, INDEX_TEMPLATES, component_template_for, index_template,
            };
            let component = component_template_for(Engine::OpenSearch);
            let (st, v) = self.request("PUT", &format!("/_component_template/{COMPONENT}"), Some(&component));
            assert_eq!(st, 200, "component template: {v}");
            for (name, pattern) in INDEX_TEMPLATES {
                let (st, v) = self.request(
                    "PUT",
                    &format!("/_index_template/{name}"),
                    Some(&index_template(pattern)),
                );
                assert_eq!(st, 200, "index template {name}: {v}");
            }
        });
    }

    /// Documents in `index` (a data stream or an index) after a refresh; 0 when it is missing.
    pub fn count(&self, index: &str) -> u64 {
        self.request("POST", &format!("/{index}/_refresh"), None);
        let (_, v) = self.request("GET", &format!("/{index}/_count"), None);
        v["count"].as_u64().unwrap_or(0)
    }

    /// The `_source` of every document in `index` (up to 10,000), after a refresh.
    pub fn docs(&self, index: &str) -> Vec<serde_json::Value> {
        self.request("POST", &format!("/{index}/_refresh"), None);
        let q = serde_json::json!({"size": 10000, "query": {"match_all": {}}});
        let (_, v) = self.request("POST", &format!("/{index}/_search"), Some(&q));
        v["hits"]["hits"]
            .as_array()
            .map(|h| h.iter().map(|d| d["_source"].clone()).collect())
            .unwrap_or_default()
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The S3 API server of this test binary: s3s-fs (`tests/services/s3s-fs.sh`), installed by
/// `tests/services/install-s3s-fs.sh`, path in `WAFSTREAM_S3S_FS`. It verifies SigV4 signatures
/// against one access key; buckets are the folders of [`S3::root`], so a test makes its own
/// with [`S3::bucket`] and puts objects through the S3 API with [`S3::put`].
pub struct S3 {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub access_key: &'static str,
    pub secret_key: &'static str,
    svc: Service,
}

static S3_SERVER: OnceLock<Option<S3>> = OnceLock::new();

/// The S3 server, shared with the other tests of this binary (started on first use).
pub fn s3() -> Option<&'static S3> {
    let bin = installed("WAFSTREAM_S3S_FS", "s3s-fs")?;
    S3_SERVER
        .get_or_init(|| {
            let port = free_port();
            let s = S3 {
                endpoint: format!("http://127.0.0.1:{port}"),
                access_key: "wafstream-test",
                secret_key: "wafstream-test-secret",
                svc: Service {
                    name: "s3s-fs",
                    script: "s3s-fs.sh",
                    env: ("WAFSTREAM_S3S_FS", bin),
                    dir: data_dir("s3"),
                    ports: (port, 0),
                    ready_file: "stdout.log",
                    ready: "server is running",
                    child: Mutex::new(None),
                },
            };
            s.svc.start();
            Some(s)
        })
        .as_ref()
}

impl S3 {
    /// The folder whose subfolders are the buckets.
    pub fn root(&self) -> PathBuf {
        self.svc.dir.join("root")
    }

    /// A new empty bucket of its own (`<prefix>-<pid>-<n>`).
    pub fn bucket(&self, prefix: &str) -> String {
        let name = unique(prefix);
        std::fs::create_dir_all(self.root().join(&name)).expect("bucket dir");
        name
    }

    /// A client for `bucket` with the server's credentials.
    pub fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        // reqwest is built without a TLS provider of its own here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(self.access_key)
            .with_secret_access_key(self.secret_key)
            .build()
            .expect("s3 client")
    }

    /// PUT one object through the S3 API.
    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let c = self.client(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(c.put(&object_store::path::Path::from(key), body.into()))
            .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e}"));
    }

    /// DELETE one object through the S3 API.
    pub fn delete(&self, bucket: &str, key: &str) {
        use object_store::ObjectStoreExt;
        let c = self.client(bucket);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(c.delete(&object_store::path::Path::from(key)))
            .unwrap_or_else(|e| panic!("delete {bucket}/{key}: {e}"));
    }

    /// Lines s3s-fs logged so far (its requests with `RUST_LOG=debug`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.svc.dir.join("stdout.log")).unwrap_or_default()
    }
}
