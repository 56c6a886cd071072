//! Profile `elastic`: Elastic's agent-side CEF decoder and its two ingest pipelines in one pass.
//!
//! - `imperva.securesphere`: ECS 8.17.0 fields, plus `imperva.securesphere.*` keeping the custom
//!   strings by number with their labels; copies of ECS fields only with
//!   `preserve_duplicate_custom_fields`.
//! - `imperva_cloud_waf.event`: ECS 8.11.0 fields, Imperva's port semantics (`spt` is the origin
//!   server's port, `cpt` the client's), user-agent parsing, URL parts, and the rest under
//!   `imperva_cloud_waf.event.extensions.*`.
//!
//! Where Elastic's pipelines would drop a key they do not know, wafstream keeps it under
//! `<dataset>.extensions.<key>` (never lose a fact); the conformance cases have none.

use std::borrow::Cow;

use super::doc::{Doc, TsStyle, Val};
use super::paths::P;
use super::rules::{Conv, Step, rule, text};
use super::{Ctx, extension_key, parse_ip, trim};
use crate::p;
use crate::parse::Key;
use crate::parse::time::{parse_device_time, parse_epoch_ms};

/// Common tail of both datasets: data stream, input facts, tags, original, syslog, errors.
fn finish<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>, dataset: &'static str, kind_on_error: KindOnError) {
    let o = ctx.opts;
    d.str(p!("data_stream.type"), "logs");
    d.str(p!("data_stream.dataset"), dataset);
    d.str(p!("data_stream.namespace"), o.namespace.as_str());
    d.str(p!("event.dataset"), dataset);
    if !ctx.meta.input.is_empty() {
        d.str(p!("input.type"), ctx.meta.input);
    }
    if let Some(p) = ctx.meta.peer {
        d.str(p!("log.source.address"), p);
    }
    if let Some(s) = ctx.meta.source {
        d.str(p!("log.file.path"), s);
    }
    if let Some(off) = ctx.meta.offset {
        d.put(p!("log.offset"), Val::UInt(off));
    }
    if o.preserve_original_event {
        d.string(p!("event.original"), Cow::Borrowed(ctx.original));
    }
    if o.syslog_fields {
        if let Some(s) = &ctx.rec.syslog {
            if let Some(p) = s.priority {
                d.int(p!("log.syslog.priority"), i64::from(p));
                d.int(p!("log.syslog.facility.code"), i64::from(p >> 3));
                d.int(p!("log.syslog.severity.code"), i64::from(p & 7));
            }
            if let Some(h) = s.hostname {
                d.str(p!("log.syslog.hostname"), h);
            }
            if let Some(a) = s.app_name {
                d.str(p!("log.syslog.appname"), a);
            }
            if let Some(p) = s.proc_id {
                d.str(p!("log.syslog.procid"), p);
            }
            if let Some(m) = s.msg_id {
                d.str(p!("log.syslog.msgid"), m);
            }
            if let Some(v) = s.version {
                d.str(p!("log.syslog.version"), v.to_string());
            }
        }
    }
    let mut tags: Vec<Cow<'r, str>> = Vec::new();
    if o.preserve_original_event {
        tags.push("preserve_original_event".into());
    }
    if o.preserve_duplicate_custom_fields {
        tags.push("preserve_duplicate_custom_fields".into());
    }
    tags.extend(o.tags.iter().map(|t| Cow::Borrowed(t.as_str())));
    if !ctx.errors.is_empty() {
        match kind_on_error {
            KindOnError::Set => d.str(p!("event.kind"), "pipeline_error"),
            KindOnError::Append => {
                let prev = match d.get(p!("event.kind")) {
                    Some(Val::Str(s)) => Some(s.clone()),
                    _ => None,
                };
                let mut kinds: Vec<Cow<'r, str>> = prev.into_iter().collect();
                kinds.push("pipeline_error".into());
                d.strs(p!("event.kind"), kinds);
                if !tags.iter().any(|t| t == "preserve_original_event") {
                    tags.push("preserve_original_event".into());
                    d.string(p!("event.original"), Cow::Borrowed(ctx.original));
                }
            }
        }
        let errs: Vec<Cow<'r, str>> = ctx.errors.iter().map(|e| Cow::Owned(e.clone())).collect();
        if errs.len() == 1 {
            d.put(
                p!("error.message"),
                Val::Str(errs.into_iter().next().unwrap_or_default()),
            );
        } else {
            d.strs(p!("error.message"), errs);
        }
    }
    if !tags.is_empty() {
        d.strs(p!("tags"), tags);
    }
}

