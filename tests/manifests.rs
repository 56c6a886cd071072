//! The deployment files agree with the binary: the Kubernetes ConfigMap's `wafstream.toml`
//! validates, and every container / compose command names a real subcommand with real flags.
//! (No container runtime or cluster here: this checks what can be checked without one.)
//!
//! The Helm chart (`helm/wafstream`) is checked with its default values and with each file of
//! `helm/wafstream/examples/`: `helm lint --strict`, `helm template`, every core object against
//! the Kubernetes schemas (`kubernetes-validate --strict`), the custom resources (ServiceMonitor,
//! PrometheusRule, ScaledObject, TriggerAuthentication: no schema there) by hand, every rendered
//! `*.toml` with `wafstream validate-config`, and every container's subcommand, flags and
//! `WAFSTREAM_*` variables against `--help`. `k8s/wafstream.yaml` is the chart's default render.
//! Helm and kubernetes-validate come from `tests/suite.sh` (`WAFSTREAM_HELM`,
//! `WAFSTREAM_K8S_VALIDATE`); without them these tests print SKIPPED, unless
//! `WAFSTREAM_REQUIRE_SERVICES=1` or `CI=true`, which makes them fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

mod support;

use support::tool;

fn wafstream(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(args)
        .output()
        .expect("run wafstream")
}

