//! Mapping behaviour beyond the peers' cases, written from IMPERVA-FORMATS.md and
//! ECS-MAPPING.md: addresses, encodings, sizes, time zones, dead letters, ids.

use serde_json::Value;
use wafstream::ecs::{Dataset, FrameMeta, Mapped, Mapper, Options, Profile};
use wafstream::parse::W3cFields;

fn meta() -> FrameMeta<'static> {
    FrameMeta {
        received_ms: 1_700_000_000_000,
        input: "tcp",
        source: None,
        peer: Some("192.0.2.10:5140"),
        offset: None,
        tz: None,
        occurrence: None,
        ..FrameMeta::default()
    }
}

fn map_with(line: &[u8], opts: Options) -> (Value, Mapped) {
    let m = Mapper::new(opts);
    let mut out = Vec::new();
    let r = m.map(line, &meta(), None, &mut out);
    let v = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
    (v, r)
}

fn map(line: &str) -> Value {
    map_with(line.as_bytes(), Options::default()).0
}

const SS: &str = "CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|sig-name|High|act=block dst=10.0.0.5 dpt=443 duser=alice src=198.51.100.4 spt=50123 proto=TCP rt=Oct 05 2023 18:33:02 cat=Alert cs1=Policy A cs1Label=Policy cs3=web cs3Label=ServiceName";

#[test]
fn ipv6_addresses_are_typed_and_related() {
    let v = map(
        "CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|n|High|dst=2001:DB8::1 src=fe80::1%eth0 spt=1 dpt=2 cat=Alert",
    );
    assert_eq!(v["destination"]["ip"], "2001:db8::1");
    assert_eq!(v["source"]["ip"], "fe80::1");
    assert_eq!(v["related"]["ip"], serde_json::json!(["2001:db8::1", "fe80::1"]));
    let c =
        map("CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| src=2001:db8:0:0:0:0:0:7 cpt=443 sip=[2001:db8::2] spt=80");
    assert_eq!(c["source"]["ip"], "2001:db8::7");
    assert_eq!(c["destination"]["ip"], "2001:db8::2");
    assert_eq!(c["source"]["port"], 443);
    assert_eq!(c["destination"]["port"], 80);
}

#[test]
fn invalid_ip_is_dropped_with_error_message() {
    let v = map("CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|n|High|src=999.1.1.1 cat=Alert");
    assert!(v["source"].get("ip").is_none());
    assert_eq!(v["event"]["kind"], "pipeline_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("sourceAddress"), "{v}");
}

#[test]
fn multibyte_utf8_is_preserved() {
    let v = map(
        "CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|Zugriff für 東京|High|duser=Jürgen cs1=ポリシー cs1Label=Policy",
    );
    assert_eq!(v["message"], "Zugriff für 東京");
    assert_eq!(v["destination"]["user"]["name"], "Jürgen");
    assert_eq!(
        v["imperva"]["securesphere"]["device"]["custom_string1"]["value"],
        "ポリシー"
    );
}

#[test]
fn invalid_utf8_is_replaced_counted_and_parsed() {
    let mut line = b"CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|n|High|duser=bad".to_vec();
    line.extend_from_slice(&[0xff, 0xfe]);
    line.extend_from_slice(b" src=1.2.3.4");
    let m = Mapper::new(Options::default());
    let mut out = Vec::new();
    let r = m.map(&line, &meta(), None, &mut out);
    assert!(!r.is_dead());
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["destination"]["user"]["name"], "bad\u{fffd}\u{fffd}");
    assert_eq!(v["source"]["ip"], "1.2.3.4");
    assert_eq!(m.counters.invalid_utf8.get(), 1);
}

#[test]
fn fifty_kib_line_maps_whole() {
    let payload = "A".repeat(50 * 1024);
    let line = format!(
        "<14>CEF:0|Imperva Inc.|SecureSphere|14.0|Audit|Audit.DAM|Informative|cs15={payload} cs15Label=RawQuery cs1=x cs2=x cs3=x cs4=x cs5=x cs6=x cs7=x cs8=x cs9=x cs10=x cs11=x cs12=x cs13=x cs14=x"
    );
    assert!(line.len() > 50 * 1024);
    let v = map(&line);
    assert_eq!(
        v["imperva"]["securesphere"]["device"]["custom_string15"]["value"]
            .as_str()
            .unwrap()
            .len(),
        50 * 1024
    );
}

#[test]
fn configured_time_zone_applies() {
    let opts = Options {
        zone: wafstream::parse::time::Zone::parse("America/New_York").unwrap(),
        tz_name: Some("America/New_York".into()),
        ..Options::default()
    };
    let (v, _) = map_with(SS.as_bytes(), opts);
    assert_eq!(v["@timestamp"], "2023-10-05T22:33:02.000Z");
    assert_eq!(v["event"]["timezone"], "America/New_York");
}