#[derive(Clone, Copy)]
enum KindOnError {
    /// SecureSphere's pipeline sets `event.kind: pipeline_error`.
    Set,
    /// Cloud WAF's appends it to `event.kind`.
    Append,
}

/// CEF severity → `event.severity` as Elastic's decoder maps it.
fn severity_number(s: &str) -> Option<i64> {
    let t = trim(s);
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    match t.to_ascii_lowercase().as_str() {
        "low" => Some(0),
        "medium" => Some(4),
        "high" => Some(7),
        "very-high" | "very high" => Some(9),
        _ => None,
    }
}

#[inline]
fn push_unique<'r>(list: &mut Vec<Cow<'r, str>>, v: Cow<'r, str>) {
    if !v.is_empty() && !list.contains(&v) {
        list.push(v);
    }
}

#[inline]
fn parse_port(ctx: &mut Ctx<'_, '_>, k: Key, name: &str) -> Option<i64> {
    let v = ctx.val_ne(k)?;
    match trim(&v).parse::<i64>() {
        Ok(n) => Some(n),
        Err(_) => {
            ctx.error(format!("error in field '{name}': value {v:?} is not an integer"));
            None
        }
    }
}

#[inline]
fn parse_ip_field<'r>(ctx: &mut Ctx<'r, '_>, k: Key, name: &str) -> Option<Cow<'r, str>> {
    match ip_text(ctx.val_ne(k)?) {
        Ok(ip) => Some(ip),
        Err(v) => {
            ctx.error(format!("error in field '{name}': value {v:?} is not an IP address"));
            None
        }
    }
}

/// An address as the document writes it: a plain dotted quad as sent, any other address in
/// its canonical form; `Err` with the text when it is no address.
#[inline]
fn ip_text(v: Cow<'_, str>) -> Result<Cow<'_, str>, Cow<'_, str>> {
    // The common case, with nothing to trim or rewrite.
    if super::dotted_quad(v.as_bytes()).is_some() {
        return Ok(v);
    }
    match parse_ip(&v) {
        // Rust's IPv4 parser accepts only the canonical dotted quad: keep the text as is.
        Some(std::net::IpAddr::V4(_)) if v.trim() == v.as_ref() => Ok(v),
        Some(ip) => Ok(Cow::Owned(ip.to_string())),
        None => Err(v),
    }
}

/// Keys no rule consumed, under `<prefix>.<key>`.
fn keep_unused<'r>(ctx: &Ctx<'r, '_>, d: &mut Doc<'r>, prefix: &str) {
    for f in ctx.unused() {
        let v = f.value().into_owned();
        if !v.is_empty() {
            d.put_dynamic(prefix, &extension_key(f.key), Val::Str(Cow::Owned(v)));
        }
    }
}

macro_rules! ss_cs {
    ($($n:literal),*) => {
        (
            [$(p!(concat!("imperva.securesphere.device.custom_string", $n, ".label"))),*],
            [$(p!(concat!("imperva.securesphere.device.custom_string", $n, ".value"))),*],
        )
    };
}
const SS_CS: ([P; 21], [P; 21]) = ss_cs!(
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21
);
const SS_CS_LABEL: [P; 21] = SS_CS.0;
const SS_CS_VALUE: [P; 21] = SS_CS.1;

/// `imperva.securesphere`: the whole mapping, in order.
pub(super) const SECURESPHERE: &[Step] = &[
    Step::Code(ss_header),
    Step::Code(ss_time),
    Step::Code(ss_category),
    text(Key::Act, p!("event.action")).dup(p!("imperva.securesphere.device.action")),
    Step::Code(ss_endpoints),
    rule(Key::Proto, Conv::Lower, p!("network.transport")).dup(p!("imperva.securesphere.transport_protocol")),
    Step::Code(ss_custom_strings),
    Step::Code(ss_rest),
];

