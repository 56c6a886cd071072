//! The deployment files agree with the binary: the Kubernetes ConfigMap's `wafstream.toml`
//! validates, and every container / compose command names a real subcommand with real flags.
//! (No container runtime or cluster here: this checks what can be checked without one.)

use std::process::Command;

use serde::Deserialize;

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
