//! `wafstream es-setup`: the component and index templates that give the data streams
//! `logs-imperva.securesphere-*`, `logs-imperva_cloud_waf.event-*`, `logs-imperva.siem-*` (JSON
//! events pushed over HEC, kept whole as one flattened field) and the dead letters' stream
//! their ECS field types (ip, date, long, geo_point, boolean, wildcard, flattened JSON), as
//! Elastic's integrations map the same fields. Generated from the field paths the mappers write
//! (`ecs::paths`), so a new field cannot be forgotten. Running it again is safe.
//!
//! It lives beside Elastic's Imperva integrations: its index templates are named
//! `wafstream-<data stream>` at priority [`PRIORITY`] (below Fleet's 200), so where an
//! integration's templates are installed they apply (and wafstream's documents skip their
//! ingest pipeline, see [`super::elasticsearch`]), and wafstream's apply everywhere else. A
//! template of wafstream's name that something else manages is left alone unless forced; the
//! ones earlier wafstream versions installed under Fleet's names are removed.

use serde_json::{Map, Value, json};

use super::elasticsearch::Auth;
use crate::ecs::paths::PATHS;

/// Component template with the mappings, shared by every index template.
pub const COMPONENT: &str = "wafstream-ecs-mappings";

/// (index template name, pattern) pairs.
pub const INDEX_TEMPLATES: &[(&str, &str)] = &[
    ("wafstream-logs-imperva.securesphere", "logs-imperva.securesphere-*"),
    (
        "wafstream-logs-imperva_cloud_waf.event",
        "logs-imperva_cloud_waf.event-*",
    ),
    ("wafstream-logs-imperva.siem", "logs-imperva.siem-*"),
    ("wafstream-logs-wafstream.dead_letter", "logs-wafstream.dead_letter-*"),
];

/// Priority of wafstream's index templates: below the 200 Fleet gives an integration's, so an
/// installed integration's templates win for new data streams, and the two never tie (two
/// templates of one priority matching one pattern are refused).
pub const PRIORITY: u32 = 150;

/// Names earlier wafstream versions used for their index templates (Fleet's own names); removed
/// when they carry wafstream's marker.
pub const LEGACY_INDEX_TEMPLATES: &[&str] = &[
    "logs-imperva.securesphere",
    "logs-imperva_cloud_waf.event",
    "logs-wafstream.dead_letter",
];

/// What `es-setup` may do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace templates of wafstream's names that something else manages.
    pub force: bool,
    /// Data stream retention (`30d`, `90d`, ...) on Elasticsearch 8.11+ (data stream lifecycle);
    /// `None`: keep everything.
    pub retention: Option<String>,
}

/// Default retention of wafstream's data streams.
pub const DEFAULT_RETENTION: &str = "90d";