/// Header facts: observer, code, message, severity (and their copies).
fn ss_header<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let h = &ctx.rec.header;
    d.str(p!("ecs.version"), "8.17.0");
    d.str(p!("observer.vendor"), h.vendor.clone());
    d.str(p!("observer.product"), h.product.clone());
    d.str(p!("observer.version"), h.device_version.clone());
    d.str(p!("event.code"), h.class_id.clone());
    d.str(p!("message"), h.name.clone());
    if let Some(n) = severity_number(&h.severity) {
        d.int(p!("event.severity"), n);
    }
    d.str(p!("imperva.securesphere.severity"), h.severity.clone());
    d.str(p!("imperva.securesphere.version"), h.version.clone());
    if ctx.opts.preserve_duplicate_custom_fields {
        d.str(p!("imperva.securesphere.name"), h.name.clone());
        d.str(p!("imperva.securesphere.device.event.class_id"), h.class_id.clone());
        d.str(p!("imperva.securesphere.device.product"), h.product.clone());
        d.str(p!("imperva.securesphere.device.vendor"), h.vendor.clone());
        d.str(p!("imperva.securesphere.device.version"), h.device_version.clone());
    }
}

/// `@timestamp` from `rt` (else the envelope's or the receive time), and the zone used.
fn ss_time<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let now = ctx.meta.received_ms;
    let mut ts = None;
    if let Some(rt) = ctx.val_ne(Key::Rt) {
        match parse_device_time(&rt, &ctx.zone, now) {
            Some(ms) => ts = Some(ms),
            None => ctx.error(format!(
                "error in field 'deviceReceiptTime': value {rt:?} is not a known time layout"
            )),
        }
    }
    if let Some(ms) = ts {
        d.ts(p!("@timestamp"), ms, TsStyle::Millis);
        if ctx.opts.preserve_duplicate_custom_fields {
            d.put(
                p!("imperva.securesphere.device.receipt_time"),
                Val::Ts(ms, TsStyle::Millis),
            );
        }
    } else {
        d.ts(p!("@timestamp"), envelope_or_received(ctx), TsStyle::Millis);
    }
    if let Some(tz) = ctx.tz_name {
        d.str(p!("event.timezone"), tz);
    }
}

/// `event.kind` from the category's wording (`…Alert…` or `…Event…`), and the category.
fn ss_category<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(cat) = ctx.val_ne(Key::Cat) {
        let lower = cat.to_ascii_lowercase();
        if lower.contains("alert") {
            d.str(p!("event.kind"), "alert");
        } else if lower.contains("event") {
            d.str(p!("event.kind"), "event");
        }
        d.str(p!("imperva.securesphere.device.event.category"), cat);
    }
}

/// Destination and source: address, port and user, and `related.ip` / `related.user`.
fn ss_endpoints<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let dup = ctx.opts.preserve_duplicate_custom_fields;
    let mut related_ip = d.list();
    let mut related_user = d.list();
    if let Some(ip) = parse_ip_field(ctx, Key::Dst, "destinationAddress") {
        if dup {
            d.str(p!("imperva.securesphere.destination.address"), ip.clone());
        }
        push_unique(&mut related_ip, ip.clone());
        d.str(p!("destination.ip"), ip);
    }
    if let Some(p) = parse_port(ctx, Key::Dpt, "destinationPort") {
        d.int(p!("destination.port"), p);
        if dup {
            d.int(p!("imperva.securesphere.destination.port"), p);
        }
    }
    if let Some(u) = ctx.val_ne(Key::Duser) {
        if dup {
            d.str(p!("imperva.securesphere.destination.user_name"), u.clone());
        }
        push_unique(&mut related_user, u.clone());
        d.str(p!("destination.user.name"), u);
    }
    if let Some(ip) = parse_ip_field(ctx, Key::Src, "sourceAddress") {
        if dup {
            d.str(p!("imperva.securesphere.source.address"), ip.clone());
        }
        push_unique(&mut related_ip, ip.clone());
        d.str(p!("source.ip"), ip);
    }
    if let Some(p) = parse_port(ctx, Key::Spt, "sourcePort") {
        d.int(p!("source.port"), p);
        if dup {
            d.int(p!("imperva.securesphere.source.port"), p);
        }
    }
    if let Some(u) = ctx.val_ne(Key::Suser) {
        if dup {
            d.str(p!("imperva.securesphere.source.user_name"), u.clone());
        }
        push_unique(&mut related_user, u.clone());
        d.str(p!("source.user.name"), u);
    }
    if !related_ip.is_empty() {
        d.strs(p!("related.ip"), related_ip);
    }
    if !related_user.is_empty() {
        d.strs(p!("related.user"), related_user);
    }
}

