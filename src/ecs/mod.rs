//! From a parsed [`Record`] to an Elastic Common Schema document, per output profile.
//!
//! - [`elastic`]: what Elastic's agent decoder plus its `imperva` / `imperva_cloud_waf` ingest
//!   pipelines produce (the default profile).
//! - [`sekoia`]: what SEKOIA.IO's `imperva-waf` intake format produces.
//!
//! [`Mapper::map`] is the one entry point: frame bytes in, one NDJSON line out (the document,
//! or its dead-letter record), plus the dataset and a deterministic `_id`.

pub mod doc;
pub mod domain;
mod elastic;
pub mod json;
pub mod paths;
pub mod processors;
mod rules;
mod sekoia;
pub mod user_agent;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use base64::Engine;

use crate::p;
use crate::parse::time::Zone;
use crate::parse::{Key, KeyIndex, Record, W3cFields, parse_event_into};
use doc::{Doc, TsStyle, Val};

/// Output profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Elastic,
    Sekoia,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "elastic" => Ok(Profile::Elastic),
            "sekoia" => Ok(Profile::Sekoia),
            other => Err(format!("unknown profile {other:?} (expected elastic or sekoia)")),
        }
    }
}

/// The two datasets, named as Elastic names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    SecureSphere,
    CloudWaf,
    /// JSON events of Imperva producers with no mapping yet (pushed over HEC), kept whole.
    Siem,
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::SecureSphere => "imperva.securesphere",
            Dataset::CloudWaf => "imperva_cloud_waf.event",
            Dataset::Siem => "imperva.siem",
        }
    }

    /// Which dataset a record belongs to, from its header.
    pub fn of(rec: &Record<'_>) -> Option<Dataset> {
        let (vendor, product) = (rec.header.vendor.as_bytes(), rec.header.product.as_bytes());
        if contains_folded(vendor, b"incapsula")
            || contains_folded(product, b"attack analytics")
            || contains_folded(product, b"siemintegration")
        {
            return Some(Dataset::CloudWaf);
        }
        if contains_folded(vendor, b"imperva") {
            return Some(Dataset::SecureSphere);
        }
        None
    }
}

/// Whether `hay` contains the lower-case ASCII `needle`, ignoring ASCII case.
fn contains_folded(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Mapping options (validated once; shared by every frame).
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    /// Zone for device times that carry none (`rt`).
    pub zone: Zone,
    /// The zone as configured, written to `event.timezone` (Elastic's `tz_offset`).
    pub tz_name: Option<String>,
    pub preserve_original_event: bool,
    pub preserve_duplicate_custom_fields: bool,
    /// Extra tags appended to every document.
    pub tags: Vec<String>,
    /// Data stream namespace (`logs-<dataset>-<namespace>`).
    pub namespace: String,
    /// Write the syslog envelope's facts to `log.syslog.*`.
    pub syslog_fields: bool,
    /// Write `_id` as the document's first key (NDJSON for humans and scripts).
    pub emit_id: bool,
    /// Processors applied to each document before it is written.
    pub processors: Option<std::sync::Arc<processors::ProcessorSet>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            profile: Profile::Elastic,
            zone: Zone::Utc,
            tz_name: None,
            preserve_original_event: false,
            preserve_duplicate_custom_fields: false,
            tags: Vec::new(),
            namespace: "default".into(),
            syslog_fields: false,
            emit_id: false,
            processors: None,
        }
    }
}

/// What the frame's transport knows (the raw-topic headers).
#[derive(Debug, Clone, Default)]
pub struct FrameMeta<'a> {
    /// Receive time, epoch ms.
    pub received_ms: i64,
    /// `tcp`, `udp`, `tls`, `file`, `pull`, `s3`, `stdin`.
    pub input: &'a str,
    /// File path, object key or pull file name.
    pub source: Option<&'a str>,
    /// Sender address (`ip:port`).
    pub peer: Option<&'a str>,
    /// Line number (files) or offset, when the input has one.
    pub offset: Option<u64>,
    /// Time zone configured where the frame was received (raw-topic header); overrides the
    /// mapper's own for this frame.
    pub tz: Option<&'a str>,
    /// Where the occurrence came from when there is no file position (see
    /// [`crate::bus::RawFrame::occurrence`]).
    pub occurrence: Option<u64>,
    /// The sender's name for the kind of event (HEC `sourcetype`).
    pub sourcetype: Option<&'a str>,
    /// The event's time as its sender stated it (HEC `time`), epoch ms.
    pub time_ms: Option<i64>,
}