/// The Elasticsearch type of a field path (leaves only; objects are implied).
pub fn field_type(path: &str) -> Value {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let ends = |s: &str| path.ends_with(s);
    match path {
        "@timestamp" | "event.start" | "event.end" => return json!({"type": "date"}),
        "message" | "error.message" => return json!({"type": "match_only_text"}),
        "event.original" => return json!({"type": "keyword", "index": false, "doc_values": false}),
        "url.original" | "url.full" => {
            return json!({"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}});
        }
        "user_agent.original" => return json!({"type": "keyword", "fields": {"text": {"type": "match_only_text"}}}),
        "event.duration" => return json!({"type": "double"}),
        "imperva.session.id" => return json!({"type": "unsigned_long"}),
        _ => {}
    }
    if ends(".ip")
        || path == "related.ip"
        || path == "network.forwarded_ip"
        || ends("securesphere.destination.address")
        || ends("securesphere.source.address")
        || ends("extensions.sip")
        || ends("extensions.source.address")
        || ends("extensions.xff")
    {
        return json!({"type": "ip"});
    }
    if ends("receipt_time") || ends("start_time") || ends("end_time") {
        return json!({"type": "date"});
    }
    if leaf == "port"
        || leaf == "bytes"
        || leaf == "status_code"
        || leaf == "severity" && !path.starts_with("imperva.securesphere")
        || leaf == "bytes_in"
        || leaf == "cpt"
        || leaf == "custom_number1"
        || leaf == "offset"
        || leaf == "priority"
        || path.ends_with("facility.code")
        || path.ends_with("severity.code")
    {
        return json!({"type": "long"});
    }
    if ends("extensions.cs7") || ends("extensions.cs8") {
        return json!({"type": "double"});
    }
    if ends("device.custom_string2") && path.starts_with("imperva_cloud_waf")
        || ends("device.custom_string3") && path.starts_with("imperva_cloud_waf")
        || ends("js_support")
        || ends("cookie_support")
    {
        return json!({"type": "boolean"});
    }
    if ends("req_headers")
        || ends("res_headers")
        || ends("extensions.cs10")
        || ends("extensions.cs11")
        || ends("request.headers")
        || ends("response.headers")
    {
        return json!({"type": "flattened"});
    }
    json!({"type": "keyword", "ignore_above": 1024})
}

/// The `properties` tree for every static path (geo points are mapped at their object).
pub fn properties() -> Value {
    let mut root = Map::new();
    for path in PATHS {
        if *path == "_id" {
            continue;
        }
        let (path, ty) = match path
            .strip_suffix(".location.lat")
            .or_else(|| path.strip_suffix(".location.lon"))
        {
            Some(base) => (format!("{base}.location"), json!({"type": "geo_point"})),
            None => (path.to_string(), field_type(path)),
        };
        let segs: Vec<&str> = path.split('.').collect();
        let mut cur = &mut root;
        for s in &segs[..segs.len() - 1] {
            let node = cur.entry(s.to_string()).or_insert_with(|| json!({"properties": {}}));
            cur = node
                .as_object_mut()
                .and_then(|o| o.get_mut("properties"))
                .and_then(Value::as_object_mut)
                .expect("object node");
        }
        cur.insert(segs[segs.len() - 1].to_string(), ty);
    }
    // JSON events of producers with no mapping yet: their members, whatever their shapes,
    // as one flattened field (no mapping explosion, no type conflicts between producers).
    if let Some(imperva) = root
        .get_mut("imperva")
        .and_then(|i| i.get_mut("properties"))
        .and_then(Value::as_object_mut)
    {
        imperva.insert("siem".into(), json!({"type": "flattened"}));
    }
    Value::Object(root)
}

/// Which search engine a cluster runs: the mapping types differ (Elasticsearch's `flattened`
/// is OpenSearch's `flat_object`), and so does retention (data stream lifecycle from
/// Elasticsearch 8.11; ISM policies on OpenSearch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Elasticsearch,
    OpenSearch,
}

impl Engine {
    /// From the body of `GET /` (`version.distribution` is `opensearch` on OpenSearch).
    pub fn from_root(root: &Value) -> Engine {
        match root["version"]["distribution"].as_str() {
            Some(d) if d.eq_ignore_ascii_case("opensearch") => Engine::OpenSearch,
            _ => Engine::Elasticsearch,
        }
    }
}

/// Whether the cluster takes a data stream lifecycle in index templates (Elasticsearch 8.11+).
fn has_lifecycle(engine: Engine, root: &Value) -> bool {
    if engine != Engine::Elasticsearch {
        return false;
    }
    let v = root["version"]["number"].as_str().unwrap_or("");
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (8, 11)
}

/// The component template body for `engine`.
pub fn component_template_for(engine: Engine) -> Value {
    let mut t = component_template();
    if engine == Engine::OpenSearch {
        flattened_to(&mut t, "flat_object");
    }
    t
}

/// Every `{"type": "flattened"}` in a mapping becomes `{"type": <to>}`.
fn flattened_to(v: &mut Value, to: &str) {
    match v {
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) == Some("flattened") {
                o.insert("type".into(), Value::String(to.into()));
            }
            o.values_mut().for_each(|c| flattened_to(c, to));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| flattened_to(c, to)),
        _ => {}
    }
}

/// The component template body (Elasticsearch's types).
pub fn component_template() -> Value {
    json!({
        "template": {
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keyword": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}
                ],
                "properties": properties()
            }
        },
        "_meta": {"managed_by": "wafstream", "description": "ECS field types of wafstream documents"}
    })
}

/// An index template body for `pattern`.
pub fn index_template(pattern: &str) -> Value {
    json!({
        "index_patterns": [pattern],
        "data_stream": {},
        "priority": PRIORITY,
        "composed_of": [COMPONENT],
        "_meta": {"managed_by": "wafstream"}
    })
}

/// [`index_template`] with a data stream retention (Elasticsearch's data stream lifecycle).
pub fn index_template_with_retention(pattern: &str, retention: &str) -> Value {
    let mut t = index_template(pattern);
    t["template"] = json!({"lifecycle": {"data_retention": retention}});
    t
}

/// Whether a template (the object under `index_template` / `component_template`) is
/// wafstream's.
fn owned(t: &Value) -> bool {
    t["_meta"]["managed_by"].as_str() == Some("wafstream")
}

