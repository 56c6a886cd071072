//! The same input files for every wiring (`parse`, `run --file`, `ingress --file` + `worker`):
//! CEF, LEEF and W3C line files, Imperva log files (plain, zlib, gzip, encrypted, W3C header),
//! a gzip line file; and documents keyed by `_id` to compare what the wirings give.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::Comp;

pub const W3C: &str = "#Version: 1.0\n#Fields: date time c-ip cs-method cs-uri sc-status\n2024-01-20 10:00:00 198.51.100.1 GET a.example.com/ 200\n2024-01-20 10:00:01 198.51.100.2 POST a.example.com/login 403\n#Fields: c-ip cs-method cs-uri sc-status\n198.51.100.3 GET b.example.com/other 404\n";

pub fn leef(i: usize) -> String {
    format!(
        "LEEF:2.0|Incapsula|SIEMintegration|0|SQL Injection|^|src=198.51.100.{i}^srcPort=5555^dst=203.0.113.9^dstPort=443^url=a.example.com/q{i}^cat=REQ_BLOCKED_SESSION^proto=HTTPS^calCountryOrRegion=FR\n"
    )
}

pub fn securesphere(n: u64, seed: u64) -> String {
    let mut s = String::new();
    wafstream::generate::lines(wafstream::generate::Kind::SecureSphere, n, seed, &mut s);
    s
}

/// Every kind of input file in `dir`, with the keys of the encrypted one under `keys`.
/// Returns the number of events in them.
pub fn input_files(dir: &Path, keys: &Path) -> usize {
    let key = super::rsa_key(3);
    super::write_key(keys, super::KEY_ID, &key);
    let public = rsa::RsaPublicKey::from(&key);
    // Cloud WAF ids come from fileId + start + end: each file gets its own file ids.
    let cloud = |k: usize| super::cloud_lines(5).replace("fileId=", &format!("fileId={k}0"));
    let w = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("write input");
    w("securesphere.log", securesphere(20, 1).as_bytes());
    w("leef.log", (0..4).map(leef).collect::<String>().as_bytes());
    w("w3c.log", W3C.as_bytes());
    w(
        "plain.imperva",
        &super::container(cloud(1).as_bytes(), Comp::None, None, None),
    );
    w(
        "zlib.imperva",
        &super::container(cloud(2).as_bytes(), Comp::Zlib, None, None),
    );
    w(
        "gzip.imperva",
        &super::container(cloud(3).as_bytes(), Comp::Gzip, None, None),
    );
    w(
        "encrypted.imperva",
        &super::container(cloud(4).as_bytes(), Comp::Zlib, Some((&public, 32)), None),
    );
    w(
        "w3c-header.imperva",
        b"format:W3C\n#Fields: date time c-ip cs-method cs-uri sc-status\n|==|\n2024-01-20 10:00:00 198.51.100.7 GET a.example.com/x 200\n2024-01-20 10:00:02 198.51.100.8 GET a.example.com/y 500\n",
    );
    w("rotated.log.gz", &super::gzip(securesphere(6, 9).as_bytes()));
    20 + 4 + 3 + 4 * 5 + 2 + 6
}

/// One NDJSON line.
pub fn json(l: &str) -> Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
}

/// Documents keyed by `_id`, without the fields that depend on when they were received (an
/// `@timestamp` of today is the receive time of an event without a device time).
pub fn by_id(docs: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    docs.into_iter()
        .map(|mut v| {
            if v["@timestamp"].as_str().is_some_and(|t| t.starts_with(&today)) {
                v.as_object_mut().map(|o| o.remove("@timestamp"));
            }
            if let Some(event) = v.get_mut("event").and_then(Value::as_object_mut) {
                event.remove("ingested");
                event.remove("created");
            }
            let id = v["_id"].as_str().unwrap_or_else(|| panic!("no _id: {v}")).to_string();
            (id, v)
        })
        .collect()
}