/// Result of mapping one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// `None` for a dead-letter record.
    pub dataset: Option<Dataset>,
    /// Deterministic document id (32 hex digits).
    pub id: DocId,
    /// Why the frame went to the dead-letter output.
    pub error: Option<String>,
    /// A processor dropped the document: nothing was written, the frame is done.
    pub dropped: bool,
}

impl Mapped {
    pub fn is_dead(&self) -> bool {
        self.dataset.is_none()
    }
}

/// Counters a mapper keeps (read by telemetry and the CLI summary).
#[derive(Debug, Default)]
pub struct Counters {
    pub events: Cell<u64>,
    pub dead: Cell<u64>,
    pub invalid_utf8: Cell<u64>,
    pub field_errors: Cell<u64>,
}

/// Process-wide counters of every mapper, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub securesphere: AtomicU64,
    pub cloud_waf: AtomicU64,
    pub siem: AtomicU64,
    /// `imperva.siem` documents by the sender's `sourcetype` (`""` when it gave none).
    pub siem_sourcetypes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub dead_letters: AtomicU64,
    pub invalid_utf8: AtomicU64,
    pub field_errors: AtomicU64,
}

impl Stats {
    pub fn document(&self, d: Dataset) {
        match d {
            Dataset::SecureSphere => &self.securesphere,
            Dataset::CloudWaf => &self.cloud_waf,
            Dataset::Siem => &self.siem,
        }
        .fetch_add(1, Relaxed);
    }
}

impl crate::telemetry::Source for Stats {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        out.counter_vec(
            "wafstream_documents_total",
            "Events mapped to ECS documents, by dataset.",
            "dataset",
            &[
                (Dataset::SecureSphere.name(), self.securesphere.load(Relaxed)),
                (Dataset::CloudWaf.name(), self.cloud_waf.load(Relaxed)),
                (Dataset::Siem.name(), self.siem.load(Relaxed)),
            ],
        );
        let by_type: Vec<(Vec<String>, u64)> = self
            .siem_sourcetypes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (vec![k.clone()], *v))
            .collect();
        if !by_type.is_empty() {
            out.counter_labels(
                "wafstream_siem_documents_total",
                "JSON events with no mapping yet, kept whole in imperva.siem documents, by the sender's sourcetype.",
                &["sourcetype"],
                &by_type,
            );
        }
        out.counters(&[
            (
                "wafstream_dead_letters_total",
                "Frames that could not be mapped (sent to the dead-letter output with their bytes and reason).",
                &self.dead_letters,
            ),
            (
                "wafstream_invalid_utf8_total",
                "Frames that were not valid UTF-8 (mapped after lossy conversion).",
                &self.invalid_utf8,
            ),
            (
                "wafstream_field_errors_total",
                "Documents with at least one field that did not convert (kept in error.message).",
                &self.field_errors,
            ),
        ]);
    }
}

/// The process's mapping counters (registered with the metrics endpoint on first use).
pub fn stats() -> &'static Stats {
    static STATS: std::sync::OnceLock<std::sync::Arc<Stats>> = std::sync::OnceLock::new();
    STATS.get_or_init(|| {
        let s = std::sync::Arc::new(Stats::default());
        crate::telemetry::global().register("mapping", s.clone());
        s
    })
}

/// Maps frames to documents. One per worker thread (it caches user agents).
pub struct Mapper {
    opts: Options,
    ua: RefCell<user_agent::Cache>,
    scratch: RefCell<Scratch>,
    /// The fixed bytes of the documents' recent field sets.
    shapes: RefCell<doc::Shapes>,
    /// The last per-frame zone seen, parsed (frames of one sender carry the same one).
    frame_zone: RefCell<Option<(String, Zone)>>,
    pub counters: Counters,
}