fn authed(req: reqwest::RequestBuilder, auth: &Auth) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => req,
        Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
        Auth::ApiKey(k) => req.header("authorization", format!("ApiKey {k}")),
        Auth::Bearer(t) => req.bearer_auth(t),
    }
}

/// Which engine `host` runs (`GET /`). A root the credentials may not read, or that does
/// not say, is taken for Elasticsearch.
pub async fn engine(client: &reqwest::Client, host: &str, auth: &Auth) -> Engine {
    Engine::from_root(&root(client, host, auth).await)
}

/// `GET /` (the cluster's name and version), or `null` when it cannot be read.
async fn root(client: &reqwest::Client, host: &str, auth: &Auth) -> Value {
    let url = format!("{}/", host.trim_end_matches('/'));
    match authed(client.get(&url), auth).send().await {
        Ok(r) if r.status().is_success() => {
            let text = r.text().await.unwrap_or_default();
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
        Ok(r) => {
            tracing::debug!(%url, status = %r.status(), "cannot read the cluster's root; assuming Elasticsearch");
            Value::Null
        }
        Err(e) => {
            tracing::debug!(%url, error = %e, "cannot read the cluster's root; assuming Elasticsearch");
            Value::Null
        }
    }
}

/// `GET path`: the body on 200, `None` on 404, an error otherwise.
async fn get(client: &reqwest::Client, host: &str, auth: &Auth, path: &str) -> anyhow::Result<Option<Value>> {
    let url = format!("{}/{path}", host.trim_end_matches('/'));
    let resp = authed(client.get(&url), auth)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match status.as_u16() {
        200 => Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null))),
        404 => Ok(None),
        _ => anyhow::bail!("{url}: HTTP {status}: {text}"),
    }
}