/// Custom strings: 1..=6 always, 7.. while contiguous (DAM audit goes to cs21); `cs3` is the
/// service name.
fn ss_custom_strings<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let dup = ctx.opts.preserve_duplicate_custom_fields;
    for n in 1..=crate::parse::record::MAX_CUSTOM {
        let has = ctx.idx.has(Key::Cs(n)) || ctx.idx.has(Key::CsLabel(n));
        if n > 6 && !has {
            break;
        }
        if n > 21 {
            break;
        }
        if let Some(label) = ctx.val_ne(Key::CsLabel(n)) {
            d.put(SS_CS_LABEL[n as usize - 1], Val::Str(label));
        }
        if let Some(v) = ctx.val_ne(Key::Cs(n)) {
            if n == 3 {
                d.str(p!("service.name"), v.clone());
                if !dup {
                    continue;
                }
            }
            d.put(SS_CS_VALUE[n as usize - 1], Val::Str(v));
        } else {
            // Mark an empty value consumed: empty values are dropped, not "unknown".
            let _ = ctx.raw(Key::Cs(n));
        }
    }
}

/// What no step read, under `extensions`; then the common tail.
fn ss_rest<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    keep_unused(ctx, d, "imperva.securesphere.extensions");
    finish(ctx, d, "imperva.securesphere", KindOnError::Set);
}

/// The envelope's time when the payload has none, else the receive time.
fn envelope_or_received(ctx: &Ctx<'_, '_>) -> i64 {
    let now = ctx.meta.received_ms;
    ctx.rec
        .syslog
        .as_ref()
        .and_then(|s| s.timestamp)
        .and_then(|t| parse_device_time(t, &ctx.zone, now))
        .unwrap_or(now)
}

/// Shorthand for the Cloud WAF extension paths.
macro_rules! x {
    ($s:literal) => {
        p!(concat!("imperva_cloud_waf.event.extensions.", $s))
    };
}

/// `imperva_cloud_waf.event`: the whole mapping, in order.
pub(super) const CLOUD_WAF: &[Step] = &[
    Step::Code(cloud_header),
    Step::Code(cloud_times),
    rule(Key::Act, Conv::Action, p!("event.action")).dup(x!("action")),
    Step::Code(cloud_addresses),
    Step::Code(cloud_user),
    text(Key::SourceServiceName, p!("source.service.name")),
    text(Key::SourceServiceName, x!("source.service_name")),
    text(Key::Dhost, p!("destination.domain")),
    // Counts and codes.
    rule(Key::In, Conv::Int("bytesIn"), p!("source.bytes")).dup(x!("bytes_in")),
    rule(
        Key::Cn(1),
        Conv::Int("deviceCustomNumber1"),
        p!("http.response.status_code"),
    )
    .dup(x!("device.custom_number1")),
    text(Key::CnLabel(1), x!("device.custom_number1_label")),
    // Geo.
    text(Key::Ccode, p!("source.geo.country_iso_code")).dup(x!("ccode")),
    text(Key::Cicode, x!("cicode")),
    rule(Key::Cs(7), Conv::Decimal("cs7"), p!("source.geo.location.lat")).dup(x!("cs7")),
    text(Key::CsLabel(7), x!("cs7Label")),
    rule(Key::Cs(8), Conv::Decimal("cs8"), p!("source.geo.location.lon")).dup(x!("cs8")),
    text(Key::CsLabel(8), x!("cs8Label")),
    // HTTP.
    text(Key::RequestMethod, p!("http.request.method")).dup(x!("request.method")),
    rule(Key::App, Conv::Lower, p!("network.application")).dup(x!("application_protocol")),
    text(Key::Postbody, p!("http.request.body.content")).dup(x!("postbody")),
    Step::Code(cloud_request),
    text(Key::Qstr, p!("url.query")).dup(x!("qstr")),
    text(Key::Ref, x!("ref")),
    Step::Code(cloud_user_agent),
    rule(
        Key::AdditionalReqHeaders,
        Conv::Json("additionalReqHeaders"),
        x!("additional.req_headers"),
    ),
    rule(
        Key::AdditionalResHeaders,
        Conv::Json("additionalResHeaders"),
        x!("additional.res_headers"),
    ),
    rule(Key::Cs(10), Conv::Json("cs10"), x!("cs10")),
    rule(Key::Cs(11), Conv::Json("cs11"), x!("cs11")),
    text(Key::CsLabel(10), x!("cs10Label")),
    text(Key::CsLabel(11), x!("cs11Label")),
    text(Key::CsLabel(9), x!("cs9Label")),
    text(Key::Cs(9), p!("rule.name")).dup(x!("cs9")),
    // Device custom strings 1..6 (2 and 3 are booleans).
    text(Key::Cs(1), x!("device.custom_string1")),
    text(Key::CsLabel(1), x!("device.custom_string1_label")),
    rule(Key::Cs(2), Conv::Bool("cs2"), x!("device.custom_string2")),
    text(Key::CsLabel(2), x!("device.custom_string2_label")),
    rule(Key::Cs(3), Conv::Bool("cs3"), x!("device.custom_string3")),
    text(Key::CsLabel(3), x!("device.custom_string3_label")),
    text(Key::Cs(4), x!("device.custom_string4")),
    text(Key::CsLabel(4), x!("device.custom_string4_label")),
    text(Key::Cs(5), x!("device.custom_string5")),
    text(Key::CsLabel(5), x!("device.custom_string5_label")),
    text(Key::Cs(6), x!("device.custom_string6")),
    text(Key::CsLabel(6), x!("device.custom_string6_label")),
    text(Key::DeviceExternalId, x!("device.externalId")),
    text(Key::DeviceFacility, x!("device.facility")),
    text(Key::Dproc, p!("destination.process.name")),
    text(Key::Dproc, x!("destination_process_name")),
    text(Key::FileId, p!("file.inode")).dup(x!("file_id")),
    text(Key::FileType, p!("file.type")).dup(x!("file.type")),
    text(Key::FilePermission, p!("file.group")).dup(x!("file.permission")),
    text(Key::Customer, x!("customer")),
    text(Key::SiteId, x!("site.id")),
    text(Key::SiteTag, x!("site.tag")),
    text(Key::Tag, x!("tag")),
    Step::Code(cloud_tls),
    Step::Code(cloud_rest),
];