/// Per-event vectors kept between events so the hot path does not allocate them each time.
#[derive(Default)]
struct Scratch {
    fields: Vec<crate::parse::Field<'static>>,
    storage: doc::Storage<'static>,
}

impl Mapper {
    pub fn new(opts: Options) -> Self {
        stats();
        let flavor = match opts.profile {
            Profile::Elastic => user_agent::Flavor::Elastic,
            Profile::Sekoia => user_agent::Flavor::Python,
        };
        Mapper {
            opts,
            ua: RefCell::new(user_agent::Cache::new(flavor)),
            scratch: RefCell::new(Scratch {
                fields: Vec::with_capacity(64),
                storage: doc::Storage {
                    vals: Vec::with_capacity(128),
                    lists: Vec::new(),
                },
            }),
            shapes: RefCell::new(doc::Shapes::default()),
            frame_zone: RefCell::new(None),
            counters: Counters::default(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Parse a per-frame zone, remembering the last one. `None` if it does not parse.
    fn zone_for(&self, tz: &str) -> Option<Zone> {
        let mut cached = self.frame_zone.try_borrow_mut().ok()?;
        if let Some((name, z)) = cached.as_ref() {
            if name == tz {
                return Some(z.clone());
            }
        }
        let z = Zone::parse(tz)?;
        *cached = Some((tz.to_string(), z.clone()));
        Some(z)
    }

    /// Map one frame, appending one JSON document (no newline) to `out`: the ECS document, or
    /// the dead-letter record when the frame cannot be parsed. Never panics on input.
    pub fn map(&self, frame: &[u8], meta: &FrameMeta<'_>, w3c: Option<&W3cFields>, out: &mut Vec<u8>) -> Mapped {
        self.counters.events.set(self.counters.events.get() + 1);
        let text = match std::str::from_utf8(frame) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => {
                self.counters.invalid_utf8.set(self.counters.invalid_utf8.get() + 1);
                stats().invalid_utf8.fetch_add(1, Relaxed);
                String::from_utf8_lossy(frame)
            }
        };
        let (fields, storage) = match self.scratch.try_borrow_mut() {
            Ok(mut s) => (std::mem::take(&mut s.fields), std::mem::take(&mut s.storage)),
            Err(_) => (Vec::new(), doc::Storage::default()),
        };
        if text.trim_start().starts_with('{') {
            if let Ok(mut s) = self.scratch.try_borrow_mut() {
                s.fields = doc::recycle(fields);
                s.storage = storage.recycle();
            }
            return self.map_json(&text, frame, meta, out);
        }
        let rec = match parse_event_into(&text, w3c, doc::recycle(fields)) {
            Ok(r) => r,
            Err(e) => return self.dead_letter(frame, meta, &e.to_string(), out),
        };
        let Some(dataset) = Dataset::of(&rec) else {
            let reason = format!(
                "unsupported source: vendor {:?} product {:?} is neither SecureSphere nor Cloud WAF",
                rec.header.vendor, rec.header.product
            );
            return self.dead_letter(frame, meta, &reason, out);
        };
        let original = text.trim_end_matches(['\r', '\n', '\0']);
        let frame_zone = meta.tz.and_then(|tz| self.zone_for(tz));
        let (zone, tz_name) = match (&frame_zone, meta.tz) {
            (Some(z), Some(name)) => (z.clone(), Some(name)),
            _ => (self.opts.zone.clone(), self.opts.tz_name.as_deref()),
        };
        // Parsed user agents this document borrows from (one per document in practice).
        let ua_keep: UaKeep = Default::default();
        let mut ctx = Ctx::new(&rec, original, meta, &self.opts, (&self.ua, &ua_keep), zone, tz_name);
        let mut d = Doc::from_storage(storage.recycle());
        rules::run_all(rules::plan(self.opts.profile, dataset), &mut ctx, &mut d);
        if !ctx.errors.is_empty() {
            self.counters.field_errors.set(self.counters.field_errors.get() + 1);
            stats().field_errors.fetch_add(1, Relaxed);
        }
        // Not valid UTF-8: mapped from a lossy copy, so the exact bytes are kept beside it.
        if matches!(text, Cow::Owned(_)) {
            d.put(
                p!("wafstream.original_base64"),
                Val::Str(base64::engine::general_purpose::STANDARD.encode(frame).into()),
            );
        }
        let id = document_id(dataset, &ctx, frame, meta);
        if self.opts.emit_id {
            d.string(p!("_id"), Cow::Borrowed(id.as_str()));
        }
        let dropped = match &self.opts.processors {
            Some(p) => p.apply(&mut d, meta.input) == processors::Verdict::Drop,
            None => false,
        };
        let storage = if dropped {
            d.discard()
        } else {
            stats().document(dataset);
            match self.shapes.try_borrow_mut() {
                Ok(mut shapes) => d.write_shaped(out, &mut shapes),
                Err(_) => d.write(out),
            }
        };
        drop(ctx);
        if let Ok(mut s) = self.scratch.try_borrow_mut() {
            s.storage = storage.recycle();
            s.fields = doc::recycle(rec.fields);
        }
        Mapped {
            dataset: Some(dataset),
            id,
            error: None,
            dropped,
        }
    }

    /// A JSON object event (a producer with no mapping yet, pushed over HEC): an
    /// `imperva.siem` document with the object's members under `imperva.siem.*` as they came,
    /// the sender's `sourcetype` as `event.provider` and its `time` (else the receive time) as
    /// `@timestamp`. Text that starts like an object but is not one is a dead letter.
    fn map_json(&self, text: &str, frame: &[u8], meta: &FrameMeta<'_>, out: &mut Vec<u8>) -> Mapped {
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text.trim()) {
            Ok(o) => o,
            Err(e) => return self.dead_letter(frame, meta, &format!("invalid JSON object: {e}"), out),
        };
        let dataset = Dataset::Siem;
        let o = &self.opts;
        let mut d = Doc::with_capacity(24);
        d.put(
            p!("@timestamp"),
            Val::Ts(meta.time_ms.unwrap_or(meta.received_ms), TsStyle::Millis),
        );
        d.str(p!("ecs.version"), "8.17.0");
        d.str(p!("data_stream.type"), "logs");
        d.str(p!("data_stream.dataset"), dataset.name());
        d.str(p!("data_stream.namespace"), o.namespace.as_str());
        d.str(p!("event.dataset"), dataset.name());
        d.str(p!("event.module"), "imperva");
        d.str(p!("event.kind"), "event");
        if let Some(st) = meta.sourcetype {
            d.str(p!("event.provider"), st);
        }
        if !meta.input.is_empty() {
            d.str(p!("input.type"), meta.input);
        }
        if let Some(p) = meta.peer {
            d.str(p!("log.source.address"), p);
        }
        if let Some(s) = meta.source {
            d.str(p!("log.file.path"), s);
        }
        if let Some(off) = meta.offset {
            d.put(p!("log.offset"), Val::UInt(off));
        }
        if o.preserve_original_event {
            d.str(p!("event.original"), text.trim_end_matches(['\r', '\n', '\0']));
        }
        if !o.tags.is_empty() {
            d.strs(p!("tags"), o.tags.iter().map(|t| Cow::Borrowed(t.as_str())).collect());
        }
        for (k, v) in &obj {
            // A member name is one key of `imperva.siem`, whatever it contains.
            let key = if k.is_empty() || k.contains('.') {
                Cow::Owned(if k.is_empty() {
                    "_".to_string()
                } else {
                    k.replace('.', "_")
                })
            } else {
                Cow::Borrowed(k.as_str())
            };
            let val = match v {
                serde_json::Value::String(s) => Val::Str(Cow::Borrowed(s.as_str())),
                other => Val::Json(Cow::Owned(other.to_string())),
            };
            d.put_dynamic("imperva.siem", &key, val);
        }
        let id = hex128(xxhash_rust::xxh3::xxh3_128(frame) ^ source_hash(meta) ^ 2);
        if o.emit_id {
            d.string(p!("_id"), Cow::Borrowed(id.as_str()));
        }
        let dropped = match &o.processors {
            Some(p) => p.apply(&mut d, meta.input) == processors::Verdict::Drop,
            None => false,
        };
        if dropped {
            d.discard();
        } else {
            let s = stats();
            s.document(dataset);
            // Senders choose the sourcetype: past MAX_SOURCETYPES distinct ones, new ones count as
            // `_other`.
            let mut by_type = s.siem_sourcetypes.lock().unwrap_or_else(|p| p.into_inner());
            let st = crate::ingress::hec::label_text(meta.sourcetype.unwrap_or(""));
            let key = if by_type.contains_key(st) || by_type.len() < crate::ingress::hec::MAX_SOURCETYPES {
                st
            } else {
                "_other"
            };
            *by_type.entry(key.to_string()).or_insert(0) += 1;
            d.write(out);
        }
        Mapped {
            dataset: Some(dataset),
            id,
            error: None,
            dropped,
        }
    }

    /// Write the dead-letter record for a frame: original text (and base64 when it is not valid
    /// UTF-8), the reason, `event.kind: pipeline_error`, and the input metadata.
    pub fn dead_letter(&self, frame: &[u8], meta: &FrameMeta<'_>, reason: &str, out: &mut Vec<u8>) -> Mapped {
        self.counters.dead.set(self.counters.dead.get() + 1);
        stats().dead_letters.fetch_add(1, Relaxed);
        let text = String::from_utf8_lossy(frame);
        let mut d = Doc::with_capacity(16);
        d.put(p!("@timestamp"), Val::Ts(meta.received_ms, TsStyle::Millis));
        d.str(p!("event.kind"), "pipeline_error");
        d.put(p!("event.original"), Val::Str(text.clone()));
        if matches!(text, Cow::Owned(_)) {
            d.put(
                p!("wafstream.original_base64"),
                Val::Str(base64::engine::general_purpose::STANDARD.encode(frame).into()),
            );
        }
        d.str(p!("error.message"), reason.to_string());
        d.str(p!("error.type"), "parse");
        d.str(p!("input.type"), meta.input.to_string());
        if let Some(p) = meta.peer {
            d.str(p!("log.source.address"), p.to_string());
        }
        if let Some(s) = meta.source {
            d.str(p!("log.file.path"), s.to_string());
        }
        if let Some(o) = meta.offset {
            d.put(p!("log.offset"), Val::UInt(o));
        }
        let mut tags: Vec<Cow<'_, str>> = vec!["wafstream_dead_letter".into()];
        tags.extend(self.opts.tags.iter().map(|t| Cow::Owned(t.clone())));
        d.strs(p!("tags"), tags);
        let id = hex128(xxhash_rust::xxh3::xxh3_128(frame) ^ source_hash(meta));
        if self.opts.emit_id {
            d.string(p!("_id"), Cow::Borrowed(id.as_str()));
        }
        d.write(out);
        Mapped {
            dataset: None,
            id,
            error: Some(reason.to_string()),
            dropped: false,
        }
    }
}

/// A document id: 32 lower-case hex digits, kept inline (no allocation per event).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocId([u8; 32]);

impl DocId {
    pub fn as_str(&self) -> &str {
        // The bytes are always ASCII hex digits (see `hex128`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for DocId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for DocId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

fn hex128(v: u128) -> DocId {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = [0u8; 32];
    for (i, c) in s.iter_mut().enumerate() {
        *c = H[((v >> ((31 - i) * 4)) & 15) as usize];
    }
    DocId(s)
}

/// Where the frame came from: its file (or pulled file) and offset, else its occurrence key,
/// else nothing (then the id is the content's alone).
fn source_hash(meta: &FrameMeta<'_>) -> u128 {
    match (meta.source, meta.offset, meta.occurrence) {
        // The hash of `<source>\0<offset>`, streamed (the same digest, no string built).
        (Some(s), Some(o), _) => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(s.as_bytes());
            h.update(b"\0");
            h.update(itoa::Buffer::new().format(o).as_bytes());
            h.digest128()
        }
        (_, _, Some(k)) => xxhash_rust::xxh3::xxh3_128(&k.to_le_bytes()),
        _ => 0,
    }
}

/// Deterministic `_id` of an occurrence: Cloud WAF events by `fileId` + `start` + `end` (what
/// Elastic's pipeline fingerprints), anything else by its bytes; both mixed with where the
/// frame came from (file and offset, raw-topic partition and offset, or receive order), so a
/// redelivery is the same document and two identical events are two.
fn document_id(dataset: Dataset, ctx: &Ctx<'_, '_>, frame: &[u8], meta: &FrameMeta<'_>) -> DocId {
    if dataset == Dataset::CloudWaf {
        if let (Some(f), Some(s)) = (ctx.raw_peek(Key::FileId), ctx.raw_peek(Key::Start)) {
            let e = ctx.raw_peek(Key::End).unwrap_or("");
            // The hash of `<dataset>\0<fileId>\0<start>\0<end>`, streamed.
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            for (i, part) in [dataset.name(), f, s, e].into_iter().enumerate() {
                if i > 0 {
                    h.update(b"\0");
                }
                h.update(part.as_bytes());
            }
            return hex128(h.digest128() ^ source_hash(meta));
        }
    }
    hex128(xxhash_rust::xxh3::xxh3_128(frame) ^ source_hash(meta) ^ u128::from(dataset == Dataset::CloudWaf))
}

/// What a mapper works with: the record, its key index, which fields it consumed, errors.
pub(crate) struct Ctx<'r, 'a> {
    pub rec: &'r Record<'a>,
    pub idx: KeyIndex,
    pub original: &'r str,
    pub meta: &'r FrameMeta<'r>,
    pub opts: &'r Options,
    /// Zone for zone-less device times: the frame's, else the mapper's.
    pub zone: Zone,
    /// The zone's name for `event.timezone`.
    pub tz_name: Option<&'r str>,
    ua: &'r RefCell<user_agent::Cache>,
    ua_keep: &'r UaKeep,
    used: Used,
    pub errors: Vec<String>,
    /// `related.ip` / `related.hosts` gathered by several steps of a profile's tables.
    pub related_ip: Vec<Cow<'r, str>>,
    pub related_hosts: Vec<Cow<'r, str>>,
}

impl<'r, 'a> Ctx<'r, 'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rec: &'r Record<'a>,
        original: &'r str,
        meta: &'r FrameMeta<'r>,
        opts: &'r Options,
        (ua, ua_keep): (&'r RefCell<user_agent::Cache>, &'r UaKeep),
        zone: Zone,
        tz_name: Option<&'r str>,
    ) -> Self {
        Ctx {
            idx: rec.index(),
            used: Used::default(),
            rec,
            original,
            meta,
            opts,
            zone,
            tz_name,
            ua,
            ua_keep,
            errors: Vec::new(),
            related_ip: Vec::new(),
            related_hosts: Vec::new(),
        }
    }