fn root(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn kubernetes_manifests_match_the_binary() {
    let text = std::fs::read_to_string(root("k8s/wafstream.yaml")).expect("k8s/wafstream.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("yaml"))
        .collect();
    assert!(docs.len() >= 5, "ConfigMap, 2 Deployments, Service, HPA");
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["wafstream.toml"].as_str())
        .expect("ConfigMap with wafstream.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wafstream.toml");
    std::fs::write(&path, config).expect("write");
    let out = wafstream(&["validate-config".into(), path.to_string_lossy().into_owned()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut roles = Vec::new();
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers")
        {
            let mut args: Vec<String> = c["args"]
                .as_sequence()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("arg").to_string())
                .collect();
            // Point --config at the extracted file, then ask for help: flags must all exist.
            if let Some(i) = args.iter().position(|a| a == "--config") {
                args[i + 1] = path.to_string_lossy().into_owned();
            }
            roles.push(args.last().cloned().unwrap_or_default());
            args.push("--help".into());
            let out = wafstream(&args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    roles.sort();
    assert_eq!(roles, vec!["ingress", "worker"]);
}

#[test]
fn compose_commands_match_the_binary() {
    let text = std::fs::read_to_string(root("compose/docker-compose.yml")).expect("compose file");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let mut checked = 0;
    for (_, svc) in doc["services"].as_mapping().expect("services") {
        let Some(cmd) = svc["command"].as_sequence() else {
            continue;
        };
        if svc["build"].is_null() {
            continue; // not our image
        }
        let mut args: Vec<String> = cmd.iter().map(|a| a.as_str().expect("arg").to_string()).collect();
        args.push("--help".into());
        let out = wafstream(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "ingress and worker");
}

/// Helm with its cache, config and data dirs (and HOME) in a temporary directory.
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Option<Helm> {
        let bin = tool("WAFSTREAM_HELM", "tests/services/install-helm.sh")?;
        Some(Helm {
            bin,
            home: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Run helm; panics with its output unless it succeeds. Returns stdout.
    fn run(&self, args: &[&str]) -> String {
        let h = self.home.path();
        let out = Command::new(&self.bin)
            .args(args)
            .env("HOME", h)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `helm template wafstream helm/wafstream [-f values]`.
    fn template(&self, values: Option<&Path>) -> String {
        let mut args = vec!["template", "wafstream", "helm/wafstream"];
        let v;
        if let Some(p) = values {
            v = p.to_string_lossy().into_owned();
            args.extend(["-f", v.as_str()]);
        }
        self.run(&args)
    }
}

const CHART: &str = "helm/wafstream";

/// Default values (`None`) and every example values file.
fn value_sets() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root("helm/wafstream/examples"))
        .expect("helm/wafstream/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "at least two example values files: {files:?}");
    std::iter::once(None).chain(files.into_iter().map(Some)).collect()
}

/// The documents of a multi-document YAML text, each with its own text (to hand to other tools
/// as written: re-serializing would unquote strings such as "off" that YAML 1.1 reads as booleans).
fn yaml_docs_text(text: &str) -> Vec<(serde_yaml::Value, String)> {
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().expect("chunk");
            last.push_str(line);
            last.push('\n');
        }
    }
    chunks
        .into_iter()
        .map(|c| (serde_yaml::from_str::<serde_yaml::Value>(&c).expect("yaml"), c))
        .filter(|(d, _)| !d.is_null())
        .collect()
}

fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    yaml_docs_text(text).into_iter().map(|(d, _)| d).collect()
}

/// Custom resources the chart may render: no schema in kubernetes-validate, checked by hand.
const CUSTOM: &[(&str, &str)] = &[
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
];

fn str_of<'a>(v: &'a serde_yaml::Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq_of<'a>(v: &'a serde_yaml::Value, what: &str) -> &'a [serde_yaml::Value] {
    v.as_sequence()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what}: expected a non-empty list, got {v:?}"))
}

/// The structure of a custom resource (its CRD's schema is not available here).
fn check_custom(d: &serde_yaml::Value, docs: &[serde_yaml::Value]) {
    let kind = str_of(&d["kind"], "kind");
    let name = str_of(&d["metadata"]["name"], "metadata.name");
    assert!(d["metadata"]["labels"].is_mapping(), "{kind} {name}: labels");
    let spec = &d["spec"];
    let workload = |kind: &str, name: &str| docs.iter().any(|o| o["kind"] == kind && o["metadata"]["name"] == name);
    match kind {
        "ServiceMonitor" => {
            let labels = spec["selector"]["matchLabels"]
                .as_mapping()
                .expect("selector.matchLabels");
            let service = docs
                .iter()
                .find(|o| {
                    o["kind"] == "Service"
                        && labels
                            .iter()
                            .all(|(k, v)| o["metadata"]["labels"].as_mapping().and_then(|l| l.get(k)) == Some(v))
                })
                .unwrap_or_else(|| panic!("ServiceMonitor {name}: no Service matches {labels:?}"));
            for e in seq_of(&spec["endpoints"], "ServiceMonitor endpoints") {
                let port = str_of(&e["port"], "endpoint port");
                assert!(
                    seq_of(&service["spec"]["ports"], "ports")
                        .iter()
                        .any(|p| p["name"] == port),
                    "ServiceMonitor {name}: Service has no port {port}"
                );
            }
        }
        "PrometheusRule" => {
            for g in seq_of(&spec["groups"], "PrometheusRule groups") {
                str_of(&g["name"], "group name");
                for r in seq_of(&g["rules"], "group rules") {
                    assert!(
                        r["alert"].is_string() || r["record"].is_string(),
                        "rule without alert/record: {r:?}"
                    );
                    str_of(&r["expr"], "rule expr");
                }
            }
        }
        "ScaledObject" => {
            let target = str_of(&spec["scaleTargetRef"]["name"], "scaleTargetRef.name");
            assert!(
                workload("Deployment", target),
                "ScaledObject {name}: no Deployment {target}"
            );
            assert!(
                !docs
                    .iter()
                    .any(|o| o["kind"] == "HorizontalPodAutoscaler" && o["spec"]["scaleTargetRef"]["name"] == target),
                "ScaledObject {name} and an HPA both scale {target}"
            );
            for t in seq_of(&spec["triggers"], "triggers") {
                assert_eq!(t["type"], "kafka");
                for k in ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"] {
                    assert!(!str_of(&t["metadata"][k], k).is_empty(), "ScaledObject trigger {k}");
                }
                if let Some(a) = t["authenticationRef"]["name"].as_str() {
                    assert!(workload("TriggerAuthentication", a), "no TriggerAuthentication {a}");
                }
            }
        }
        "TriggerAuthentication" => {
            for r in seq_of(&spec["secretTargetRef"], "secretTargetRef") {
                for k in ["parameter", "name", "key"] {
                    str_of(&r[k], k);
                }
            }
        }
        _ => unreachable!(),
    }
}

/// Every core object validates strictly against the Kubernetes schemas; custom resources are
/// checked by [`check_custom`]; any other kind fails.
fn validate_objects(validator: &Path, rendered: &str, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let texts = yaml_docs_text(rendered);
    let docs: Vec<serde_yaml::Value> = texts.iter().map(|(d, _)| d.clone()).collect();
    let mut core = String::new();
    for (d, text) in &texts {
        let api = str_of(&d["apiVersion"], "apiVersion");
        let kind = str_of(&d["kind"], "kind");
        if CUSTOM.contains(&(api, kind)) {
            check_custom(d, &docs);
            continue;
        }
        core.push_str("---\n");
        core.push_str(text);
    }
    let file = dir.path().join("core.yaml");
    std::fs::write(&file, &core).expect("write");
    let out = Command::new(validator)
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: kubernetes-validate --strict:\n{text}");
    assert!(
        !text.contains("Couldn't find schema"),
        "{what}: an object of unknown kind:\n{text}"
    );
}