/// Header facts: kind, category, observer, code, name, severity (and their copies).
fn cloud_header<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let h = &ctx.rec.header;
    d.str(p!("ecs.version"), "8.11.0");
    d.str(p!("event.kind"), if h.name == "Normal" { "event" } else { "alert" });
    d.statics(p!("event.category"), &["web"]);
    d.statics(p!("event.type"), &["info"]);
    d.str(p!("observer.vendor"), h.vendor.clone());
    d.str(p!("observer.product"), h.product.clone());
    d.str(p!("observer.version"), h.device_version.clone());
    d.str(p!("event.code"), h.class_id.clone());
    d.str(p!("message"), trim(&h.name));
    d.str(p!("imperva_cloud_waf.event.name"), trim(&h.name));
    d.str(p!("imperva_cloud_waf.event.version"), h.version.clone());
    if let Some(n) = severity_number(&h.severity) {
        d.int(p!("event.severity"), n);
    }
    if ctx.opts.preserve_duplicate_custom_fields {
        d.str(p!("imperva_cloud_waf.event.device.event_class_id"), h.class_id.clone());
        d.str(p!("imperva_cloud_waf.event.device.product"), h.product.clone());
        d.str(p!("imperva_cloud_waf.event.device.vendor"), h.vendor.clone());
        d.str(p!("imperva_cloud_waf.event.device.version"), h.device_version.clone());
        if let Ok(n) = h.severity.trim().parse::<i64>() {
            d.int(p!("imperva_cloud_waf.event.severity"), n);
        }
    }
}

