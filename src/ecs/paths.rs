//! Every static field path the mappers write, in byte order: the output order of a document.
//! A mapper names a path with [`p!`](crate::p), which resolves it to its slot here at compile
//! time (an unknown path is a compile error), so writing a document needs no sorting and no
//! string comparison for these fields. Paths made at run time (unknown extension keys) are
//! merged in by comparison.
//!
//! Keep the list sorted (a test checks); add a path here when a mapper needs a new one.

/// A field's slot in [`PATHS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct P(pub u16);

pub const PATHS: &[&str] = &[
    "@timestamp",
    "_id",
    "client.geo.city_name",
    "client.geo.country_name",
    "client.geo.location.lat",
    "client.geo.location.lon",
    "data_stream.dataset",
    "data_stream.namespace",
    "data_stream.type",
    "destination.address",
    "destination.domain",
    "destination.ip",
    "destination.port",
    "destination.process.name",
    "destination.registered_domain",
    "destination.subdomain",
    "destination.top_level_domain",
    "destination.user.name",
    "ecs.version",
    "error.message",
    "error.type",
    "event.action",
    "event.category",
    "event.code",
    "event.dataset",
    "event.duration",
    "event.end",
    "event.kind",
    "event.module",
    "event.original",
    "event.provider",
    "event.reason",
    "event.severity",
    "event.start",
    "event.timezone",
    "event.type",
    "file.group",
    "file.inode",
    "file.type",
    "http.request.body.content",
    "http.request.bytes",
    "http.request.id",
    "http.request.method",
    "http.request.referrer",
    "http.response.status_code",
    "imperva.attack.id",
    "imperva.attack.type",
    "imperva.client.captcha_support",
    "imperva.client.cookie_support",
    "imperva.client.js_support",
    "imperva.event.category",
    "imperva.event.class_id",
    "imperva.pop",
    "imperva.request.headers",
    "imperva.request.x_forwarded_for",
    "imperva.response.headers",
    "imperva.rule.additional_info",
    "imperva.rule.names",
    "imperva.securesphere.destination.address",
    "imperva.securesphere.destination.port",
    "imperva.securesphere.destination.user_name",
    "imperva.securesphere.device.action",
    "imperva.securesphere.device.custom_string1.label",
    "imperva.securesphere.device.custom_string1.value",
    "imperva.securesphere.device.custom_string10.label",
    "imperva.securesphere.device.custom_string10.value",
    "imperva.securesphere.device.custom_string11.label",
    "imperva.securesphere.device.custom_string11.value",
    "imperva.securesphere.device.custom_string12.label",
    "imperva.securesphere.device.custom_string12.value",
    "imperva.securesphere.device.custom_string13.label",
    "imperva.securesphere.device.custom_string13.value",
    "imperva.securesphere.device.custom_string14.label",
    "imperva.securesphere.device.custom_string14.value",
    "imperva.securesphere.device.custom_string15.label",
    "imperva.securesphere.device.custom_string15.value",
    "imperva.securesphere.device.custom_string16.label",
    "imperva.securesphere.device.custom_string16.value",
    "imperva.securesphere.device.custom_string17.label",
    "imperva.securesphere.device.custom_string17.value",
    "imperva.securesphere.device.custom_string18.label",
    "imperva.securesphere.device.custom_string18.value",
    "imperva.securesphere.device.custom_string19.label",
    "imperva.securesphere.device.custom_string19.value",
    "imperva.securesphere.device.custom_string2.label",
    "imperva.securesphere.device.custom_string2.value",
    "imperva.securesphere.device.custom_string20.label",
    "imperva.securesphere.device.custom_string20.value",
    "imperva.securesphere.device.custom_string21.label",
    "imperva.securesphere.device.custom_string21.value",
    "imperva.securesphere.device.custom_string3.label",
    "imperva.securesphere.device.custom_string3.value",
    "imperva.securesphere.device.custom_string4.label",
    "imperva.securesphere.device.custom_string4.value",
    "imperva.securesphere.device.custom_string5.label",
    "imperva.securesphere.device.custom_string5.value",
    "imperva.securesphere.device.custom_string6.label",
    "imperva.securesphere.device.custom_string6.value",
    "imperva.securesphere.device.custom_string7.label",
    "imperva.securesphere.device.custom_string7.value",
    "imperva.securesphere.device.custom_string8.label",
    "imperva.securesphere.device.custom_string8.value",
    "imperva.securesphere.device.custom_string9.label",
    "imperva.securesphere.device.custom_string9.value",
    "imperva.securesphere.device.event.category",
    "imperva.securesphere.device.event.class_id",
    "imperva.securesphere.device.product",
    "imperva.securesphere.device.receipt_time",
    "imperva.securesphere.device.vendor",
    "imperva.securesphere.device.version",
    "imperva.securesphere.name",
    "imperva.securesphere.severity",
    "imperva.securesphere.source.address",
    "imperva.securesphere.source.port",
    "imperva.securesphere.source.user_name",
    "imperva.securesphere.transport_protocol",
    "imperva.securesphere.version",
    "imperva.session.id",
    "imperva.user_agent.type",
    "imperva.visitor.id",
    "imperva_cloud_waf.event.device.event_class_id",
    "imperva_cloud_waf.event.device.product",
    "imperva_cloud_waf.event.device.vendor",
    "imperva_cloud_waf.event.device.version",
    "imperva_cloud_waf.event.extensions.action",
    "imperva_cloud_waf.event.extensions.additional.req_headers",
    "imperva_cloud_waf.event.extensions.additional.res_headers",
    "imperva_cloud_waf.event.extensions.application_protocol",
    "imperva_cloud_waf.event.extensions.bytes_in",
    "imperva_cloud_waf.event.extensions.ccode",
    "imperva_cloud_waf.event.extensions.cicode",
    "imperva_cloud_waf.event.extensions.cpt",
    "imperva_cloud_waf.event.extensions.cs10",
    "imperva_cloud_waf.event.extensions.cs10Label",
    "imperva_cloud_waf.event.extensions.cs11",
    "imperva_cloud_waf.event.extensions.cs11Label",
    "imperva_cloud_waf.event.extensions.cs7",
    "imperva_cloud_waf.event.extensions.cs7Label",
    "imperva_cloud_waf.event.extensions.cs8",
    "imperva_cloud_waf.event.extensions.cs8Label",
    "imperva_cloud_waf.event.extensions.cs9",
    "imperva_cloud_waf.event.extensions.cs9Label",
    "imperva_cloud_waf.event.extensions.customer",
    "imperva_cloud_waf.event.extensions.destination_process_name",
    "imperva_cloud_waf.event.extensions.device.custom_number1",
    "imperva_cloud_waf.event.extensions.device.custom_number1_label",
    "imperva_cloud_waf.event.extensions.device.custom_string1",
    "imperva_cloud_waf.event.extensions.device.custom_string1_label",
    "imperva_cloud_waf.event.extensions.device.custom_string2",
    "imperva_cloud_waf.event.extensions.device.custom_string2_label",
    "imperva_cloud_waf.event.extensions.device.custom_string3",
    "imperva_cloud_waf.event.extensions.device.custom_string3_label",
    "imperva_cloud_waf.event.extensions.device.custom_string4",
    "imperva_cloud_waf.event.extensions.device.custom_string4_label",
    "imperva_cloud_waf.event.extensions.device.custom_string5",
    "imperva_cloud_waf.event.extensions.device.custom_string5_label",
    "imperva_cloud_waf.event.extensions.device.custom_string6",
    "imperva_cloud_waf.event.extensions.device.custom_string6_label",
    "imperva_cloud_waf.event.extensions.device.externalId",
    "imperva_cloud_waf.event.extensions.device.facility",
    "imperva_cloud_waf.event.extensions.end_time",
    "imperva_cloud_waf.event.extensions.file.permission",
    "imperva_cloud_waf.event.extensions.file.type",
    "imperva_cloud_waf.event.extensions.file_id",
    "imperva_cloud_waf.event.extensions.postbody",
    "imperva_cloud_waf.event.extensions.qstr",
    "imperva_cloud_waf.event.extensions.ref",
    "imperva_cloud_waf.event.extensions.request.client_application",
    "imperva_cloud_waf.event.extensions.request.method",
    "imperva_cloud_waf.event.extensions.request.url",
    "imperva_cloud_waf.event.extensions.sip",
    "imperva_cloud_waf.event.extensions.site.id",
    "imperva_cloud_waf.event.extensions.site.tag",
    "imperva_cloud_waf.event.extensions.source.address",
    "imperva_cloud_waf.event.extensions.source.port",
    "imperva_cloud_waf.event.extensions.source.service_name",
    "imperva_cloud_waf.event.extensions.source.user_id",
    "imperva_cloud_waf.event.extensions.start_time",
    "imperva_cloud_waf.event.extensions.tag",
    "imperva_cloud_waf.event.extensions.ver",
    "imperva_cloud_waf.event.extensions.xff",
    "imperva_cloud_waf.event.name",
    "imperva_cloud_waf.event.severity",
    "imperva_cloud_waf.event.version",
    "input.type",
    "log.file.path",
    "log.offset",
    "log.source.address",
    "log.syslog.appname",
    "log.syslog.facility.code",
    "log.syslog.hostname",
    "log.syslog.msgid",
    "log.syslog.priority",
    "log.syslog.procid",
    "log.syslog.severity.code",
    "log.syslog.version",
    "message",
    "network.application",
    "network.forwarded_ip",
    "network.protocol",
    "network.transport",
    "observer.product",
    "observer.type",
    "observer.vendor",
    "observer.version",
    "organization.name",
    "related.hosts",
    "related.ip",
    "related.user",
    "rule.name",
    "service.name",
    "source.address",
    "source.bytes",
    "source.domain",
    "source.geo.country_iso_code",
    "source.geo.location.lat",
    "source.geo.location.lon",
    "source.ip",
    "source.port",
    "source.registered_domain",
    "source.service.name",
    "source.subdomain",
    "source.top_level_domain",
    "source.user.id",
    "source.user.name",
    "tags",
    "tls.cipher",
    "tls.version",
    "tls.version_protocol",
    "url.domain",
    "url.extension",
    "url.fragment",
    "url.full",
    "url.original",
    "url.password",
    "url.path",
    "url.port",
    "url.query",
    "url.scheme",
    "url.username",
    "user_agent.device.name",
    "user_agent.name",
    "user_agent.original",
    "user_agent.os.full",
    "user_agent.os.name",
    "user_agent.os.version",
    "user_agent.version",
    "wafstream.original_base64",
];

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Slot of `path` (const: used by [`p!`](crate::p) at compile time).
pub const fn slot(path: &str) -> P {
    let mut i = 0;
    while i < PATHS.len() {
        if bytes_eq(PATHS[i].as_bytes(), path.as_bytes()) {
            return P(i as u16);
        }
        i += 1;
    }
    panic!("field path missing from ecs::paths::PATHS")
}

/// Slot of `path` at run time (processors' paths), if it is one of [`PATHS`].
pub fn lookup(path: &str) -> Option<P> {
    PATHS
        .binary_search_by(|p| p.as_bytes().cmp(path.as_bytes()))
        .ok()
        .map(|i| P(i as u16))
}

/// The slot of a static field path, resolved at compile time.
#[macro_export]
macro_rules! p {
    ($path:expr) => {{
        const SLOT: $crate::ecs::paths::P = $crate::ecs::paths::slot($path);
        SLOT
    }};
}

impl P {
    pub fn path(self) -> &'static str {
        PATHS[self.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sorted_unique_and_resolvable() {
        for w in PATHS.windows(2) {
            assert!(w[0].as_bytes() < w[1].as_bytes(), "{} !< {}", w[0], w[1]);
        }
        assert_eq!(crate::p!("source.ip").path(), "source.ip");
        assert_eq!(slot("@timestamp"), P(0));
    }
}