/// The subcommands a container may run.
const SUBCOMMANDS: &[&str] = &["run", "ingress", "worker", "es-setup", "parse", "validate-config"];

/// Every rendered `*.toml` validates; every container's arguments name a real subcommand with
/// real flags, `--config` names a rendered file, and every `WAFSTREAM_*` variable it sets is one
/// that subcommand reads. Returns the subcommands of the containers.
fn check_workloads(docs: &[serde_yaml::Value], what: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        for (k, v) in d["data"].as_mapping().expect("data") {
            let k = str_of(k, "data key");
            if !k.ends_with(".toml") {
                continue;
            }
            let path = dir.path().join(k);
            std::fs::write(&path, str_of(v, k)).expect("write");
            let out = wafstream(&["validate-config".into(), path.to_string_lossy().into_owned()]);
            assert!(
                out.status.success(),
                "{what}: {k} does not validate:\n{}{}",
                String::from_utf8_lossy(&out.stderr),
                str_of(v, k)
            );
            files.push(k.to_string());
        }
    }
    assert!(
        files.iter().any(|f| f == "wafstream.toml"),
        "{what}: ConfigMap with wafstream.toml"
    );
    let mut roles = Vec::new();
    for d in docs
        .iter()
        .filter(|d| ["Deployment", "StatefulSet"].contains(&d["kind"].as_str().unwrap_or("")))
    {
        let name = str_of(&d["metadata"]["name"], "name");
        for c in seq_of(&d["spec"]["template"]["spec"]["containers"], "containers") {
            let mut args: Vec<String> = seq_of(&c["args"], "args")
                .iter()
                .map(|a| str_of(a, "arg").to_string())
                .collect();
            let i = args
                .iter()
                .position(|a| a == "--config")
                .unwrap_or_else(|| panic!("{what}: {name}: no --config"));
            let file = Path::new(&args[i + 1])
                .file_name()
                .expect("config file name")
                .to_string_lossy()
                .into_owned();
            assert!(
                args[i + 1].starts_with("/etc/wafstream/") && files.contains(&file),
                "{what}: {name}: --config {} is not a rendered file ({files:?})",
                args[i + 1]
            );
            args[i + 1] = dir.path().join(&file).to_string_lossy().into_owned();
            let sub = args
                .iter()
                .find(|a| SUBCOMMANDS.contains(&a.as_str()))
                .unwrap_or_else(|| panic!("{what}: {name}: no subcommand in {args:?}"))
                .clone();
            args.push("--help".into());
            let out = wafstream(&args);
            assert!(
                out.status.success(),
                "{what}: {name}: {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let help = String::from_utf8_lossy(&out.stdout);
            for e in c["env"].as_sequence().map(|s| s.as_slice()).unwrap_or_default() {
                let var = str_of(&e["name"], "env name");
                if var.starts_with("WAFSTREAM_") {
                    assert!(
                        help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
                        "{what}: {name}: `{sub}` reads no {var}"
                    );
                }
            }
            roles.push(sub);
        }
    }
    roles
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let (Some(helm), Some(validator)) = (
        Helm::new(),
        tool(
            "WAFSTREAM_K8S_VALIDATE",
            "tests/services/install-kubernetes-validate.sh",
        ),
    ) else {
        return;
    };
    for values in value_sets() {
        let what = values
            .as_deref()
            .map_or("default values".to_string(), |p| p.display().to_string());
        let mut lint = vec!["lint", "--strict", CHART];
        let v;
        if let Some(p) = &values {
            v = p.to_string_lossy().into_owned();
            lint.extend(["-f", v.as_str()]);
        }
        helm.run(&lint);
        let rendered = helm.template(values.as_deref());
        validate_objects(&validator, &rendered, &what);
        let docs = yaml_docs(&rendered);
        let mut roles = check_workloads(&docs, &what);
        roles.sort();
        roles.dedup();
        assert!(
            roles.contains(&"ingress".to_string()) && roles.contains(&"worker".to_string()),
            "{what}: ingress and worker: {roles:?}"
        );
        // Every pod runs as non-root with a read-only root filesystem and no capabilities.
        for d in docs.iter().filter(|d| d["spec"]["template"]["spec"].is_mapping()) {
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{what}"
            );
            for c in seq_of(&pod["containers"], "containers") {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{what}");
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            }
        }
    }
}