    #[inline(always)]
    fn pos(&mut self, k: Key) -> Option<usize> {
        let p = self.idx.pos(k)?;
        self.used.set(p);
        Some(p)
    }

    /// Raw (still escaped) value of `k`, marking it consumed.
    #[inline(always)]
    pub fn raw(&mut self, k: Key) -> Option<&'r str> {
        let p = self.pos(k)?;
        Some(&self.rec.fields[p].raw)
    }

    /// Raw value without marking it consumed.
    #[inline(always)]
    pub fn raw_peek(&self, k: Key) -> Option<&'r str> {
        self.idx.pos(k).map(|p| &*self.rec.fields[p].raw)
    }

    /// Exact-case key of `k`'s field (SEKOIA reads some keys case-sensitively).
    pub fn key_of(&self, k: Key) -> Option<&'r str> {
        self.idx.pos(k).map(|p| self.rec.fields[p].key)
    }

    /// Unescaped value of `k`, marking it consumed.
    #[inline(always)]
    pub fn val(&mut self, k: Key) -> Option<Cow<'r, str>> {
        let p = self.pos(k)?;
        let f = &self.rec.fields[p];
        Some(match f.escape {
            crate::parse::Escape::None => Cow::Borrowed(&*f.raw),
            crate::parse::Escape::Cef => Cow::Owned(crate::parse::record::unescape_cef_value(&f.raw).into_owned()),
        })
    }

    /// Unescaped, non-empty value.
    #[inline(always)]
    pub fn val_ne(&mut self, k: Key) -> Option<Cow<'r, str>> {
        self.val(k).filter(|v| !v.is_empty())
    }

    /// Fields no mapper rule consumed, in order. An earlier duplicate of a consumed key with
    /// the same value is the same fact and not reported.
    pub fn unused(&self) -> impl Iterator<Item = &'r crate::parse::Field<'a>> + '_ {
        let rec = self.rec;
        self.used
            .unset_below(rec.fields.len())
            .map(move |i| (i, &rec.fields[i]))
            .filter(
                move |(_, f)| match Key::lookup(rec.format, f.key).and_then(|k| self.idx.pos(k)) {
                    Some(p) => !(self.used.get(p) && rec.fields[p].raw == f.raw),
                    None => true,
                },
            )
            .map(|(_, f)| f)
    }

    /// The parsed user agent, borrowed for the document's lifetime (its strings go into the
    /// document without copies or reference counting). A document can hold as many as
    /// [`UaKeep`] has room for; past that (no mapper asks twice) the answer is `None`.
    pub fn user_agent(&self, ua: &str) -> Option<&'r user_agent::UserAgent> {
        let parsed = self.ua.borrow_mut().get(ua)?;
        let keep: &'r UaKeep = self.ua_keep;
        for cell in keep {
            if let Some(kept) = cell.get() {
                if std::sync::Arc::ptr_eq(kept, &parsed) {
                    return Some(kept);
                }
                continue;
            }
            return Some(cell.get_or_init(|| parsed));
        }
        debug_assert!(false, "more user agents in one document than UaKeep holds");
        None
    }

    pub fn error(&mut self, msg: String) {
        self.errors.push(msg);
    }
}