#[test]
fn options_control_original_and_duplicates() {
    let v = map(SS);
    assert!(v["event"].get("original").is_none());
    assert!(v["imperva"]["securesphere"].get("source").is_none());
    assert!(v.get("tags").is_none());
    let opts = Options {
        preserve_original_event: true,
        preserve_duplicate_custom_fields: true,
        tags: vec!["dc1".into()],
        namespace: "prod".into(),
        ..Options::default()
    };
    let (v, r) = map_with(SS.as_bytes(), opts);
    assert_eq!(v["event"]["original"], SS);
    assert_eq!(v["imperva"]["securesphere"]["source"]["address"], "198.51.100.4");
    assert_eq!(
        v["tags"],
        serde_json::json!(["preserve_original_event", "preserve_duplicate_custom_fields", "dc1"])
    );
    assert_eq!(v["data_stream"]["namespace"], "prod");
    assert_eq!(r.dataset, Some(Dataset::SecureSphere));
}

#[test]
fn unknown_keys_are_kept_under_extensions() {
    let v = map("CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|n|High|src=1.2.3.4 ad.user=bob weirdKey=x\\=y");
    let ext = &v["imperva"]["securesphere"]["extensions"];
    assert_eq!(ext["ad_user"], "bob");
    assert_eq!(ext["weirdKey"], "x=y");
    let c = map("CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| src=1.2.3.4 caIP=13.13.13.13");
    assert_eq!(c["imperva_cloud_waf"]["event"]["extensions"]["caIP"], "13.13.13.13");
}

#[test]
fn unparseable_frames_become_dead_letters() {
    let (v, r) = map_with(b"hello world, not CEF", Options::default());
    assert!(r.is_dead());
    assert_eq!(v["event"]["kind"], "pipeline_error");
    assert_eq!(v["event"]["original"], "hello world, not CEF");
    assert!(v["error"]["message"].as_str().unwrap().contains("no CEF"));
    assert_eq!(v["log"]["source"]["address"], "192.0.2.10:5140");
    assert_eq!(v["input"]["type"], "tcp");
    // Bytes that are not UTF-8 are kept exactly, in base64.
    let (v, _) = map_with(&[0xde, 0xad, 0xbe, 0xef], Options::default());
    assert_eq!(v["wafstream"]["original_base64"], "3q2+7w==");
    // A short header and an unknown vendor are dead letters too.
    let (v, r) = map_with(b"CEF:0|Imperva Inc.|SecureSphere", Options::default());
    assert!(r.is_dead() && v["error"]["message"].as_str().unwrap().contains("of 7"));
    let (v, r) = map_with(b"CEF:0|Acme|Firewall|1|2|n|3|src=1.2.3.4", Options::default());
    assert!(r.is_dead() && v["error"]["message"].as_str().unwrap().contains("Acme"));
}

#[test]
fn ids_are_deterministic() {
    let (_, a) = map_with(SS.as_bytes(), Options::default());
    let (_, b) = map_with(SS.as_bytes(), Options::default());
    assert_eq!(a.id, b.id);
    assert_eq!(a.id.len(), 32);
    let (_, c) = map_with(SS.replace("alice", "bob").as_bytes(), Options::default());
    assert_ne!(a.id, c.id);
    // Cloud WAF: the same request (fileId, start, end) has one id even if delivered twice
    // with different envelopes.
    let l1 = "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| fileId=9 start=1700000000000 end=1700000000005 src=1.2.3.4";
    let (_, x) = map_with(l1.as_bytes(), Options::default());
    let (_, y) = map_with(format!("<14>Jan 01 00:00:00 relay {l1}").as_bytes(), Options::default());
    assert_eq!(x.id, y.id);
    let (v, _) = map_with(
        l1.as_bytes(),
        Options {
            emit_id: true,
            ..Options::default()
        },
    );
    assert_eq!(v["_id"], x.id.as_str());
}

#[test]
fn leef2_custom_delimiter_maps_to_cloud_waf() {
    let line = "LEEF:2.0|Incapsula|SIEMintegration|0|SQL Injection|^|src=198.51.100.1^srcPort=5555^dst=203.0.113.9^dstPort=443^url=a.example.com/q^cat=REQ_BLOCKED_SESSION^proto=HTTPS^calCountryOrRegion=FR";
    let v = map(line);
    assert_eq!(v["source"]["ip"], "198.51.100.1");
    assert_eq!(v["source"]["port"], 5555);
    assert_eq!(v["destination"]["ip"], "203.0.113.9");
    assert_eq!(v["destination"]["port"], 443);
    assert_eq!(v["url"]["original"], "a.example.com/q");
    assert_eq!(v["event"]["action"], "req-blocked-session");
    assert_eq!(v["event"]["kind"], "alert");
    assert_eq!(v["network"]["application"], "https");
    assert_eq!(v["source"]["geo"]["country_iso_code"], "FR");
}

