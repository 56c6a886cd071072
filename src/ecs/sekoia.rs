//! Profile `sekoia`: what SEKOIA.IO's `imperva-waf` intake format produces. SEKOIA reads raw
//! values (backslash escapes stay), a few keys case-sensitively (`filetype`, `filepermission`),
//! renders dates as Python's `isoformat()`, sorts list fields, and enriches user agents with
//! Python's ua-parser. SecureSphere lines, which SEKOIA's format does not cover, get the same
//! constants plus their addresses, users and times.

use std::borrow::Cow;

use super::doc::{Doc, TsStyle, Val};
use super::rules::{Conv, Step, rule};
use super::{Ctx, domain, parse_ip};
use crate::p;
use crate::parse::Key;
use crate::parse::time::parse_device_time;

/// Reasons SEKOIA attaches to Cloud WAF action codes.
const REASONS: &[(&str, &str)] = &[
    ("REQ_BAD_PARSE_ERROR", "The HTTP request was malformated"),
    ("REQ_BAD_TIMEOUT", "The HTTP request reached the idle timeout"),
    ("REQ_BAD_RESP_PARSE_ERROR", "The HTTP response was malformated"),
    (
        "REQ_BAD_CONNECTION_TO_SERVER",
        "The destination server reset the connection",
    ),
    (
        "REQ_BAD_CLIENT_CLOSED_CONNECTION",
        "The client closed the connection before receiving the full response",
    ),
    ("REQ_BLOCKED_SESSION", "The request was blocked based on WAF settings"),
    (
        "REQ_BLOCKED_SECURITY",
        "The request was blocked based on Security settings",
    ),
    ("REQ_BLOCKED_ACL", "The request was blocked based on Security settings"),
    ("REQ_BLOCKED_VISITOR", "The request was blocked based on WAF settings"),
    ("REQ_BLOCKED_DDOS", "The request was blocked due to a DDoS attack"),
    (
        "REQ_BAD_TIMEOUT_CONNECTION_TO_SERVER",
        "The proxy failed to connect the destination",
    ),
    (
        "REQ_UNRESOLVED_SITE_UNKNOWN",
        "The proxy failed to resolve the destination",
    ),
    (
        "REQ_UNRESOLVED_SITE_DUPLICATE",
        "The proxy failed to resolve the destination",
    ),
    (
        "REQ_UNRESOLVED_SITE_INVALID_CNAME",
        "The proxy failed to resolve the destination",
    ),
    (
        "REQ_BAD_CONNECTION_TO_SERVER_SSL_FAILURE",
        "The proxy failed to connect the destination",
    ),
    ("REQ_SSL_NOT_SUPPORTED", "SSL connections are disabled"),
    ("REQ_NO_IP_FOUND", "The proxy failed to resolve the destination"),
    ("REQ_ILLEGAL_PORT", "Unsupported destination port"),
    ("REQ_ALL_IPS_DOWN", "The destination is unavailable"),
    ("REQ_POST_TIMEOUT", "The HTTP request reached the timeout"),
    (
        "REQ_BAD_SERVER_CERTIFICATE",
        "The certifcate of the destination is invalid",
    ),
    (
        "REQ_IPV6_NOT_SUPPORTED",
        "The destination doesn't support IPv6 addresses",
    ),
    (
        "REQ_LOCKED_IP_VIOLATION",
        "The request was blocked based on Security settings",
    ),
    ("REQ_DOMAIN_BLACKLISTED", "The destination was blacklisted"),
    (
        "REQ_ILLEGAL_IP_VIOLATION",
        "The proxy failed to resolve the destination",
    ),
    (
        "REQ_SSL_CERT_HOST_MISMATCH",
        "The certifcate of the destination is invalid",
    ),
    (
        "REQ_NON_SNI_FORBIDDEN",
        "The certificate of the destination doesn't support SNI",
    ),
    (
        "REQ_CLIENT_CERT_REQUIRED",
        "The request was blocked as a client certificat is required",
    ),
    (
        "REQ_TOO_MANY_CONNECTIONS_TO_ORIGIN",
        "Too many connections on the destination",
    ),
];