/// Room for the user agents one document borrows from.
type UaKeep = [std::cell::OnceCell<std::sync::Arc<user_agent::UserAgent>>; 2];

/// Which fields a mapper consumed (one bit per field; parsers cap fields at `MAX_FIELDS`).
#[derive(Default)]
struct Used([u64; crate::parse::cef::MAX_FIELDS / 64]);

impl Used {
    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Positions below `n` whose bit is clear, in order, visiting only those.
    fn unset_below(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        let n = n.min(self.0.len() * 64);
        self.0
            .iter()
            .enumerate()
            .take(n.div_ceil(64))
            .flat_map(move |(wi, &w)| {
                let valid = if (wi + 1) * 64 <= n {
                    u64::MAX
                } else {
                    (1u64 << (n % 64)) - 1
                };
                let mut free = !w & valid;
                std::iter::from_fn(move || {
                    if free == 0 {
                        return None;
                    }
                    let b = free.trailing_zeros() as usize;
                    free &= free - 1;
                    Some(wi * 64 + b)
                })
            })
    }
}

/// Parse an IP, accepting brackets around IPv6 and a `%zone` suffix.
/// `str::trim`, answering at once for text that starts and ends with a visible ASCII byte
/// (nearly every value), which `str::trim` would walk character by character to find.
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [f, .., l] if f.is_ascii_graphic() && l.is_ascii_graphic() => s,
        [c] if c.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(s.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    let s = s.trim();
    let s = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(s);
    let s = s.split('%').next().unwrap_or(s);
    s.parse().ok()
}

