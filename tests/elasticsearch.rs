//! The Elasticsearch sink against a real engine, OpenSearch 2.19 (one node for this test binary,
//! `tests/support/services.rs`): data streams from es-setup's templates, `_bulk` `create` with
//! the deterministic `_id` (201, then 409 on redelivery), mapping refusals. And against an
//! in-test server that answers in Elasticsearch 8's `_bulk` response shape, for what a real
//! cluster rarely does on demand: per-item 429s, whole-request 503s and a server that is down
//! for a while; and against noida-db (an Elasticsearch 8 imitation) for es-setup's requests,
//! whose `flattened` type only Elasticsearch has.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use wafstream::ecs::Dataset;
use wafstream::sink::elasticsearch::{self, Config, ElasticsearchSink};
use wafstream::sink::{Delivery, Output, Sink};

mod support;

use support::{Seen, serve, start, start_tls};

fn config(url: &str) -> Config {
    Config {
        hosts: vec![url.to_string()],
        max_batch_docs: 50,
        flush_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..Config::default()
    }
}

async fn send_all(sink: &ElasticsearchSink, n: usize) -> Vec<Result<Delivery, String>> {
    let mut acks = Vec::new();
    for i in 0..n {
        let id = format!("doc-{i}");
        let body = format!("{{\"message\":\"event {i}\"}}");
        let ds = if i % 2 == 0 {
            Some(Dataset::SecureSphere)
        } else {
            Some(Dataset::CloudWaf)
        };
        acks.push(
            sink.send(Output {
                dataset: ds,
                id: &id,
                body: body.as_bytes(),
                error: None,
            })
            .await
            .expect("send"),
        );
    }
    let mut out = Vec::new();
    for a in acks {
        out.push(
            tokio::time::timeout(Duration::from_secs(30), a)
                .await
                .expect("ack in time")
                .map_err(|e| e.to_string()),
        );
    }
    out
}

#[tokio::test]
async fn every_document_written_once_into_its_data_stream() {
    let (url, seen) = start(Arc::new(|_, _| (201, "")), Arc::new(|_| None)).await;
    let sink = ElasticsearchSink::start(config(&url), elasticsearch::client(None).expect("client"));
    let acks = send_all(&sink, 200).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)));
    let docs = seen.docs.lock().unwrap();
    assert_eq!(docs.len(), 200);
    assert!(docs.values().all(|(_, n)| *n == 1));
    assert_eq!(docs["doc-0"].0, "logs-imperva.securesphere-default");
    assert_eq!(docs["doc-1"].0, "logs-imperva_cloud_waf.event-default");
    assert!(seen.requests.load(Ordering::Relaxed) >= 4, "batches of at most 50");
    assert_eq!(
        seen.gzip.load(Ordering::Relaxed),
        seen.requests.load(Ordering::Relaxed),
        "bodies are gzip"
    );
}