/// Action codes SEKOIA types by name before the prefix rules apply.
const TYPES: &[(&str, &str)] = &[
    ("REQ_SSL_NOT_SUPPORTED", "denied"),
    ("REQ_NO_IP_FOUND", "denied"),
    ("REQ_ILLEGAL_PORT", "denied"),
    ("REQ_ALL_IPS_DOWN", "error"),
    ("REQ_POST_TIMEOUT", "error"),
    ("REQ_IPV6_NOT_SUPPORTED", "error"),
    ("REQ_LOCKED_IP_VIOLATION", "denied"),
    ("REQ_DOMAIN_BLACKLISTED", "denied"),
    ("REQ_ILLEGAL_IP_VIOLATION", "denied"),
    ("REQ_SSL_CERT_HOST_MISMATCH", "denied"),
    ("REQ_NON_SNI_FORBIDDEN", "denied"),
    ("REQ_CLIENT_CERT_REQUIRED", "denied"),
    ("REQ_TOO_MANY_CONNECTIONS_TO_ORIGIN", "denied"),
];

/// `event.type`, `event.action` override and `event.reason` for an action code.
pub(crate) fn classify(act: &str) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    let mut ty = TYPES
        .iter()
        .find(|(a, _)| *a == act)
        .map(|(_, t)| *t)
        .unwrap_or("access");
    let mut action = None;
    let mut reason = REASONS.iter().find(|(a, _)| *a == act).map(|(_, r)| *r);
    if act == "REQ_PASSED" || act.starts_with("REQ_CACHED") {
        ty = "allowed";
    } else if act.starts_with("REQ_BLOCKED") {
        ty = "denied";
        action = Some("block");
        reason = Some("The connection was blocked");
    } else if act.starts_with("REQ_CHALLENGED") {
        ty = "denied";
        reason = Some("A challenge was submitted to the client");
    } else if act.starts_with("REQ_BAD") || act.starts_with("REQ_UNRESOLVED") {
        ty = "error";
    }
    (ty, action, reason)
}

/// SEKOIA's date parser on an epoch number: 13 digits are milliseconds, 10 seconds; shorter
/// numbers are read as seconds scaled up to 10 digits (its published tests show `123456789` as
/// `2009-02-13T23:31:30Z`).
pub(crate) fn epoch_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = s.parse().ok()?;
    Some(match s.len() {
        0..=10 => v.checked_mul(10i64.pow(10 - s.len() as u32))?.checked_mul(1000)?,
        11 | 12 => v / 10i64.pow(s.len() as u32 - 10) * 1000,
        13..=15 => v / 10i64.pow(s.len() as u32 - 13),
        _ => v / 10i64.pow(s.len() as u32 - 13),
    })
}

/// Make JSON with CEF escapes (`\=`) parseable the way SEKOIA reads it: a backslash that
/// starts no JSON escape is a literal backslash.
fn lenient_json(raw: &str) -> Option<String> {
    let mut fixed = String::with_capacity(raw.len() + 8);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u') => {
                    fixed.push('\\');
                    fixed.push(chars.next().unwrap_or('\\'));
                }
                _ => fixed.push_str("\\\\"),
            }
        } else {
            fixed.push(c);
        }
    }
    let v: serde_json::Value = serde_json::from_str(&fixed).ok()?;
    serde_json::to_string(&v).ok()
}

fn put_domain<'r>(d: &mut Doc<'r>, host: &'r str, base: Which) {
    let (dom, reg, sub, tld) = match base {
        Which::Destination => (
            p!("destination.domain"),
            p!("destination.registered_domain"),
            p!("destination.subdomain"),
            p!("destination.top_level_domain"),
        ),
        Which::Source => (
            p!("source.domain"),
            p!("source.registered_domain"),
            p!("source.subdomain"),
            p!("source.top_level_domain"),
        ),
    };
    d.str(dom, host);
    if let Some(p) = domain::split(host) {
        d.str(reg, p.registered_domain);
        if let Some(s) = p.subdomain {
            d.str(sub, s);
        }
        d.str(tld, p.top_level_domain);
    }
}

#[derive(Clone, Copy)]
enum Which {
    Destination,
    Source,
}

fn sorted_unique<'r>(mut v: Vec<Cow<'r, str>>) -> Vec<Cow<'r, str>> {
    v.retain(|s| !s.is_empty());
    v.sort();
    v.dedup();
    v
}

