//! The alert rules and the Grafana dashboard shipped in `helm/wafstream/files/` (and mounted by
//! `compose/`): promtool checks the rules and runs their unit tests
//! (`tests/deploy/alerts.test.yaml`), every dashboard query is valid PromQL (checked by promtool
//! as recording rules), the dashboard type-checks against Grafana's own schema types
//! (`@grafana/schema` with `tsc --strict`), and every `wafstream_*` series the rules and the
//! dashboard query is one the binary exports; `compose/`'s stack validates against the Compose
//! specification and its Prometheus configuration checks. Tools:
//! `tests/services/install-promtool.sh` (`WAFSTREAM_PROMTOOL`),
//! `tests/services/install-grafana-schema.sh` (`WAFSTREAM_GRAFANA_SCHEMA`) and
//! `tests/services/install-check-jsonschema.sh` (`WAFSTREAM_CHECK_JSONSCHEMA`), all run by
//! `tests/suite.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod support;

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

use support::tool;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root("helm/wafstream/files/dashboard.json")).expect("dashboard.json");
    serde_json::from_str(&text).expect("dashboard JSON")
}

/// Every query of the dashboard, with Grafana's interval variables given values.
fn dashboard_queries() -> Vec<String> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr");
            out.push(e.replace("$__rate_interval", "5m").replace("$__range", "1h"));
        }
    }
    assert!(out.len() >= 20, "the dashboard has its queries: {out:?}");
    out
}

fn series_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bwafstream_[a-z0-9_]+").expect("regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = tool("WAFSTREAM_PROMTOOL", "tests/services/install-promtool.sh") else {
        return;
    };
    let checked = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root("helm/wafstream/files/alerts.yaml")));
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(root("tests/deploy/alerts.test.yaml")));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = tool("WAFSTREAM_PROMTOOL", "tests/services/install-promtool.sh") else {
        return;
    };
    let queries = dashboard_queries();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("wafstream:dashboard_query_{i}"), "expr": q}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard-rules.yaml");
    // JSON is YAML.
    std::fs::write(&path, file.to_string()).expect("write");
    let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&path));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

/// `tsc --strict` against `@grafana/schema`'s `Dashboard` type: wrong types and unknown keys
/// in the dashboard and its panels are errors (panel options stay loosely typed there).
#[test]
fn dashboard_type_checks_against_grafanas_schema() {
    let Some(dir) = tool("WAFSTREAM_GRAFANA_SCHEMA", "tests/services/install-grafana-schema.sh") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(dir.join("node_modules"), tmp.path().join("node_modules")).expect("symlink");
    let check = |d: &Value| {
        let ts = format!(
            "import type {{ Dashboard }} from \"@grafana/schema\";\nexport const d: Dashboard = {};\n",
            serde_json::to_string_pretty(d).expect("json")
        );
        std::fs::write(tmp.path().join("d.ts"), ts).expect("write");
        Command::new(dir.join("node_modules/.bin/tsc"))
            .args([
                "--noEmit",
                "--strict",
                "--moduleResolution",
                "node",
                "--target",
                "es2020",
                "d.ts",
            ])
            .current_dir(tmp.path())
            .output()
            .expect("tsc")
    };
    let d = dashboard();
    let ok = check(&d);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    // The check sees a key the schema does not know.
    let mut bad = d.clone();
    bad["panels"][1]["legnd"] = Value::Bool(true);
    let refused = check(&bad);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("legnd"));
}

/// The series the binary can export: every `wafstream_*` metric name in its sources (each is
/// registered where its counters live; see `src/telemetry.rs`; a histogram's name stands for its
/// `_bucket`, `_sum` and `_count` series), with the names in unit tests excluded.
fn exported() -> BTreeSet<String> {
    let re = regex::Regex::new(r#""(wafstream_[a-z0-9_]+)""#).expect("regex");
    let histogram = regex::Regex::new(r#"HistogramOpts::new\(\s*"(wafstream_[a-z0-9_]+)""#).expect("regex");
    let mut names = BTreeSet::new();
    let mut stack = vec![root("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").map(|e| e.expect("entry")) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read");
                // Only what is outside the unit tests of the file.
                let text = text.split("#[cfg(test)]").next().unwrap_or("");
                names.extend(re.captures_iter(text).map(|c| c[1].to_string()));
                // A histogram is exported as its `_bucket`, `_sum` and `_count` series.
                for h in histogram.captures_iter(text) {
                    names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{}{s}", &h[1])));
                }
            }
        }
    }
    assert!(names.len() > 50, "{names:?}");
    names
}