#[tokio::test]
async fn conflict_means_already_written_and_refusals_come_back_with_the_reason() {
    let (url, _seen) = start(
        Arc::new(|id, _| match id {
            "doc-3" => (409, "version_conflict_engine_exception"),
            "doc-4" => (400, "mapper_parsing_exception"),
            _ => (201, ""),
        }),
        Arc::new(|_| None),
    )
    .await;
    let sink = ElasticsearchSink::start(config(&url), elasticsearch::client(None).expect("client"));
    let acks = send_all(&sink, 10).await;
    assert_eq!(acks[3], Ok(Delivery::Accepted));
    match &acks[4] {
        Ok(Delivery::Rejected { reason, body }) => {
            assert!(reason.contains("mapper_parsing_exception"), "{reason}");
            assert_eq!(body, br#"{"message":"event 4"}"#);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(acks.iter().filter(|a| **a == Ok(Delivery::Accepted)).count(), 9);
    let st = sink.stats();
    assert_eq!(st.already_written.load(Ordering::Relaxed), 1);
    assert_eq!(st.rejected.load(Ordering::Relaxed), 1);
    assert_eq!(st.written.load(Ordering::Relaxed), 8);
    assert!(st.report().contains("1 refused"), "{}", st.report());
}

#[tokio::test]
async fn only_the_items_that_got_429_or_5xx_are_sent_again() {
    let (url, seen) = start(
        Arc::new(|id, times| match (id, times) {
            ("doc-2", 1) | ("doc-2", 2) => (429, "es_rejected_execution_exception"),
            ("doc-7", 1) => (503, "unavailable_shards_exception"),
            _ => (201, ""),
        }),
        Arc::new(|_| None),
    )
    .await;
    let sink = ElasticsearchSink::start(config(&url), elasticsearch::client(None).expect("client"));
    let acks = send_all(&sink, 20).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    let docs = seen.docs.lock().unwrap();
    assert_eq!(docs["doc-2"].1, 3);
    assert_eq!(docs["doc-7"].1, 2);
    assert_eq!(docs.values().filter(|(_, n)| *n == 1).count(), 18);
    let st = sink.stats();
    assert_eq!(st.retried.load(Ordering::Relaxed), 3);
    assert_eq!(st.written.load(Ordering::Relaxed), 20);
    assert_eq!(st.inflight_bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn whole_request_storms_and_a_server_that_comes_late_lose_nothing() {
    // Three 503/429 answers to whole requests, then normal service.
    let (url, seen) = start(
        Arc::new(|_, _| (201, "")),
        Arc::new(|n| {
            if n < 3 {
                Some(if n % 2 == 0 { 503 } else { 429 })
            } else {
                None
            }
        }),
    )
    .await;
    let sink = ElasticsearchSink::start(config(&url), elasticsearch::client(None).expect("client"));
    let acks = send_all(&sink, 30).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    assert_eq!(seen.docs.lock().unwrap().len(), 30);
    assert!(sink.stats().retried_requests.load(Ordering::Relaxed) >= 3);

    // Nothing listening yet: requests fail to connect, then the server starts on that port.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let sink = ElasticsearchSink::start(
        config(&format!("http://{addr}")),
        elasticsearch::client(None).expect("client"),
    );
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = TcpListener::bind(addr).await.expect("rebind");
        let seen = Arc::new(Seen::default());
        tokio::spawn(serve(
            listener,
            seen.clone(),
            Arc::new(|_, _| (201, "")),
            Arc::new(|_| None),
        ));
        seen
    });
    let acks = send_all(&sink, 10).await;
    let seen = late.await.expect("late server");
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    assert_eq!(seen.docs.lock().unwrap().len(), 10);
}

/// `n` documents as the mappers write them (an `@timestamp`, which data streams require).
async fn send_timestamped(sink: &ElasticsearchSink, n: usize) -> Vec<Result<Delivery, String>> {
    let mut acks = Vec::new();
    for i in 0..n {
        let id = format!("doc-{i}");
        let body = format!(
            r#"{{"@timestamp":"2024-01-01T00:00:{:02}.000Z","message":"event {i}","source":{{"ip":"203.0.113.{}"}}}}"#,
            i % 60,
            i % 250 + 1
        );
        let ds = if i % 2 == 0 {
            Some(Dataset::SecureSphere)
        } else {
            Some(Dataset::CloudWaf)
        };
        acks.push(
            sink.send(Output {
                dataset: ds,
                id: &id,
                body: body.as_bytes(),
                error: None,
            })
            .await
            .expect("send"),
        );
    }
    let mut out = Vec::new();
    for a in acks {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), a)
                .await
                .expect("ack in time")
                .map_err(|e| e.to_string()),
        );
    }
    out
}