/// Steps every dataset runs first, in order.
const COMMON: &[Step] = &[
    Step::Code(header),
    Step::Code(times),
    Step::Code(action),
    rule(Key::Cicode, Conv::Raw, p!("client.geo.city_name")),
    Step::Code(client_geo),
    Step::Code(endpoints),
    Step::Code(url),
    rule(Key::Qstr, Conv::Raw, p!("url.query")),
    rule(Key::Ref, Conv::Raw, p!("http.request.referrer")),
    rule(Key::RequestMethod, Conv::Raw, p!("http.request.method")),
    rule(Key::Cn(1), Conv::RawInt, p!("http.response.status_code")),
    rule(Key::In, Conv::RawInt, p!("http.request.bytes")),
    rule(Key::DeviceExternalId, Conv::Raw, p!("http.request.id")),
    rule(Key::App, Conv::RawLower, p!("network.protocol")),
    rule(Key::Xff, Conv::Raw, p!("network.forwarded_ip")),
    rule(Key::Xff, Conv::Raw, p!("imperva.request.x_forwarded_for")),
    Step::Code(user_agent),
    Step::Code(tls),
    rule(Key::Customer, Conv::Raw, p!("organization.name")),
    Step::Code(rule_names),
    // Imperva-specific.
    rule(Key::DeviceFacility, Conv::Raw, p!("imperva.pop")),
    Step::Code(headers),
    Step::Code(session_id),
    rule(Key::Cs(2), Conv::RawFlag, p!("imperva.client.js_support")),
    rule(Key::Cs(3), Conv::RawFlag, p!("imperva.client.cookie_support")),
    rule(Key::Cs(1), Conv::Raw, p!("imperva.client.captcha_support")),
    rule(Key::Cs(4), Conv::Raw, p!("imperva.visitor.id")),
    rule(Key::Dproc, Conv::Raw, p!("imperva.user_agent.type")),
    Step::Code(attack),
    rule(Key::Cs(11), Conv::Raw, p!("imperva.rule.additional_info")),
];

/// SecureSphere's own facts for the SEKOIA shape.
const SECURESPHERE_EXTRAS: &[Step] = &[
    Step::Code(destination_ip),
    rule(Key::Dpt, Conv::RawInt, p!("destination.port")),
    rule(Key::Spt, Conv::RawInt, p!("source.port")),
    rule(Key::Duser, Conv::Raw, p!("destination.user.name")),
    rule(Key::Suser, Conv::Raw, p!("source.user.name")),
    rule(Key::Proto, Conv::RawLower, p!("network.transport")),
    rule(Key::Cat, Conv::Raw, p!("imperva.event.category")),
    Step::Code(securesphere_product),
];

/// Steps every dataset runs last.
const TAIL: &[Step] = &[Step::Code(related_and_tags)];

/// Cloud WAF (and anything not SecureSphere): the whole mapping.
pub(super) const CLOUD_WAF: &[&[Step]] = &[COMMON, TAIL];
/// SecureSphere: the whole mapping.
pub(super) const SECURESPHERE: &[&[Step]] = &[COMMON, SECURESPHERE_EXTRAS, TAIL];

/// The constants of SEKOIA's format, the line itself and the header's severity and name.
fn header<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let h = &ctx.rec.header;
    d.string(p!("message"), Cow::Borrowed(ctx.original));
    d.str(p!("observer.vendor"), "Imperva");
    d.str(p!("observer.product"), "Web Application Firewall");
    d.str(p!("observer.type"), "firewall");
    d.strs(p!("event.category"), vec!["network".into()]);
    d.str(p!("event.dataset"), "imperva-waf");
    d.str(p!("event.module"), "imperva.waf");
    if let Ok(n) = h.severity.trim().parse::<i64>() {
        d.int(p!("event.severity"), n);
    }
    d.str(p!("imperva.event.class_id"), h.name.trim().to_string());
}

/// `@timestamp`, `event.start`/`end`/`duration` from `start`/`end` (else `rt`, else now).
fn times<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let start_raw = ctx.raw(Key::Start);
    let end_raw = ctx.raw(Key::End);
    let start = start_raw.and_then(epoch_ms);
    let end = end_raw.and_then(epoch_ms);
    if let Some(ms) = start {
        d.ts(p!("@timestamp"), ms, TsStyle::Python);
        d.ts(p!("event.start"), ms, TsStyle::Python);
    }
    if let Some(ms) = end {
        d.ts(p!("event.end"), ms, TsStyle::Python);
    }
    if let (Some(s), Some(e)) = (
        start_raw.and_then(|s| s.trim().parse::<i64>().ok()),
        end_raw.and_then(|e| e.trim().parse::<i64>().ok()),
    ) {
        d.put(p!("event.duration"), Val::FloatDecimal((e - s) as f64));
    }
    if start.is_none() {
        let now = ctx.meta.received_ms;
        let rt = ctx.raw(Key::Rt).and_then(|rt| parse_device_time(rt, &ctx.zone, now));
        d.ts(p!("@timestamp"), rt.unwrap_or(now), TsStyle::Python);
    }
}