/// A plain dotted quad as Rust's parser reads it (four decimal octets up to 255, no leading
/// zeros), in one pass; anything else is `None` and goes to the full parser.
#[inline]
pub(crate) fn dotted_quad(s: &[u8]) -> Option<std::net::Ipv4Addr> {
    if !(7..=15).contains(&s.len()) {
        return None;
    }
    let mut oct = [0u8; 4];
    let mut n = 0;
    let mut val: u32 = 0;
    let mut digits = 0;
    for &c in s {
        if c == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            oct[n] = val as u8;
            n += 1;
            val = 0;
            digits = 0;
        } else if c.is_ascii_digit() {
            if digits == 1 && val == 0 {
                return None;
            }
            val = val * 10 + u32::from(c - b'0');
            digits += 1;
            if val > 255 {
                return None;
            }
        } else {
            return None;
        }
    }
    if n != 3 || digits == 0 {
        return None;
    }
    oct[3] = val as u8;
    Some(std::net::Ipv4Addr::from(oct))
}

/// Unknown keys land under `<dataset>.extensions.<key>`, with dots made safe, so nothing is lost.
pub(crate) fn extension_key(key: &str) -> Cow<'_, str> {
    if key.is_empty() {
        Cow::Borrowed("_unparsed")
    } else if key.contains('.') {
        Cow::Owned(key.replace('.', "_"))
    } else {
        Cow::Borrowed(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_hash_is_the_hash_of_source_nul_offset() {
        // The streamed hash must stay the digest ids were made with (ids are stable across
        // versions: a redelivery after an upgrade is the same document).
        for (src, off) in [("a.log", 0u64), ("/var/log/x", 42), ("", u64::MAX), ("é\0", 7)] {
            let meta = FrameMeta {
                source: Some(src),
                offset: Some(off),
                ..FrameMeta::default()
            };
            let want = xxhash_rust::xxh3::xxh3_128(format!("{src}\u{0}{off}").as_bytes());
            assert_eq!(source_hash(&meta), want, "{src:?} {off}");
        }
    }

    #[test]
    fn hex_ids_are_32_lower_hex_digits() {
        for v in [
            0u128,
            1,
            0xdead_beef,
            u128::MAX,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ] {
            assert_eq!(hex128(v).as_str(), format!("{v:032x}"));
        }
    }

    #[test]
    fn streamed_cloud_waf_id_hash_equals_the_joined_key() {
        let parts = ["imperva_cloud_waf.event", "3412341160002518171", "1700000000000", ""];
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                h.update(b"\0");
            }
            h.update(part.as_bytes());
        }
        assert_eq!(h.digest128(), xxhash_rust::xxh3::xxh3_128(parts.join("\0").as_bytes()));
    }

    #[test]
    fn unset_bits_are_visited_in_order() {
        let mut u = Used::default();
        for i in [0, 3, 63, 64, 70, 200] {
            u.set(i);
        }
        for n in [0, 1, 4, 63, 64, 65, 71, 130, 201, 5000] {
            let want: Vec<usize> = (0..n.min(1024)).filter(|&i| !u.get(i)).collect();
            assert_eq!(u.unset_below(n).collect::<Vec<_>>(), want, "n {n}");
        }
    }

    #[test]
    fn trim_agrees_with_std() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{a0}x\u{a0}",
            "x\u{2003}",
            "\t1\n",
            "é",
            " é ",
            "1.5",
            "a b",
            "\u{85}",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn dotted_quad_agrees_with_std() {
        for s in [
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "10.1.228.200",
            "1.2.3.04",
            "1.2.3.4 ",
            "a.b.c.d",
            "1000.1.1.1",
        ] {
            let std: Option<std::net::Ipv4Addr> = s.parse().ok();
            assert_eq!(dotted_quad(s.as_bytes()), std, "{s:?}");
        }
    }

    #[test]
    fn extension_keys_are_made_safe() {
        assert_eq!(extension_key(""), "_unparsed");
        assert_eq!(extension_key("a.b"), "a_b");
        assert!(matches!(extension_key("plain"), Cow::Borrowed("plain")));
    }
}
