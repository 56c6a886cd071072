//! Kafka: the raw-topic contract, the ingress-side producer and the parser worker.
//!
//! Raw topic record = the frame's bytes exactly as received; headers carry what parsing needs
//! and cannot be recovered later (`wafstream.received_ms`, `.peer`, `.input`, `.source`, `.offset`,
//! `.truncated_from`, `.tz`, `.w3c_fields`, and for HEC events `.sourcetype` and `.time_ms`);
//! records have no key, so the producer spreads them over every partition however few
//! connections carry them. Nothing downstream needs their order: each record is mapped alone
//! (a W3C line carries its columns in a header, a file line its file and line number), and the
//! ingress settles its own progress (file checkpoints) in arrival order from the broker's
//! acknowledgements, whatever partition each record went to.

pub mod output;
pub mod producer;
pub mod worker;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};

use crate::bus::RawFrame;

pub const H_RECEIVED: &str = "wafstream.received_ms";
pub const H_PEER: &str = "wafstream.peer";
pub const H_INPUT: &str = "wafstream.input";
pub const H_TRUNCATED: &str = "wafstream.truncated_from";
pub const H_SOURCE: &str = "wafstream.source";
pub const H_OFFSET: &str = "wafstream.offset";
/// The time zone configured for the senders of this ingress (their device clocks).
pub const H_TZ: &str = "wafstream.tz";
/// The W3C columns of the frame's file (`#Fields:` names, space-separated).
pub const H_W3C: &str = "wafstream.w3c_fields";
/// The sender's name for the kind of event (HEC `sourcetype`).
pub const H_SOURCETYPE: &str = "wafstream.sourcetype";
/// The event's time as its sender stated it (HEC `time`), epoch ms.
pub const H_TIME: &str = "wafstream.time_ms";
pub const H_DATASET: &str = "wafstream.dataset";
pub const H_ID: &str = "wafstream.id";
pub const H_ERROR: &str = "wafstream.error";

/// Client settings shared by producers and consumers: brokers plus pass-through properties
/// (`security.protocol`, `sasl.*`, `ssl.*`, ...), as `key=value`.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
}

impl ClientSettings {
    /// Parse `key=value` pass-through properties.
    pub fn new(brokers: &str, props: &[String]) -> anyhow::Result<Self> {
        let mut properties = Vec::new();
        for p in props {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--kafka {p:?}: expected key=value"))?;
            properties.push((k.trim().to_string(), v.trim().to_string()));
        }
        if brokers.trim().is_empty() {
            anyhow::bail!("--brokers is empty");
        }
        Ok(ClientSettings {
            brokers: brokers.to_string(),
            properties,
        })
    }

    /// A client config with the brokers, `defaults` (ours), then the user's properties on top.
    pub fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Headers for a raw frame, with the ingress's configured time zone when it has one.
pub fn raw_headers(f: &RawFrame, tz: Option<&str>) -> OwnedHeaders {
    let received = f.received_ms.to_string();
    let mut h = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: H_RECEIVED,
            value: Some(received.as_bytes()),
        })
        .insert(Header {
            key: H_INPUT,
            value: Some(f.input.as_bytes()),
        });
    if let Some(p) = &f.peer {
        h = h.insert(Header {
            key: H_PEER,
            value: Some(p.as_bytes()),
        });
    }
    if let Some(tz) = f.tz.as_deref().or(tz) {
        h = h.insert(Header {
            key: H_TZ,
            value: Some(tz.as_bytes()),
        });
    }
    if let Some(src) = &f.source {
        h = h.insert(Header {
            key: H_SOURCE,
            value: Some(src.as_bytes()),
        });
    }
    if let Some(o) = f.offset {
        let o = o.to_string();
        h = h.insert(Header {
            key: H_OFFSET,
            value: Some(o.as_bytes()),
        });
    }
    if let Some(cols) = &f.w3c {
        let names = cols.names.join(" ");
        h = h.insert(Header {
            key: H_W3C,
            value: Some(names.as_bytes()),
        });
    }
    if let Some(st) = &f.sourcetype {
        h = h.insert(Header {
            key: H_SOURCETYPE,
            value: Some(st.as_bytes()),
        });
    }
    if let Some(t) = f.time_ms {
        let t = t.to_string();
        h = h.insert(Header {
            key: H_TIME,
            value: Some(t.as_bytes()),
        });
    }
    if let Some(t) = f.truncated_from {
        let t = t.to_string();
        h = h.insert(Header {
            key: H_TRUNCATED,
            value: Some(t.as_bytes()),
        });
    }
    h
}