#[test]
fn rules_and_dashboard_query_only_metrics_the_binary_exports() {
    let exported = exported();
    let alerts = std::fs::read_to_string(root("helm/wafstream/files/alerts.yaml")).expect("alerts");
    let queried: BTreeSet<String> = series_names(&alerts)
        .into_iter()
        .chain(dashboard_queries().iter().flat_map(|q| series_names(q)))
        .collect();
    let unknown: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
    // What the alerts must cover (issue 13): lag, dead letters, Elasticsearch refusals and
    // retries, UDP drops, collector gaps and lag.
    for must in [
        "wafstream_worker_consumer_lag",
        "wafstream_dead_letters_total",
        "wafstream_es_rejected_total",
        "wafstream_es_retried_total",
        "wafstream_ingress_udp_dropped_total",
        "wafstream_pull_gaps_total",
        "wafstream_pull_lag_seconds",
        "wafstream_s3_lag_seconds",
    ] {
        assert!(series_names(&alerts).contains(must), "no alert on {must}");
    }
}

/// `compose/docker-compose.yml` validates against the Compose specification's JSON schema
/// (check-jsonschema's bundled copy); a service with an unknown key does not.
#[test]
fn compose_stack_validates_against_the_compose_specification() {
    let Some(check) = tool(
        "WAFSTREAM_CHECK_JSONSCHEMA",
        "tests/services/install-check-jsonschema.sh",
    ) else {
        return;
    };
    let compose = root("compose/docker-compose.yml");
    let out = run(Command::new(&check)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&compose));
    assert!(out.contains("ok -- validation done"), "{out}");
    let text = std::fs::read_to_string(&compose).expect("compose");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    for svc in [
        "kafka",
        "topics",
        "elasticsearch",
        "kibana",
        "ingress",
        "worker",
        "prometheus",
        "grafana",
    ] {
        assert!(!doc["services"][svc].is_null(), "service {svc}");
    }
    assert_eq!(doc["services"]["ingress"]["deploy"]["replicas"].as_u64(), Some(2));
    assert_eq!(doc["services"]["worker"]["deploy"]["replicas"].as_u64(), Some(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        text.replace(
            "    deploy: { replicas: 2 }\n  prometheus:",
            "    deploy: { replicas: 2 }\n    replicaz: 2\n  prometheus:",
        ),
    )
    .expect("write");
    let refused = Command::new(&check)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&bad)
        .output()
        .expect("check-jsonschema");
    assert!(!refused.status.success(), "an unknown key is refused");
}

/// compose's Prometheus configuration (scraping every replica, wafstream's rules) checks with
/// promtool, rules included; Grafana is provisioned with the dashboard file itself.
#[test]
fn compose_prometheus_and_grafana_use_the_shipped_rules_and_dashboard() {
    let same = |link: &str, target: &str| {
        let a = std::fs::canonicalize(root(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(
            a,
            std::fs::canonicalize(root(target)).expect("target"),
            "{link} is {target}"
        );
    };
    same("compose/prometheus/alerts.yaml", "helm/wafstream/files/alerts.yaml");
    same(
        "compose/grafana/dashboards/wafstream.json",
        "helm/wafstream/files/dashboard.json",
    );
    let Some(promtool) = tool("WAFSTREAM_PROMTOOL", "tests/services/install-promtool.sh") else {
        return;
    };
    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(root("compose/prometheus/prometheus.yml")));
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
}

/// A real Prometheus (Debian's 2.42, from the package promtool comes with) scrapes a running
/// `wafstream run`, loads the shipped alert rules (all healthy) and answers a query with the
/// documents the pipeline counted.
#[test]
fn prometheus_scrapes_a_running_pipeline_and_loads_the_rules() {
    let Some(promtool) = tool("WAFSTREAM_PROMTOOL", "tests/services/install-promtool.sh") else {
        return;
    };
    let prometheus = promtool.with_file_name("prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.ndjson");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wafstream"));
    cmd.args([
        "run",
        "--listen-tcp",
        "127.0.0.1:0",
        "--listen-udp",
        "off",
        "--metrics-addr",
        "127.0.0.1:0",
        "--output",
    ])
    .arg(&out);
    let (mut run, rx) = support::spawn_with_stderr(cmd);
    let at = support::listening(&rx, &["tcp", "metrics"]);
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&at["tcp"]).expect("tcp");
        s.write_all(support::inputs::securesphere(7, 3).as_bytes())
            .expect("write");
    }
    std::fs::copy(root("helm/wafstream/files/alerts.yaml"), dir.path().join("alerts.yaml")).expect("copy rules");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [alerts.yaml]\nscrape_configs:\n  - job_name: wafstream\n    static_configs: [{{targets: ['{}']}}]\n",
            at["metrics"]
        ),
    )
    .expect("write config");
    let web = format!("127.0.0.1:{}", support::services::free_port());
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"));
    let (mut prom, _prx) = support::spawn_with_stderr(cmd);
    let get = |path: &str| -> Value {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("http://{web}{path}")])
            .output()
            .expect("curl");
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let query = "/api/v1/query?query=sum(wafstream_documents_total)";
    loop {
        let v = get(query);
        if v["data"]["result"][0]["value"][1] == "7" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus never saw the 7 documents: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let rules = get("/api/v1/rules");
    let all: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(all.len(), 13, "{rules}");
    assert!(
        all.iter().all(|r| r["health"] == "ok" || r["health"] == "unknown"),
        "{rules}"
    );
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = run.kill();
    let _ = run.wait();
}