/// `startTime` / `endTime` (epoch ms) to `event.start` / `event.end`; `@timestamp` from `rt`,
/// else the start, else the envelope or the receive time.
fn cloud_times<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let dup = ctx.opts.preserve_duplicate_custom_fields;
    let epoch = |ctx: &mut Ctx<'r, '_>, k: Key, name: &str| {
        let s = ctx.val_ne(k)?;
        let ms = parse_epoch_ms(&s);
        if ms.is_none() {
            ctx.error(format!(
                "error in field '{name}': value {s:?} is not epoch milliseconds"
            ));
        }
        ms
    };
    let start_ms = epoch(ctx, Key::Start, "startTime");
    let end_ms = epoch(ctx, Key::End, "endTime");
    if let Some(ms) = start_ms {
        d.ts(p!("event.start"), ms, TsStyle::Millis);
        if dup {
            d.put(x!("start_time"), Val::Ts(ms, TsStyle::Millis));
        }
    }
    if let Some(ms) = end_ms {
        d.ts(p!("event.end"), ms, TsStyle::Millis);
        if dup {
            d.put(x!("end_time"), Val::Ts(ms, TsStyle::Millis));
        }
    }
    // Elastic's pipeline leaves @timestamp at ingest time; the request's start is the event's
    // time, so it is used when present (the conformance suite excludes @timestamp here).
    let ts = start_ms.unwrap_or_else(|| envelope_or_received(ctx));
    d.ts(p!("@timestamp"), ts, TsStyle::Millis);
    if let Some(rt) = ctx.val_ne(Key::Rt) {
        if let Some(ms) = parse_device_time(&rt, &ctx.zone, ctx.meta.received_ms) {
            d.ts(p!("@timestamp"), ms, TsStyle::Millis);
        }
    }
}

/// Addresses and ports (Imperva: `sip`/`spt` = origin server, `src`/`cpt` = client), the
/// forwarded-for chain, and `related.ip`.
fn cloud_addresses<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let dup = ctx.opts.preserve_duplicate_custom_fields;
    let mut related_ip = d.list();
    let dst = parse_ip_field(ctx, Key::Dst, "destinationAddress");
    let sip = parse_ip_field(ctx, Key::Sip, "sip");
    if let Some(ip) = sip.clone().or(dst) {
        d.str(p!("destination.ip"), ip.clone());
        push_unique(&mut related_ip, ip);
    }
    if dup {
        if let Some(ip) = sip {
            d.str(x!("sip"), ip);
        }
    }
    if let Some(ip) = parse_ip_field(ctx, Key::Src, "sourceAddress") {
        if dup {
            d.str(x!("source.address"), ip.clone());
        }
        push_unique(&mut related_ip, ip.clone());
        d.str(p!("source.ip"), ip);
    }
    let spt = parse_port(ctx, Key::Spt, "sourcePort");
    let dpt = parse_port(ctx, Key::Dpt, "destinationPort");
    if let Some(p) = spt.or(dpt) {
        d.int(p!("destination.port"), p);
    }
    if let (Some(p), true) = (spt, dup) {
        d.int(x!("source.port"), p);
    }
    if let Some(p) = parse_port(ctx, Key::Cpt, "cpt") {
        d.int(p!("source.port"), p);
        if dup {
            d.int(x!("cpt"), p);
        }
    }
    if let Some(xff) = ctx.val_ne(Key::Xff) {
        let mut ips = d.list();
        let mut bad: Vec<String> = Vec::new();
        let mut take = |part: Cow<'r, str>| match ip_text(part) {
            Ok(ip) => ips.push(ip),
            Err(part) => bad.push(part.into_owned()),
        };
        match xff {
            Cow::Borrowed(x) => split_xff(x).for_each(|p| take(Cow::Borrowed(p))),
            Cow::Owned(x) => split_xff(&x).for_each(|p| take(Cow::Owned(p.to_string()))),
        }
        for part in bad {
            ctx.error(format!("error in field 'xff': value {part:?} is not an IP address"));
        }
        for ip in &ips {
            push_unique(&mut related_ip, ip.clone());
        }
        // One address is a string, several a list.
        if ips.len() > 1 {
            if dup {
                d.strs(x!("xff"), ips.clone());
            }
            d.strs(p!("network.forwarded_ip"), ips);
        } else if let Some(ip) = ips.pop() {
            if dup {
                d.string(x!("xff"), ip.clone());
            }
            d.string(p!("network.forwarded_ip"), ip);
            d.spare(ips);
        }
    }
    if !related_ip.is_empty() {
        d.strs(p!("related.ip"), related_ip);
    }
}

/// `suid` to `source.user.id` and `related.user`.
fn cloud_user<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(u) = ctx.val_ne(Key::Suid) {
        d.str(p!("source.user.id"), u.clone());
        let mut users = d.list();
        users.push(u.clone());
        d.strs(p!("related.user"), users);
        if ctx.opts.preserve_duplicate_custom_fields {
            d.str(x!("source.user_id"), u);
        }
    }
}

