//! An OTLP/HTTP receiver for the tests: `POST /v1/metrics` and `/v1/traces` with protobuf
//! bodies, decoded with the OpenTelemetry protocol's own types and kept for the test to read.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use std::io::{Read, Write};

#[derive(Default)]
pub struct Received {
    pub metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    pub traces: Mutex<Vec<ExportTraceServiceRequest>>,
}

/// Start the receiver on a free 127.0.0.1 port (a thread); returns its base URL.
pub fn start() -> (String, Arc<Received>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let got = Arc::new(Received::default());
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                loop {
                    // One request: head, then Content-Length bytes.
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    while !buf.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => buf.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).is_err() {
                        return;
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let ok = match path.as_str() {
                        "/v1/metrics" => ExportMetricsServiceRequest::decode(&body[..])
                            .map(|m| g.metrics.lock().expect("lock").push(m))
                            .is_ok(),
                        "/v1/traces" => ExportTraceServiceRequest::decode(&body[..])
                            .map(|t| g.traces.lock().expect("lock").push(t))
                            .is_ok(),
                        _ => false,
                    };
                    let status = if ok { "200 OK" } else { "400 Bad Request" };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

/// A string attribute's value.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

impl Received {
    /// The last exported value of the counter or gauge `name` whose attributes include
    /// `label=value` (every label when `None`), summed over its points.
    pub fn last_value(&self, name: &str, label: Option<(&str, &str)>) -> Option<i64> {
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
        let m = self.metrics.lock().expect("lock");
        m.iter().rev().find_map(|req| {
            let metric = req
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .find(|x| x.name == name)?;
            let points = match metric.data.as_ref()? {
                Data::Sum(s) => &s.data_points,
                Data::Gauge(g) => &g.data_points,
                _ => return None,
            };
            Some(
                points
                    .iter()
                    .filter(|p| match label {
                        None => true,
                        Some((k, v)) => {
                            matches!(attr(&p.attributes, k), Some(any_value::Value::StringValue(s)) if s == v)
                        }
                    })
                    .map(|p| match p.value {
                        Some(Value::AsInt(i)) => i,
                        Some(Value::AsDouble(d)) => d as i64,
                        None => 0,
                    })
                    .sum(),
            )
        })
    }

    /// Frames covered by the `wafstream.batch` spans of `service` (its `service.name`).
    pub fn frames_traced(&self, service: &str) -> i64 {
        frames_in(&self.spans(), service)
    }

    /// Every span received: (service.name, span).
    pub fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let t = self.traces.lock().expect("lock");
        t.iter()
            .flat_map(|req| &req.resource_spans)
            .flat_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| attr(&r.attributes, "service.name"))
                    .and_then(|v| match v {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter().cloned())
                    .map(move |s| (service.clone(), s))
            })
            .collect()
    }
}

/// Frames covered by the `wafstream.batch` spans of `service` among `spans`.
pub fn frames_in(spans: &[(String, opentelemetry_proto::tonic::trace::v1::Span)], service: &str) -> i64 {
    spans
        .iter()
        .filter(|(svc, s)| svc == service && s.name == "wafstream.batch")
        .filter_map(|(_, s)| match attr(&s.attributes, "wafstream.frames") {
            Some(any_value::Value::IntValue(n)) => Some(*n),
            _ => None,
        })
        .sum()
}