/// The optional objects all render (with placeholder Secret names) and validate together.
#[test]
fn helm_chart_renders_every_option() {
    let (Some(helm), Some(validator)) = (
        Helm::new(),
        tool(
            "WAFSTREAM_K8S_VALIDATE",
            "tests/services/install-kubernetes-validate.sh",
        ),
    ) else {
        return;
    };
    let sets = [
        "ingress.tls.enabled=true",
        "ingress.tls.existingSecret=tls",
        "ingress.tls.clientCaKey=ca.crt",
        "ingress.hec.enabled=true",
        "ingress.hec.tls=true",
        "ingress.hec.tokensSecret=hec",
        "ingress.service.externalTrafficPolicy=Local",
        "kafka.sasl.existingSecret=kafka",
        "kafka.tls.existingSecret=kafka-tls",
        "kafka.tls.certKey=tls.crt",
        "kafka.tls.keyKey=tls.key",
        "elasticsearch.existingSecret=es",
        "elasticsearch.tls.existingSecret=es-tls",
        "keda.enabled=true",
        "keda.sasl=scram_sha512",
        "keda.tls=enable",
        "collector.enabled=true",
        "collector.config.pull.urls[0]=https://logs.example.com/1_2",
        "collector.config.pull.api_ids[0]=2",
        "collector.config.s3.bucket=waf-logs",
        "collector.config.listen.files[0]=/logs/*.log",
        "collector.pull.apiKeySecret=api",
        "collector.s3.credentialsSecret=s3",
        "collector.privateKeys.existingSecret=keys",
        "collector.privateKeys.items[0].key=k1",
        "collector.privateKeys.items[0].publicKeyId=1",
        "worker.config.elasticsearch.urls[0]=https://es:9200",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        "networkPolicy.enabled=true",
    ];
    let mut args = vec!["template", "wafstream", CHART];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let rendered = helm.run(&args);
    let docs = yaml_docs(&rendered);
    for kind in [
        "StatefulSet",
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "no {kind} rendered");
    }
    assert!(
        !docs.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"),
        "KEDA replaces the HPA"
    );
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap");
    let json = dashboard["data"]
        .as_mapping()
        .expect("data")
        .values()
        .next()
        .expect("dashboard");
    serde_json::from_str::<serde_json::Value>(str_of(json, "dashboard")).expect("dashboard JSON");
    let collector = docs.iter().find(|d| d["kind"] == "StatefulSet").expect("collector");
    assert_eq!(collector["spec"]["replicas"], 1);
    assert_eq!(
        collector["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "state"
    );
    validate_objects(&validator, &rendered, "every option");
    check_workloads(&docs, "every option");
    // A missing Secret for an enabled listener is an error, not a broken pod.
    let h = helm.home.path();
    let out = Command::new(&helm.bin)
        .args(["template", "wafstream", CHART, "--set", "ingress.hec.enabled=true"])
        .env("HOME", h)
        .env("HELM_CACHE_HOME", h.join("cache"))
        .env("HELM_CONFIG_HOME", h.join("config"))
        .env("HELM_DATA_HOME", h.join("data"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run helm");
    assert!(!out.status.success(), "HEC without a token Secret must not render");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokensSecret"));
}

/// `k8s/wafstream.yaml` is `helm template wafstream helm/wafstream` under a header comment.
/// `WAFSTREAM_UPDATE_MANIFESTS=1 cargo test --test manifests` rewrites it.
#[test]
fn kubernetes_manifest_is_the_charts_default_render() {
    let Some(helm) = Helm::new() else {
        return;
    };
    let path = root("k8s/wafstream.yaml");
    let text = std::fs::read_to_string(&path).expect("k8s/wafstream.yaml");
    let header_len: usize = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.len() + 1)
        .sum();
    let (header, body) = text.split_at(header_len);
    assert!(
        header.contains("helm template wafstream helm/wafstream"),
        "header names the command"
    );
    let rendered = helm.template(None);
    if body != rendered && std::env::var("WAFSTREAM_UPDATE_MANIFESTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{header}{rendered}")).expect("write k8s/wafstream.yaml");
        return;
    }
    assert!(
        body == rendered,
        "k8s/wafstream.yaml is not the chart's default render: regenerate it with \
         WAFSTREAM_UPDATE_MANIFESTS=1 cargo test --test manifests"
    );
}