#[test]
fn w3c_line_maps_to_cloud_waf() {
    let cols = W3cFields::from_directive(
        "#Fields: date time c-ip c-port s-ip s-port cs-method cs-uri sc-status sc-action cs(User-Agent) s-xff",
    )
    .unwrap();
    let m = Mapper::new(Options::default());
    let mut out = Vec::new();
    let r = m.map(
        br#"2024-01-20 10:00:00 198.51.100.7 61000 203.0.113.1 443 POST shop.example.net/login.php 403 REQ_BLOCKED_SECURITY "Mozilla/5.0 (X11; Linux x86_64; rv:99.0) Gecko/20100101 Firefox/99.0" -"#,
        &meta(),
        Some(&cols),
        &mut out,
    );
    assert_eq!(r.dataset, Some(Dataset::CloudWaf));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["@timestamp"], "2024-01-20T10:00:00.000Z");
    assert_eq!(v["source"]["ip"], "198.51.100.7");
    assert_eq!(v["http"]["response"]["status_code"], 403);
    assert_eq!(v["url"]["extension"], "php");
    assert_eq!(v["user_agent"]["name"], "Firefox");
    assert!(v["network"].get("forwarded_ip").is_none(), "`-` is empty");
}

#[test]
fn sekoia_profile_on_securesphere_lines() {
    let (v, _) = map_with(
        SS.as_bytes(),
        Options {
            profile: Profile::Sekoia,
            ..Options::default()
        },
    );
    assert_eq!(v["observer"]["vendor"], "Imperva");
    assert_eq!(v["source"]["ip"], "198.51.100.4");
    assert_eq!(v["destination"]["port"], 443);
    assert_eq!(v["@timestamp"], "2023-10-05T18:33:02Z");
    assert_eq!(v["message"], SS);
}

#[test]
fn syslog_envelope_facts_on_request() {
    let line = format!("<134>1 2023-10-05T18:33:02Z gw01 SecureSphere - - - {SS}");
    let (v, _) = map_with(
        line.as_bytes(),
        Options {
            syslog_fields: true,
            ..Options::default()
        },
    );
    assert_eq!(v["log"]["syslog"]["priority"], 134);
    assert_eq!(v["log"]["syslog"]["facility"]["code"], 16);
    assert_eq!(v["log"]["syslog"]["severity"]["code"], 6);
    assert_eq!(v["log"]["syslog"]["hostname"], "gw01");
    assert_eq!(v["log"]["syslog"]["appname"], "SecureSphere");
    // Default: the envelope is not written.
    assert!(map(&line)["log"].get("syslog").is_none());
}

#[test]
fn rt_layouts_and_missing_year() {
    for (rt, want) in [
        ("31 March 2016 13:04:55", "2016-03-31T13:04:55.000Z"),
        ("(Apr 26 2023 13:08:12)", "2023-04-26T13:08:12.000Z"),
        ("1459429495000", "2016-03-31T13:04:55.000Z"),
        ("Nov 10 08:00:00", "2023-11-10T08:00:00.000Z"),
    ] {
        let v = map(&format!("CEF:0|Imperva Inc.|SecureSphere|1|c|n|Low|rt={rt} cat=Alert"));
        assert_eq!(v["@timestamp"], want, "{rt}");
    }
    let v = map("CEF:0|Imperva Inc.|SecureSphere|1|c|n|Low|rt=whenever cat=Alert");
    assert_eq!(v["event"]["kind"], "pipeline_error");
    assert_eq!(
        v["@timestamp"], "2023-11-14T22:13:20.000Z",
        "falls back to the receive time"
    );
}

#[test]
fn a_frames_own_time_zone_overrides_the_mappers() {
    let m = Mapper::new(Options::default());
    let ny = FrameMeta {
        tz: Some("America/New_York"),
        ..meta()
    };
    let mut out = Vec::new();
    m.map(SS.as_bytes(), &ny, None, &mut out);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["@timestamp"], "2023-10-05T22:33:02.000Z");
    assert_eq!(v["event"]["timezone"], "America/New_York");
    // A zone that does not parse leaves the mapper's own (UTC here).
    let bad = FrameMeta {
        tz: Some("Not/AZone"),
        ..meta()
    };
    let mut out = Vec::new();
    m.map(SS.as_bytes(), &bad, None, &mut out);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["@timestamp"], "2023-10-05T18:33:02.000Z");
}