/// Action → `event.type`, `event.action`, `event.reason`.
fn action<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let mut types: Vec<Cow<'r, str>> = vec!["connection".into(), "access".into()];
    if let Some(act) = ctx.raw(Key::Act).filter(|a| !a.is_empty()) {
        let (ty, action, reason) = classify(act);
        types = vec!["connection".into(), ty.into()];
        d.str(p!("event.action"), action.unwrap_or(act));
        if let Some(r) = reason {
            d.str(p!("event.reason"), r);
        }
    }
    d.strs(p!("event.type"), sorted_unique(types));
}

/// The client's location (`cs7`/`cs8` when labelled as such) and country (`cs3` when labelled
/// `ImpervaAACountry`).
fn client_geo<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let lat = ctx.raw(Key::Cs(7));
    let lon = ctx.raw(Key::Cs(8));
    let geo_labels = ctx
        .raw(Key::CsLabel(7))
        .is_none_or(|l| l.eq_ignore_ascii_case("latitude"))
        && ctx
            .raw(Key::CsLabel(8))
            .is_none_or(|l| l.eq_ignore_ascii_case("longitude"));
    if let (Some(Ok(lat)), Some(Ok(lon)), true) = (
        lat.map(|v| v.trim().parse::<f64>()),
        lon.map(|v| v.trim().parse::<f64>()),
        geo_labels,
    ) {
        d.float(p!("client.geo.location.lat"), lat);
        d.float(p!("client.geo.location.lon"), lon);
    }
    if ctx.raw(Key::CsLabel(3)) == Some("ImpervaAACountry") {
        if let Some(c) = ctx.raw(Key::Cs(3)) {
            d.str(p!("client.geo.country_name"), c);
        }
    }
}

/// Source address and port, the site (`dhost`) and the service name, with their related facts.
fn endpoints<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(ip) = ctx.raw(Key::Src).and_then(parse_ip) {
        let ip: Cow<'r, str> = Cow::Owned(ip.to_string());
        d.str(p!("source.ip"), ip.clone());
        d.str(p!("source.address"), ip.clone());
        ctx.related_ip.push(ip);
    }
    if let Some(host) = ctx.raw(Key::Dhost).filter(|h| !h.is_empty()) {
        put_domain(d, host, Which::Source);
        d.str(p!("source.address"), host);
        ctx.related_hosts.push(host.into());
    }
    if let Some(p) = ctx.raw(Key::Cpt).and_then(|p| p.trim().parse::<i64>().ok()) {
        d.int(p!("source.port"), p);
    }
    if let Some(host) = ctx.raw(Key::SourceServiceName).filter(|h| !h.is_empty()) {
        put_domain(d, host, Which::Destination);
        d.str(p!("destination.address"), host);
        ctx.related_hosts.push(host.into());
    }
}

/// The request URL and its parts.
fn url<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(req) = ctx.raw(Key::Request).filter(|r| !r.is_empty()) {
        d.str(p!("url.full"), req);
        d.str(p!("url.original"), req);
        let (before_q, q) = match req.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (req, None),
        };
        d.str(p!("url.path"), before_q);
        if let Some(q) = q {
            d.str(p!("url.query"), q);
        }
        let host_part = before_q.split_once("://").map_or(before_q, |(_, r)| r);
        let host = host_part.split('/').next().unwrap_or("");
        d.str(p!("url.domain"), host);
        ctx.related_hosts.push(host.into());
    }
}

/// The user agent and what ua-parser finds in it.
fn user_agent<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(ua) = ctx.raw(Key::RequestClientApplication).filter(|u| !u.is_empty()) {
        d.str(p!("user_agent.original"), ua);
        if let Some(p) = ctx.user_agent(ua) {
            d.string(p!("user_agent.name"), Cow::Borrowed(&p.name));
            if let Some(v) = &p.version {
                d.string(p!("user_agent.version"), Cow::Borrowed(v));
            }
            d.string(p!("user_agent.os.name"), Cow::Borrowed(&p.os_name));
            if let Some(v) = &p.os_version {
                d.string(p!("user_agent.os.version"), Cow::Borrowed(v));
            }
            d.string(p!("user_agent.device.name"), Cow::Borrowed(&p.device_name));
        }
    }
}

/// TLS version, protocol and cipher from `ver` (`TLSv1.2 ECDHE-RSA-…`).
fn tls<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(v) = ctx.raw(Key::Ver) {
        if let (Some((proto, _)), Some((_, cipher))) = (v.split_once('v'), v.split_once(' ')) {
            let version = v
                .split_once('v')
                .map(|(_, r)| r.split(' ').next().unwrap_or(""))
                .unwrap_or("");
            d.str(p!("tls.version"), version);
            d.str(p!("tls.version_protocol"), proto.to_ascii_lowercase());
            d.str(p!("tls.cipher"), cipher.split(' ').next().unwrap_or(""));
        }
    }
}