/// `request` to `url.original` and the URL's parts (Elasticsearch's `uri_parts`).
fn cloud_request<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(req) = ctx.val_ne(Key::Request) {
        d.str(p!("url.original"), req.clone());
        let parts = match &req {
            Cow::Borrowed(b) => uri_parts(b).map(|parts| parts.write(d, Cow::Borrowed)),
            Cow::Owned(o) => uri_parts(o).map(|parts| parts.write(d, |s| Cow::Owned(s.to_string()))),
        };
        if let Err(e) = parts {
            ctx.error(format!("uri_parts on url.original failed: {e}"));
        }
        if ctx.opts.preserve_duplicate_custom_fields {
            d.str(x!("request.url"), req);
        }
    }
}

/// `requestClientApplication` to `user_agent.*`, parsed.
fn cloud_user_agent<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(ua) = ctx.val_ne(Key::RequestClientApplication) {
        if let Some(p) = ctx.user_agent(&ua) {
            d.string(p!("user_agent.name"), Cow::Borrowed(&p.name));
            if let Some(v) = &p.version {
                d.string(p!("user_agent.version"), Cow::Borrowed(v));
            }
            d.string(p!("user_agent.os.name"), Cow::Borrowed(&p.os_name));
            if let Some(v) = &p.os_version {
                d.string(p!("user_agent.os.version"), Cow::Borrowed(v));
            }
            if let Some(v) = &p.os_full {
                d.string(p!("user_agent.os.full"), Cow::Borrowed(v));
            }
            d.string(p!("user_agent.device.name"), Cow::Borrowed(&p.device_name));
        }
        if ctx.opts.preserve_duplicate_custom_fields {
            d.str(x!("request.client_application"), ua.clone());
        }
        d.str(p!("user_agent.original"), ua);
    }
}

/// `ver` (`TLSv1.2 ECDHE-…`) to `tls.version` and `tls.cipher`, and kept whole.
fn cloud_tls<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(v) = ctx.val_ne(Key::Ver) {
        let tls = |s: &str| -> Option<(usize, usize)> {
            let rest = s.strip_prefix("TLSv")?;
            let (ver, _) = rest.rsplit_once(' ')?;
            Some((4, 4 + ver.len()))
        };
        if let Some((vs, ve)) = tls(&v) {
            let (ver, cipher) = match &v {
                Cow::Borrowed(b) => (Cow::Borrowed(&b[vs..ve]), Cow::Borrowed(&b[ve + 1..])),
                Cow::Owned(o) => (Cow::Owned(o[vs..ve].to_string()), Cow::Owned(o[ve + 1..].to_string())),
            };
            d.str(p!("tls.version"), ver);
            d.str(p!("tls.cipher"), cipher);
        }
        d.str(x!("ver"), v);
    }
}

/// Keys no step read, kept under `extensions`; then the common tail.
fn cloud_rest<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    keep_unused(ctx, d, "imperva_cloud_waf.event.extensions");
    finish(ctx, d, "imperva_cloud_waf.event", KindOnError::Append);
}

/// Elastic splits `xff` on `,\s?`.
fn split_xff(s: &str) -> impl Iterator<Item = &str> {
    s.split(',')
        .map(|p| p.strip_prefix(' ').unwrap_or(p))
        .filter(|p| !p.is_empty())
}

/// What Elasticsearch's `uri_parts` processor extracts, borrowed from the URL.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct UriParts<'s> {
    pub scheme: Option<&'s str>,
    pub domain: Option<&'s str>,
    pub port: Option<i64>,
    pub username: Option<&'s str>,
    pub password: Option<&'s str>,
    pub path: &'s str,
    pub query: Option<&'s str>,
    pub fragment: Option<&'s str>,
    pub extension: Option<&'s str>,
}

impl<'s> UriParts<'s> {
    /// Write the parts; `own` turns a part into a document value (borrowed when the URL
    /// outlives the document, copied when it does not).
    fn write<'r>(self, d: &mut Doc<'r>, own: impl Fn(&'s str) -> Cow<'r, str>) {
        if let Some(s) = self.scheme {
            d.str(p!("url.scheme"), own(s));
        }
        if let Some(s) = self.domain {
            d.str(p!("url.domain"), own(s));
        }
        if let Some(p) = self.port {
            d.int(p!("url.port"), p);
        }
        if let Some(s) = self.username {
            d.str(p!("url.username"), own(s));
        }
        if let Some(s) = self.password {
            d.str(p!("url.password"), own(s));
        }
        d.str(p!("url.path"), own(self.path));
        if let Some(s) = self.query {
            d.str(p!("url.query"), own(s));
        }
        if let Some(s) = self.fragment {
            d.str(p!("url.fragment"), own(s));
        }
        if let Some(s) = self.extension {
            d.str(p!("url.extension"), own(s));
        }
    }
}