async fn delete(client: &reqwest::Client, host: &str, auth: &Auth, path: &str) -> anyhow::Result<()> {
    let url = format!("{}/{path}", host.trim_end_matches('/'));
    let resp = authed(client.delete(&url), auth)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() && status.as_u16() != 404 {
        anyhow::bail!("{url}: HTTP {status}: {}", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

/// The existing index templates matching any of wafstream's patterns: (name, template).
async fn index_templates(client: &reqwest::Client, host: &str, auth: &Auth) -> anyhow::Result<Vec<(String, Value)>> {
    let all = get(client, host, auth, "_index_template").await?.unwrap_or(Value::Null);
    Ok(all["index_templates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| Some((t["name"].as_str()?.to_string(), t["index_template"].clone())))
                .collect()
        })
        .unwrap_or_default())
}

async fn put(client: &reqwest::Client, host: &str, auth: &Auth, path: &str, body: &Value) -> anyhow::Result<()> {
    let url = format!("{}/{path}", host.trim_end_matches('/'));
    let req = client
        .put(&url)
        .header("content-type", "application/json")
        .body(body.to_string());
    let resp = authed(req, auth)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: HTTP {status}: {text}");
    }
    Ok(())
}

/// Install (or replace) wafstream's templates on the first host that answers; returns what it
/// found and did, line by line.
pub async fn install(
    client: &reqwest::Client,
    hosts: &[String],
    auth: &Auth,
    opts: &Options,
) -> anyhow::Result<Vec<String>> {
    let mut last = anyhow::anyhow!("no Elasticsearch URL given");
    for host in hosts {
        match install_on(client, host, auth, opts).await {
            Ok(done) => return Ok(done),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn install_on(client: &reqwest::Client, host: &str, auth: &Auth, opts: &Options) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let root = root(client, host, auth).await;
    let engine = Engine::from_root(&root);
    let retention = opts.retention.as_deref().filter(|_| has_lifecycle(engine, &root));
    if let (Some(r), None) = (&opts.retention, retention) {
        done.push(format!(
            "retention {r} not set: {engine:?} {} has no data stream lifecycle (use an ILM/ISM policy)",
            root["version"]["number"].as_str().unwrap_or("(version unknown)")
        ));
    }
    let existing = index_templates(client, host, auth).await?;
    // What else writes these data streams (e.g. Elastic's integrations, installed by Fleet).
    for (name, t) in &existing {
        let ours = INDEX_TEMPLATES.iter().any(|(n, _)| n == name);
        let patterns = t["index_patterns"].to_string();
        let relevant = INDEX_TEMPLATES
            .iter()
            .any(|(_, p)| patterns.contains(p.trim_end_matches('*')));
        if relevant && !ours && !owned(t) {
            done.push(format!(
                "found index template {name} (managed by {}, priority {}): left alone; where it applies, wafstream writes into its data streams without running its ingest pipeline",
                t["_meta"]["managed_by"].as_str().unwrap_or("someone else"),
                t["priority"]
            ));
        }
        if LEGACY_INDEX_TEMPLATES.contains(&name.as_str()) && owned(t) {
            delete(client, host, auth, &format!("_index_template/{name}")).await?;
            done.push(format!(
                "removed index template {name} (an earlier wafstream's, under Fleet's name)"
            ));
        }
    }
    let component = get(client, host, auth, &format!("_component_template/{COMPONENT}")).await?;
    let theirs = component
        .as_ref()
        .and_then(|c| c["component_templates"].get(0))
        .is_some_and(|c| !owned(&c["component_template"]));
    if theirs && !opts.force {
        anyhow::bail!(
            "component template {COMPONENT} exists and is not managed by wafstream: left alone (run with --force to replace it)"
        );
    }
    put(
        client,
        host,
        auth,
        &format!("_component_template/{COMPONENT}"),
        &component_template_for(engine),
    )
    .await?;
    done.push(format!("component template {COMPONENT} ({engine:?} types)"));
    for (name, pattern) in INDEX_TEMPLATES {
        if let Some((_, t)) = existing.iter().find(|(n, _)| n == name) {
            if !owned(t) && !opts.force {
                done.push(format!(
                    "index template {name} exists and is not managed by wafstream: left alone (--force replaces it)"
                ));
                continue;
            }
        }
        let body = match retention {
            Some(r) => index_template_with_retention(pattern, r),
            None => index_template(pattern),
        };
        put(client, host, auth, &format!("_index_template/{name}"), &body).await?;
        done.push(format!(
            "index template {name} ({pattern}, priority {PRIORITY}{})",
            retention.map(|r| format!(", retention {r}")).unwrap_or_default()
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opensearch_gets_flat_object_where_elasticsearch_gets_flattened() {
        let os = Engine::from_root(&json!({"version": {"distribution": "opensearch", "number": "2.19.1"}}));
        assert_eq!(os, Engine::OpenSearch);
        assert_eq!(
            Engine::from_root(&json!({"version": {"number": "8.15.0"}})),
            Engine::Elasticsearch
        );
        assert_eq!(Engine::from_root(&Value::Null), Engine::Elasticsearch);
        let es = component_template_for(Engine::Elasticsearch).to_string();
        let os = component_template_for(Engine::OpenSearch).to_string();
        assert!(es.contains(r#""type":"flattened""#) && !es.contains("flat_object"));
        assert!(os.contains(r#""type":"flat_object""#) && !os.contains("flattened"));
        assert_eq!(es.matches("flattened").count(), os.matches("flat_object").count());
    }

    #[test]
    fn types_follow_ecs() {
        assert_eq!(field_type("source.ip")["type"], "ip");
        assert_eq!(field_type("related.ip")["type"], "ip");
        assert_eq!(field_type("@timestamp")["type"], "date");
        assert_eq!(field_type("imperva.securesphere.device.receipt_time")["type"], "date");
        assert_eq!(field_type("destination.port")["type"], "long");
        assert_eq!(field_type("http.response.status_code")["type"], "long");
        assert_eq!(
            field_type("imperva.securesphere.severity")["type"],
            "keyword",
            "SecureSphere severity is text"
        );
        assert_eq!(field_type("url.original")["type"], "wildcard");
        assert_eq!(
            field_type("imperva_cloud_waf.event.extensions.device.custom_string2")["type"],
            "boolean"
        );
        assert_eq!(
            field_type("imperva_cloud_waf.event.extensions.additional.req_headers")["type"],
            "flattened"
        );
        assert_eq!(field_type("observer.vendor")["type"], "keyword");
    }

    #[test]
    fn the_tree_nests_every_path_and_maps_geo_points_whole() {
        let p = properties();
        assert_eq!(
            p["source"]["properties"]["geo"]["properties"]["location"]["type"],
            "geo_point"
        );
        assert_eq!(
            p["client"]["properties"]["geo"]["properties"]["location"]["type"],
            "geo_point"
        );
        assert_eq!(p["source"]["properties"]["ip"]["type"], "ip");
        assert!(p.get("_id").is_none());
        // Every leaf has a type; every inner node has properties.
        fn check(v: &Value, path: &str) {
            let o = v.as_object().expect("object");
            if let Some(props) = o.get("properties") {
                for (k, c) in props.as_object().expect("properties") {
                    check(c, &format!("{path}.{k}"));
                }
            } else {
                assert!(o.contains_key("type"), "{path} has no type");
            }
        }
        for (k, v) in p.as_object().expect("root") {
            check(v, k);
        }
    }
}