#[tokio::test]
async fn opensearch_data_streams_count_idempotence_and_refusals() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    os.install_wafstream_templates();
    let ns = support::services::unique_namespace();
    let client = elasticsearch::client(None).expect("client");
    let cfg = Config {
        flush_interval: Duration::from_millis(20),
        max_batch_docs: 100,
        namespace: ns.clone(),
        ..config(&os.url)
    };
    let sink = ElasticsearchSink::start(cfg.clone(), client.clone());
    let n = 300;
    let acks = send_timestamped(&sink, n).await;
    assert!(
        acks.iter().all(|a| *a == Ok(Delivery::Accepted)),
        "{:?}",
        acks.iter().find(|a| **a != Ok(Delivery::Accepted))
    );
    let ss = format!("logs-imperva.securesphere-{ns}");
    let cw = format!("logs-imperva_cloud_waf.event-{ns}");
    let counted = |os: &support::services::OpenSearch| os.count(&ss) + os.count(&cw);
    assert_eq!(counted(os), n as u64);
    assert_eq!(sink.stats().written.load(Ordering::Relaxed), n as u64);
    // Data streams, made by the index templates, with their ECS types.
    let (_, ds) = os.request("GET", &format!("/_data_stream/{ss}"), None);
    assert_eq!(
        ds["data_streams"][0]["template"], "wafstream-logs-imperva.securesphere",
        "{ds}"
    );
    let (_, m) = os.request("GET", &format!("/{ss}/_mapping/field/source.ip"), None);
    assert!(m.to_string().contains(r#""type":"ip""#), "{m}");
    // The same documents again (a redelivery): 409 per item, counted as already written.
    let acks = send_timestamped(&sink, n).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    assert_eq!(counted(os), n as u64);
    assert_eq!(sink.stats().already_written.load(Ordering::Relaxed), n as u64);
    // Documents the data stream cannot take come back refused with the engine's reason; the
    // others in the same request are written.
    let mut acks = Vec::new();
    for (id, body) in [
        ("x-1", r#"{"@timestamp":"2024-01-02T00:00:00Z","message":"fine"}"#),
        // `message` is match_only_text: an object does not fit.
        (
            "x-2",
            r#"{"@timestamp":"2024-01-02T00:00:00Z","message":{"nested":true}}"#,
        ),
        // An ip field that is not an address.
        (
            "x-3",
            r#"{"@timestamp":"2024-01-02T00:00:00Z","source":{"ip":"not an address"}}"#,
        ),
        // Data streams need @timestamp.
        ("x-4", r#"{"message":"no timestamp"}"#),
        ("x-5", r#"{"@timestamp":"2024-01-02T00:00:00Z","message":"fine too"}"#),
    ] {
        let out = Output {
            dataset: Some(Dataset::SecureSphere),
            id,
            body: body.as_bytes(),
            error: None,
        };
        acks.push(sink.send(out).await.expect("send"));
    }
    let mut results = Vec::new();
    for a in acks {
        results.push(a.await.map_err(|e| e.to_string()));
    }
    assert_eq!(results[0], Ok(Delivery::Accepted));
    assert_eq!(results[4], Ok(Delivery::Accepted));
    for (i, want) in [
        (1, "mapper_parsing_exception"),
        (2, "mapper_parsing_exception"),
        (3, "HTTP 400"),
    ] {
        match &results[i] {
            Ok(Delivery::Rejected { reason, .. }) => {
                assert!(reason.contains("HTTP 400") && reason.contains(want), "{reason}")
            }
            other => panic!("x-{}: {other:?}", i + 1),
        }
    }
    assert_eq!(os.count(&ss), (n / 2 + 2) as u64);
    assert_eq!(sink.stats().rejected.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn es_setup_on_opensearch_installs_templates_and_can_run_again() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wafstream"))
            .args(["es-setup", "--es-url", &os.url])
            .output()
            .expect("es-setup");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (_, it) = os.request("GET", "/_index_template/wafstream-logs-imperva.securesphere", None);
    assert_eq!(
        it["index_templates"][0]["index_template"]["composed_of"][0],
        "wafstream-ecs-mappings"
    );
    // OpenSearch fills in the data stream's timestamp field.
    assert_eq!(
        it["index_templates"][0]["index_template"]["data_stream"]["timestamp_field"]["name"],
        "@timestamp"
    );
    let (_, ct) = os.request("GET", "/_component_template/wafstream-ecs-mappings", None);
    assert!(ct.to_string().contains(r#""type":"flat_object""#), "{ct}");
}

/// es-setup's requests as Elasticsearch 8 takes them (noida-db keeps what it is given; the
/// `flattened` type is Elasticsearch's; OpenSearch gets `flat_object`, see the test above).
#[tokio::test]
async fn es_setup_installs_templates_in_elasticsearch_8_and_can_run_again() {
    let Some(es) = support::noida() else { return };
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wafstream"))
            .args(["es-setup", "--es-url", &es.url])
            .output()
            .expect("es-setup");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("index template wafstream-logs-imperva_cloud_waf.event"));
    }
    let client = elasticsearch::client(None).expect("client");
    let get = |path: String| {
        let client = client.clone();
        async move {
            let b = client.get(path).send().await.expect("get").bytes().await.expect("body");
            serde_json::from_slice::<serde_json::Value>(&b).expect("json")
        }
    };
    let it = get(format!(
        "{}/_index_template/wafstream-logs-imperva.securesphere",
        es.url
    ))
    .await;
    let t = &it["index_templates"][0]["index_template"];
    assert_eq!(t["index_patterns"][0], "logs-imperva.securesphere-*");
    assert_eq!(t["composed_of"][0], "wafstream-ecs-mappings");
    let ct = get(format!("{}/_component_template/wafstream-ecs-mappings", es.url)).await;
    let props = &ct["component_templates"][0]["component_template"]["template"]["mappings"]["properties"];
    assert_eq!(props["source"]["properties"]["ip"]["type"], "ip", "{ct}");
}

#[tokio::test]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(support::pki(dir.path()), "openssl could not make the test PKI");
    let p = |f: &str| dir.path().join(f);
    // The server requires client certificates signed by the test CA.
    let acceptor =
        wafstream::ingress::tls::acceptor(&p("server.pem"), &p("server.key"), Some(&p("ca.pem"))).expect("acceptor");
    let (url, seen) = start_tls(Arc::new(|_, _| (201, "")), Arc::new(|_| None), acceptor).await;
    let client =
        elasticsearch::client_with(Some(&p("ca.pem")), Some((&p("client.pem"), &p("client.key")))).expect("client");
    let sink = ElasticsearchSink::start(config(&url), client);
    let acks = send_all(&sink, 120).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    assert_eq!(seen.docs.lock().unwrap().len(), 120);

    // Without the client certificate the handshake is refused: nothing is written.
    let anonymous = elasticsearch::client_with(Some(&p("ca.pem")), None).expect("client");
    let r = anonymous.post(format!("{url}/_bulk")).body("{}\n").send().await;
    assert!(r.is_err(), "{r:?}");
    // Without the private CA the server is not trusted.
    let untrusted = elasticsearch::client_with(None, Some((&p("client.pem"), &p("client.key")))).expect("client");
    assert!(
        untrusted
            .post(format!("{url}/_bulk"))
            .body("{}\n")
            .send()
            .await
            .is_err()
    );
    assert_eq!(seen.docs.lock().unwrap().len(), 120);
}

/// Elastic's Imperva integration installed (as Fleet or Kibana install it: an index template of
/// priority 200 with a default ingest pipeline that expects a raw line): `es-setup` leaves it
/// alone and says so, and wafstream's documents go into its data streams without running that
/// pipeline.
#[tokio::test]
async fn an_installed_integration_keeps_its_templates_and_its_pipeline_is_not_run_again() {
    let Some(os) = support::services::opensearch() else {
        return;
    };
    let ns = format!("fleettest{}", support::services::unique_namespace());
    let (st, v) = os.request(
        "PUT",
        "/_ingest/pipeline/fake-imperva-integration",
        Some(&serde_json::json!({"processors": [{"set": {"field": "integration_pipeline_ran", "value": true}}]})),
    );
    assert_eq!(st, 200, "{v}");
    let fleet = serde_json::json!({
        "index_patterns": [format!("logs-imperva.securesphere-{ns}*")],
        "data_stream": {},
        "priority": 200,
        "template": {"settings": {"index.default_pipeline": "fake-imperva-integration"}},
        "_meta": {"managed_by": "fleet", "package": {"name": "imperva"}}
    });
    let fleet_name = format!("logs-imperva.securesphere-{ns}");
    let (st, v) = os.request("PUT", &format!("/_index_template/{fleet_name}"), Some(&fleet));
    assert_eq!(st, 200, "{v}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["es-setup", "--es-url", &os.url])
        .output()
        .expect("es-setup");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "found index template {fleet_name} (managed by fleet, priority 200): left alone"
        )),
        "{said}"
    );
    let (_, t) = os.request("GET", &format!("/_index_template/{fleet_name}"), None);
    assert_eq!(
        t["index_templates"][0]["index_template"]["_meta"]["managed_by"], "fleet",
        "{t}"
    );
    // Documents into the integration's data stream: stored, its pipeline not run.
    let client = elasticsearch::client(None).expect("client");
    let cfg = Config {
        flush_interval: Duration::from_millis(20),
        namespace: ns.clone(),
        ..config(&os.url)
    };
    let sink = ElasticsearchSink::start(cfg, client);
    let acks = send_timestamped(&sink, 20).await;
    assert!(acks.iter().all(|a| *a == Ok(Delivery::Accepted)), "{acks:?}");
    let ds = format!("logs-imperva.securesphere-{ns}");
    let (_, d) = os.request("GET", &format!("/_data_stream/{ds}"), None);
    assert_eq!(d["data_streams"][0]["template"], fleet_name.as_str(), "{d}");
    let docs = os.docs(&ds);
    assert_eq!(docs.len(), 10);
    assert!(
        docs.iter().all(|d| d.get("integration_pipeline_ran").is_none()),
        "{docs:?}"
    );
}
