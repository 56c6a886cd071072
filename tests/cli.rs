//! `wafstream parse` as scripts call it: stdout order, dead letters, exit codes, containers.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{Comp, KEY_ID, cloud_lines, container, rsa_key, write_key};

fn wafstream(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wafstream");
    if let Some(input) = stdin {
        // A run that fails on its arguments exits without reading stdin; the pipe is then
        // closed under the writer, which is not the test's failure.
        match child.stdin.take().expect("stdin").write_all(input) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
    }
    child.wait_with_output().expect("wait")
}

fn docs(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const GOOD: &str = "CEF:0|Imperva Inc.|SecureSphere|15.1.0|Signature|n|High|src=1.2.3.4 cat=Alert";

#[test]
fn one_document_per_event_in_input_order_with_dead_letters_inline() {
    let input = format!("{GOOD}\nnot an event\n\n{}\r\n", GOOD.replace("1.2.3.4", "5.6.7.8"));
    let out = wafstream(&["parse", "-"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(1), "a dead letter makes the exit status 1");
    let d = docs(&out);
    assert_eq!(d.len(), 3, "empty lines are not events");
    assert_eq!(d[0]["source"]["ip"], "1.2.3.4");
    assert_eq!(d[1]["event"]["kind"], "pipeline_error");
    assert_eq!(d[1]["event"]["original"], "not an event");
    // log.offset is the line's byte offset, as `run` and Filebeat write it.
    assert_eq!(d[1]["log"]["offset"], GOOD.len() + 1, "{d:?}");
    assert_eq!(d[2]["source"]["ip"], "5.6.7.8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 documents, 1 dead-lettered"), "{stderr}");
}

#[test]
fn dlq_file_diverts_failures_and_success_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq = dir.path().join("dlq.ndjson");
    let input = format!("{GOOD}\ngarbage\n");
    let out = wafstream(&["parse", "--dlq", dlq.to_str().unwrap(), "-"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(docs(&out).len(), 1);
    let dead = std::fs::read_to_string(&dlq).expect("dlq");
    let dead: Value = serde_json::from_str(dead.trim()).expect("dlq json");
    assert_eq!(dead["event"]["original"], "garbage");
    let ok = wafstream(&["parse", "-"], Some(GOOD.as_bytes()));
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn profile_and_options_flags() {
    let line = "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| start=1700000000000 end=1700000000002 src=1.2.3.4 act=REQ_PASSED";
    let out = wafstream(
        &["parse", "--profile", "sekoia", "--tag", "x", "-"],
        Some(line.as_bytes()),
    );
    let d = docs(&out);
    assert_eq!(d[0]["event"]["type"], serde_json::json!(["allowed", "connection"]));
    assert_eq!(d[0]["tags"], serde_json::json!(["x"]));
    let out = wafstream(
        &["parse", "--preserve-original-event", "--emit-id", "-"],
        Some(line.as_bytes()),
    );
    let d = docs(&out);
    assert_eq!(d[0]["event"]["original"], line);
    assert_eq!(d[0]["_id"].as_str().map(str::len), Some(32));
    let bad = wafstream(&["parse", "--tz", "Mars/Olympus", "-"], Some(line.as_bytes()));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--tz"));
}

#[test]
fn help_explains_the_interface() {
    let out = wafstream(&["parse", "--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--profile",
        "--tz",
        "--preserve-original-event",
        "--preserve-duplicate-custom-fields",
        "--keys-dir",
        "--dlq",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn encrypted_compressed_file_with_keys_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rsa_key(3);
    write_key(&dir.path().join("keys"), KEY_ID, &key);
    let plain = cloud_lines(25);
    let file = container(plain.as_bytes(), Comp::Gzip, Some((&key.to_public_key(), 32)), None);
    let path = dir.path().join("1234_5.log");
    std::fs::write(&path, &file).expect("write");
    let keys = dir.path().join("keys");
    let out = wafstream(
        &["parse", "--keys-dir", keys.to_str().unwrap(), path.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let d = docs(&out);
    assert_eq!(d.len(), 25);
    for (i, doc) in d.iter().enumerate() {
        assert_eq!(doc["url"]["original"], format!("shop.example.net/cart/{i}.html"));
        assert_eq!(doc["log"]["file"]["path"], path.to_str().unwrap());
    }
    // Without the key: one dead letter for the file, naming the problem, exit 1.
    let out = wafstream(
        &[
            "parse",
            "--keys-dir",
            dir.path().to_str().unwrap(),
            path.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let d = docs(&out);
    assert_eq!(d.len(), 1);
    assert!(d[0]["error"]["message"].as_str().unwrap().contains("Private.key"));
    assert!(d[0]["wafstream"]["original_base64"].is_string());
}

#[test]
fn checksum_mismatch_warns_and_keeps_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.log");
    std::fs::write(
        &path,
        container(cloud_lines(2).as_bytes(), Comp::Zlib, None, Some("00")),
    )
    .expect("write");
    let out = wafstream(&["parse", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(docs(&out).len(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

#[test]
fn w3c_file_with_fields_directive_in_body() {
    let body = "#Version: 1.0\n#Fields: c-ip cs-method cs-uri sc-status\n198.51.100.1 GET a.example.com/ 200\n198.51.100.2 POST a.example.com/login 403\n";
    let out = wafstream(&["parse", "-"], Some(body.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let d = docs(&out);
    assert_eq!(d.len(), 2, "directives are not events");
    assert_eq!(d[1]["http"]["response"]["status_code"], 403);
}

#[test]
fn overlong_line_is_cut_and_dead_lettered() {
    let long = format!("{GOOD} cs1={}", "x".repeat(5000));
    let input = format!("{long}\n{GOOD}\n");
    let out = wafstream(&["parse", "--max-line-bytes", "1000", "-"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    let d = docs(&out);
    assert_eq!(d.len(), 2);
    assert!(
        d[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds --max-line-bytes 1000")
    );
    assert_eq!(d[0]["event"]["original"].as_str().unwrap().len(), 1000);
    assert_eq!(d[1]["source"]["ip"], "1.2.3.4");
}

#[test]
fn missing_input_file_is_a_usage_error() {
    let out = wafstream(&["parse", "/nonexistent/file.log"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.log"));
}

fn wafstream_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wafstream");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("wafstream.toml");
    std::fs::write(&cfg, "[mapping]\nprofile = \"sekoia\"\ntags = [\"from-file\"]\n").expect("write");
    let line = "CEF:0|Incapsula|SIEMintegration|1|1|Normal|0| src=1.2.3.4 start=1700000000000";
    let c = cfg.to_str().unwrap();
    // File: sekoia shape and the file's tag.
    let d = docs(&wafstream_env(&["--config", c, "parse", "-"], &[], line.as_bytes()));
    assert_eq!(d[0]["event"]["dataset"], "imperva-waf");
    assert_eq!(d[0]["tags"], serde_json::json!(["from-file"]));
    // Environment beats the file.
    let d = docs(&wafstream_env(
        &["--config", c, "parse", "-"],
        &[("WAFSTREAM_PROFILE", "elastic")],
        line.as_bytes(),
    ));
    assert_eq!(d[0]["data_stream"]["dataset"], "imperva_cloud_waf.event");
    // A flag beats both.
    let d = docs(&wafstream_env(
        &["--config", c, "parse", "--profile", "sekoia", "-"],
        &[("WAFSTREAM_PROFILE", "elastic")],
        line.as_bytes(),
    ));
    assert_eq!(d[0]["event"]["dataset"], "imperva-waf");
    // WAFSTREAM_CONFIG names the file too.
    let d = docs(&wafstream_env(
        &["parse", "-"],
        &[("WAFSTREAM_CONFIG", c)],
        line.as_bytes(),
    ));
    assert_eq!(d[0]["event"]["dataset"], "imperva-waf");
}

#[test]
fn validate_config_reports_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[mapping]\nprofile = \"x\"\ntz = \"Nowhere/Else\"\n[listen]\nudp = \"nope\"\n",
    )
    .expect("write");
    let out = wafstream(&["validate-config", cfg.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mapping.profile") && err.contains("mapping.tz") && err.contains("listen.udp"),
        "{err}"
    );
    assert!(err.contains("3 problem(s)"), "{err}");
    std::fs::write(&cfg, "[kafka]\nbrokers = \"k:9092\"\n").expect("write");
    let out = wafstream(&["validate-config", cfg.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WAFSTREAM_BROKERS=k:9092"));
    // A bad file given to any command stops it before it starts.
    let out = wafstream(
        &[
            "--config",
            cfg.with_extension("missing").to_str().unwrap(),
            "parse",
            "-",
        ],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_config_masks_secrets_and_checks_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[kafka]\nbrokers = \"k:9092\"\n[kafka.properties]\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"hunter2-s3cret\"\n\"ssl.key.password\" = \"k3y-s3cret\"\n",
    )
    .expect("write");
    let out = wafstream(&["validate-config", cfg.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2") && !all.contains("k3y-s3cret"), "{all}");
    assert!(
        all.contains("sasl.password=****") && all.contains("sasl.username=svc"),
        "{all}"
    );
    // A checkpoint or output in a folder that does not exist fails at once, naming it.
    std::fs::write(
        &cfg,
        "[listen]\ncheckpoint = \"/nonexistent/wafstream/cp.json\"\n[output]\ndlq = \"/nonexistent/dead.ndjson\"\n",
    )
    .expect("write");
    let out = wafstream(&["validate-config", cfg.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.checkpoint") && err.contains("/nonexistent/wafstream"),
        "{err}"
    );
    assert!(err.contains("output.dlq"), "{err}");
    let out = wafstream(
        &[
            "run",
            "--listen-tcp",
            "off",
            "--listen-udp",
            "off",
            "--file",
            "/nonexistent/*.log",
            "--checkpoint",
            "/nonexistent/wafstream/cp.json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/wafstream/cp.json") && err.contains("cannot be written"),
        "{err}"
    );
}

/// A line that is not valid UTF-8 is mapped from a lossy copy; its exact bytes are kept in
/// `wafstream.original_base64` (as they are in a dead letter's).
#[test]
fn invalid_utf8_keeps_the_exact_bytes() {
    use base64::Engine;
    let mut line = GOOD.replace("cat=Alert", "cat=Al").into_bytes();
    line.extend_from_slice(b"\xff\xfeert\n");
    let out = wafstream(&["parse", "-"], Some(&line));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let d = docs(&out);
    assert_eq!(d.len(), 1);
    let kept = d[0]["wafstream"]["original_base64"]
        .as_str()
        .expect("original bytes kept");
    let bytes = base64::engine::general_purpose::STANDARD.decode(kept).expect("base64");
    assert_eq!(bytes, &line[..line.len() - 1]);
    assert_eq!(d[0]["source"]["ip"], "1.2.3.4");
}

/// Every option of every subcommand is also a `WAFSTREAM_*` variable and a file key, from
/// the one definition: the flags' own.
#[test]
fn every_option_is_a_flag_a_variable_and_a_file_key() {
    let cmd = wafstream::cli::command();
    // clap's own consistency checks (unique names, valid references), on every subcommand.
    cmd.clone().debug_assert();
    let args = wafstream::config::all_args(&cmd);
    let mut missing = Vec::new();
    let mut options = 0;
    for (path, arg) in &args {
        // `generate` writes sample data and `validate-config` reads a file: tools, not settings.
        if arg.is_positional()
            || path.starts_with("generate")
            || path.starts_with("validate-config")
            || matches!(arg.get_id().as_str(), "help" | "version" | "config")
        {
            continue;
        }
        options += 1;
        let flag = format!("{path} --{}", arg.get_long().unwrap_or("?"));
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            missing.push(format!("{flag}: no WAFSTREAM_* variable"));
            continue;
        };
        if !env.starts_with("WAFSTREAM_") {
            missing.push(format!("{flag}: variable {env} lacks the WAFSTREAM_ prefix"));
        }
        if !wafstream::config::KEYS.iter().any(|(_, e)| *e == env) {
            missing.push(format!("{flag}: {env} has no configuration file key"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert!(options > 60, "only {options} options walked");
    // And no file key points at a variable no flag reads.
    for (key, env) in wafstream::config::KEYS {
        assert!(
            args.iter()
                .any(|(_, a)| a.get_env().and_then(|e| e.to_str()) == Some(*env)),
            "{key} sets {env}, which no flag reads"
        );
    }
}

/// `validate-config --print-default` lists every key, and what it prints is itself a valid
/// configuration once uncommented where a default exists.
#[test]
fn validate_config_prints_every_key_and_its_help_lists_them() {
    let out = wafstream(&["validate-config", "--print-default"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for (key, env) in wafstream::config::KEYS {
        let Some((section, name)) = key.split_once('.') else {
            assert!(
                (text.contains(&format!("[[{key}]]")) || text.contains(&format!("[[{key}."))) && text.contains(env),
                "{key} missing"
            );
            continue;
        };
        assert!(text.contains(&format!("[{section}]")), "{section} missing");
        assert!(
            text.contains(&format!("#{name} = ")) || *key == "kafka.properties",
            "{key} missing:\n{text}"
        );
        assert!(text.contains(env), "{env} missing");
    }
    // Uncomment every key that has a default: the file validates.
    let defaults: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(kv) if kv.contains(" = ") && !kv.contains("not set by default") && !kv.starts_with(' ') => {
                format!("{kv}\n")
            }
            _ if l.starts_with('[') => format!("{l}\n"),
            _ => String::new(),
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("defaults.toml");
    std::fs::write(&cfg, &defaults).expect("write");
    let out = wafstream(&["validate-config", cfg.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{defaults}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = wafstream(&["validate-config", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Configuration keys") && help.contains("#give_up_after_ms = 0"),
        "{help}"
    );
}

/// The README's configuration examples (Configuration, Processors) validate as written.
#[test]
fn the_readme_configuration_example_is_valid() {
    readme_example_is_valid("Configuration");
    readme_example_is_valid("Processors");
}

fn readme_example_is_valid(heading: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme.split(&format!("\n## {heading}")).nth(1).expect("the section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .expect("a toml example in the Configuration section");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("readme.toml");
    std::fs::write(&cfg, example).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wafstream"))
        .args(["validate-config", cfg.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("validate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{example}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("WAFSTREAM_"),
        "nothing set"
    );
}