/// RFC 3986 parse as `java.net.URI` does it: characters outside the URI grammar (spaces, `|`,
/// `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `}`) or a bad `%` escape make it fail. A reference
/// without a scheme (`site.com/a.css`, Imperva's form) is all path.
pub(crate) fn uri_parts(s: &str) -> Result<UriParts<'_>, String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let bad = c <= b' ' || matches!(c, b'|' | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'}' | 0x7f);
        if bad {
            return Err(format!("Illegal character in URI at index {i}: {s}"));
        }
        if c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit) && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(format!("Malformed escape pair at index {i}: {s}"));
        }
    }
    let mut p = UriParts::default();
    let (before_frag, frag) = match s.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let (before_q, query) = match before_frag.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (before_frag, None),
    };
    let scheme_end = before_q.find("://").filter(|&i| {
        i > 0
            && before_q[..i]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    });
    let path = if let Some(i) = scheme_end {
        p.scheme = Some(&before_q[..i]);
        let rest = &before_q[i + 3..];
        let (auth, path) = match rest.find('/') {
            Some(j) => (&rest[..j], &rest[j..]),
            None => (rest, ""),
        };
        let host_port = match auth.rsplit_once('@') {
            Some((ui, hp)) => {
                let (u, pw) = match ui.split_once(':') {
                    Some((u, pw)) => (u, Some(pw)),
                    None => (ui, None),
                };
                p.username = Some(u);
                p.password = pw;
                hp
            }
            None => auth,
        };
        let (host, port) = if host_port.starts_with('[') {
            match host_port.find(']') {
                Some(e) => (&host_port[..=e], host_port[e + 1..].strip_prefix(':')),
                None => (host_port, None),
            }
        } else {
            match host_port.rsplit_once(':') {
                Some((h, pt)) => (h, Some(pt)),
                None => (host_port, None),
            }
        };
        p.domain = Some(host).filter(|h| !h.is_empty());
        if let Some(pt) = port.filter(|pt| !pt.is_empty()) {
            p.port = Some(pt.parse().map_err(|_| format!("invalid port in {s}"))?);
        }
        path
    } else {
        before_q
    };
    p.path = path;
    p.query = query;
    p.fragment = frag;
    if let Some(dot) = path.rfind('.') {
        let ext = &path[dot + 1..];
        if !ext.is_empty() {
            p.extension = Some(ext);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts_like_elasticsearch() {
        let p = uri_parts("site123.abcd.info/").unwrap();
        assert_eq!(p.path, "site123.abcd.info/");
        assert_eq!(p.extension, Some("info/"));
        let p = uri_parts("site123.abcd.info/main.css?a=b#f").unwrap();
        assert_eq!(
            (p.path, p.extension, p.query, p.fragment),
            ("site123.abcd.info/main.css", Some("css"), Some("a=b"), Some("f"))
        );
        let p = uri_parts("https://u:pw@www.x.com:8443/a/b.php?q=1").unwrap();
        assert_eq!(p.scheme, Some("https"));
        assert_eq!(p.domain, Some("www.x.com"));
        assert_eq!(p.port, Some(8443));
        assert_eq!(p.username, Some("u"));
        assert_eq!(p.password, Some("pw"));
        assert_eq!(p.path, "/a/b.php");
        let p = uri_parts("http://[2001:db8::1]:8080/x").unwrap();
        assert_eq!((p.domain, p.port), (Some("[2001:db8::1]"), Some(8080)));
        assert!(uri_parts("a.com/x?y=1 | cat /etc/passwd").is_err());
        assert!(uri_parts("a.com/%zz").is_err());
    }

    #[test]
    fn severities() {
        assert_eq!(severity_number("High"), Some(7));
        assert_eq!(severity_number("Informative"), None);
        assert_eq!(severity_number("-1"), Some(-1));
        assert_eq!(severity_number("MAJOR"), None);
    }
}