/// `rule.name` and its comma-separated names.
fn rule_names<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(rule) = ctx.raw(Key::Cs(9)).filter(|r| !r.is_empty()) {
        d.str(p!("rule.name"), rule);
        let names: Vec<Cow<'r, str>> = rule.split(',').filter(|s| !s.is_empty()).map(Cow::Borrowed).collect();
        if !names.is_empty() {
            d.strs(p!("imperva.rule.names"), names);
        }
    }
}

/// The additional request and response headers, as JSON when they read as JSON.
fn headers<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    for (k, path) in [
        (Key::AdditionalReqHeaders, p!("imperva.request.headers")),
        (Key::AdditionalResHeaders, p!("imperva.response.headers")),
    ] {
        if let Some(raw) = ctx.raw(k).filter(|r| !r.is_empty()) {
            match lenient_json(raw) {
                Some(j) => d.json(path, Cow::Owned(j)),
                None => d.str(path, raw),
            }
        }
    }
}

/// `fileId` as the session id: a number when it is one.
fn session_id<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(id) = ctx.raw(Key::FileId).filter(|r| !r.is_empty()) {
        match id.trim().parse::<u64>() {
            Ok(n) => d.put(p!("imperva.session.id"), Val::UInt(n)),
            Err(_) => d.str(p!("imperva.session.id"), id),
        }
    }
}

/// Attack type and id; SEKOIA reads these two keys in lower case only.
fn attack<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if ctx.key_of(Key::FileType) == Some("filetype") {
        if let Some(v) = ctx.raw(Key::FileType) {
            d.str(p!("imperva.attack.type"), v);
        }
    }
    if ctx.key_of(Key::FilePermission) == Some("filepermission") {
        if let Some(v) = ctx.raw(Key::FilePermission) {
            d.str(p!("imperva.attack.id"), v);
        }
    }
}

/// SecureSphere's destination address.
fn destination_ip<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if let Some(ip) = ctx.raw(Key::Dst).and_then(parse_ip) {
        let ip: Cow<'r, str> = Cow::Owned(ip.to_string());
        d.str(p!("destination.ip"), ip.clone());
        d.str(p!("destination.address"), ip.clone());
        ctx.related_ip.push(ip);
    }
}

fn securesphere_product<'r>(_: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    d.str(p!("observer.product"), "SecureSphere");
}

/// `related.ip` and `related.hosts` (sorted, unique) and the configured tags.
fn related_and_tags<'r>(ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let related_ip = sorted_unique(std::mem::take(&mut ctx.related_ip));
    if !related_ip.is_empty() {
        d.strs(p!("related.ip"), related_ip);
    }
    let related_hosts = sorted_unique(std::mem::take(&mut ctx.related_hosts));
    if !related_hosts.is_empty() {
        d.strs(p!("related.hosts"), related_hosts);
    }
    let o = ctx.opts;
    if !o.tags.is_empty() {
        d.put(
            p!("tags"),
            Val::Strs(o.tags.iter().map(|t| Cow::Owned(t.clone())).collect()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_codes() {
        assert_eq!(classify("REQ_PASSED"), ("allowed", None, None));
        assert_eq!(classify("REQ_CACHED_FRESH"), ("allowed", None, None));
        assert_eq!(
            classify("REQ_BLOCKED_VISITOR"),
            ("denied", Some("block"), Some("The connection was blocked"))
        );
        assert_eq!(
            classify("REQ_DOMAIN_BLACKLISTED"),
            ("denied", None, Some("The destination was blacklisted"))
        );
        assert_eq!(
            classify("REQ_BAD_PARSE_ERROR"),
            ("error", None, Some("The HTTP request was malformated"))
        );
        assert_eq!(classify("REQ_SOMETHING_NEW"), ("access", None, None));
    }

    #[test]
    fn epochs() {
        assert_eq!(epoch_ms("1649772598763"), Some(1_649_772_598_763));
        assert_eq!(epoch_ms("1649772598"), Some(1_649_772_598_000));
        assert_eq!(epoch_ms("123456789"), Some(1_234_567_890_000));
        assert_eq!(epoch_ms("x"), None);
    }

    #[test]
    fn lenient_json_keeps_cef_backslashes() {
        assert_eq!(lenient_json(r#"[{"a":"x\=y"}]"#).unwrap(), r#"[{"a":"x\\=y"}]"#);
        assert!(lenient_json("not json").is_none());
    }
}
