//! Processors: a Beats-style list of actions applied, in order, to each mapped document before
//! it is written, on the document itself (no JSON round trip). Names, parameters and the `when`
//! condition language follow Beats processors, so a list ports from a Beats or Elastic Agent
//! integration with at most a change of syntax (YAML → TOML, or given as YAML/JSON).
//!
//! Actions: `drop_event`, `drop_fields`, `include_fields`, `add_fields`, `add_tags`,
//! `add_labels`, `rename`, `copy_fields`, `truncate_fields`, `rate_limit`. Conditions:
//! `equals`, `contains`, `regexp`, `range`, `network`, `has_fields`, `or`, `and`, `not`.
//! Everything is checked and compiled once (paths resolved, regexps and CIDR tables built);
//! [`Processors::parse`] reports every problem of every processor at once, with its index.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::doc::{Doc, Field, Val};

/// What a document's processors decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// A compiled processor list.
#[derive(Debug)]
pub struct Processors {
    list: Vec<Processor>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct Processor {
    name: &'static str,
    when: Option<Cond>,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Drop,
    DropFields {
        fields: Vec<(String, Field)>,
        ignore_missing: bool,
    },
    IncludeFields {
        fields: Vec<String>,
    },
    /// Values made once; setting one clones an `Arc` at most.
    AddFields {
        fields: Vec<(Field, Val<'static>)>,
    },
    AddTags {
        target: Field,
        tags: Vec<String>,
    },
    Rename {
        pairs: Vec<(String, Field, Field)>,
        ignore_missing: bool,
        fail_on_error: bool,
    },
    Copy {
        pairs: Vec<(String, Field, Field)>,
        ignore_missing: bool,
        fail_on_error: bool,
    },
    Truncate {
        fields: Vec<(String, Field)>,
        max: usize,
        chars: bool,
        ignore_missing: bool,
        fail_on_error: bool,
    },
    RateLimit(RateLimit),
}

#[derive(Debug)]
enum Cond {
    Equals(Vec<(Field, Value)>),
    Contains(Vec<(Field, String)>),
    Regexp(Vec<(Field, regex::Regex)>),
    Range(Vec<(Field, Bounds)>),
    Network(Vec<(Field, Vec<Net>)>),
    HasFields(Vec<Field>),
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Default)]
struct Bounds {
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Net {
    Cidr(IpAddr, u8),
    Private,
    Loopback,
    Public,
    Multicast,
    LinkLocal,
    Unspecified,
}

/// A token bucket per key (the values of `fields`), shared by every mapping thread.
#[derive(Debug)]
struct RateLimit {
    per_sec: f64,
    burst: f64,
    fields: Vec<Field>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Per processor: documents it dropped, changed, or failed on.
#[derive(Debug, Default)]
pub struct Stats {
    /// `""` for the list every document goes through, else the input kind of a per-input list.
    scope: String,
    names: Vec<String>,
    counts: Vec<[AtomicU64; 3]>,
}

impl Stats {
    /// How processor `i` is named in metrics and reports: `3`, or `tcp/3` in a per-input list.
    fn label(&self, i: usize) -> String {
        if self.scope.is_empty() {
            i.to_string()
        } else {
            format!("{}/{i}", self.scope)
        }
    }

    /// `(index, name, dropped, changed, errors)` per processor.
    pub fn rows(&self) -> Vec<(usize, &str, u64, u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    i,
                    self.names[i].as_str(),
                    c[0].load(Ordering::Relaxed),
                    c[1].load(Ordering::Relaxed),
                    c[2].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

const ACTIONS: &[&str] = &[
    "drop_event",
    "drop_fields",
    "include_fields",
    "add_fields",
    "add_tags",
    "add_labels",
    "rename",
    "copy_fields",
    "truncate_fields",
    "rate_limit",
];

/// Problems found while compiling, each prefixed with the processor's index and action.
struct Problems<'p> {
    at: String,
    list: &'p mut Vec<String>,
}

impl Problems<'_> {
    fn push(&mut self, msg: impl std::fmt::Display) {
        self.list.push(format!("{}: {msg}", self.at));
    }
}

/// A path resolved once (checked by [`check_path`] or [`check_target`]).
fn field(path: &str) -> Field {
    Field::resolve(path).unwrap_or(Field::Dynamic {
        node: 0,
        path: path.to_string(),
    })
}

/// A path read (conditions, fields dropped, renamed or truncated): one the documents have.
fn check_path(path: &str, p: &mut Problems<'_>) {
    if path.is_empty() || !Doc::readable_path(path) {
        p.push(format!("{path:?} is not a field wafstream's documents have"));
    }
}

/// A path written (`add_fields`, the `to` of `rename`/`copy_fields`, `add_tags`' target).
fn check_target(path: &str, p: &mut Problems<'_>) {
    if !Doc::writable_path(path) {
        p.push(format!(
            "{path:?} cannot be set: its parent is not an object of the documents"
        ));
    }
}

fn strings(v: Option<&Value>, what: &str, p: &mut Problems<'_>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                other => {
                    p.push(format!("{what}: {other} is not a string"));
                    None
                }
            })
            .collect(),
        Some(other) => {
            p.push(format!("{what}: expected a list of strings, not {other}"));
            Vec::new()
        }
        None => {
            p.push(format!("{what} is required"));
            Vec::new()
        }
    }
}

fn flag(params: &serde_json::Map<String, Value>, key: &str, default: bool, p: &mut Problems<'_>) -> bool {
    match params.get(key) {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            p.push(format!("{key}: expected true or false, not {other}"));
            default
        }
    }
}

/// `from`/`to` pairs of `rename` and `copy_fields`.
fn pairs(v: Option<&Value>, p: &mut Problems<'_>) -> Vec<(String, Field, Field)> {
    let Some(Value::Array(items)) = v else {
        p.push("fields: expected a list of {from, to}");
        return Vec::new();
    };
    let mut out = Vec::new();
    for it in items {
        match (
            it.get("from").and_then(Value::as_str),
            it.get("to").and_then(Value::as_str),
        ) {
            (Some(f), Some(t)) => {
                check_path(f, p);
                check_target(t, p);
                if matches!(field(t), Field::Object { .. }) {
                    p.push(format!("{t:?} is an object, not a field"));
                }
                out.push((f.to_string(), field(f), field(t)));
            }
            _ => p.push(format!("fields: {it} needs string from and to")),
        }
    }
    out
}

/// Flatten `{a: {b: 1}}` under `target` into `("target.a.b", 1)`.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_net(s: &str) -> Option<Net> {
    Some(match s {
        "private" => Net::Private,
        "loopback" => Net::Loopback,
        "public" => Net::Public,
        "multicast" => Net::Multicast,
        "link_local_unicast" | "link_local" => Net::LinkLocal,
        "unspecified" => Net::Unspecified,
        _ => {
            let (ip, len) = match s.split_once('/') {
                Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
                None => {
                    let ip = s.parse::<IpAddr>().ok()?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
            };
            if len > if ip.is_ipv4() { 32 } else { 128 } {
                return None;
            }
            Net::Cidr(ip, len)
        }
    })
}

fn cond(v: &Value, p: &mut Problems<'_>) -> Option<Cond> {
    let Value::Object(m) = v else {
        p.push(format!("when: expected a condition, not {v}"));
        return None;
    };
    if m.len() != 1 {
        // Several conditions side by side mean all of them, as in Beats.
        let all: Vec<Cond> = m
            .iter()
            .filter_map(|(k, v)| cond(&Value::Object([(k.clone(), v.clone())].into_iter().collect()), p))
            .collect();
        return Some(Cond::And(all));
    }
    let (kind, arg) = m.iter().next()?;
    let fields = |p: &mut Problems<'_>| -> Vec<(String, Value)> {
        match arg {
            Value::Object(f) => f
                .iter()
                .map(|(k, v)| {
                    check_path(k, p);
                    (k.clone(), v.clone())
                })
                .collect(),
            other => {
                p.push(format!("{kind}: expected field: value pairs, not {other}"));
                Vec::new()
            }
        }
    };
    Some(match kind.as_str() {
        "equals" => Cond::Equals(fields(p).into_iter().map(|(k, v)| (field(&k), v)).collect()),
        "contains" => Cond::Contains(
            fields(p)
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    other => {
                        p.push(format!("contains.{k}: expected a string, not {other}"));
                        None
                    }
                })
                .map(|(k, x)| (field(&k), x))
                .collect(),
        ),
        "regexp" => Cond::Regexp(
            fields(p)
                .into_iter()
                .filter_map(|(k, v)| match v.as_str().map(regex::Regex::new) {
                    Some(Ok(r)) => Some((k, r)),
                    Some(Err(e)) => {
                        p.push(format!("regexp.{k}: {e}"));
                        None
                    }
                    None => {
                        p.push(format!("regexp.{k}: expected a pattern string, not {v}"));
                        None
                    }
                })
                .map(|(k, x)| (field(&k), x))
                .collect(),
        ),
        "range" => Cond::Range(
            fields(p)
                .into_iter()
                .filter_map(|(k, v)| {
                    let Value::Object(b) = &v else {
                        p.push(format!("range.{k}: expected gt/gte/lt/lte, not {v}"));
                        return None;
                    };
                    let mut bounds = Bounds::default();
                    for (op, x) in b {
                        let Some(n) = number(x) else {
                            p.push(format!("range.{k}.{op}: {x} is not a number"));
                            continue;
                        };
                        match op.as_str() {
                            "gt" => bounds.gt = Some(n),
                            "gte" => bounds.gte = Some(n),
                            "lt" => bounds.lt = Some(n),
                            "lte" => bounds.lte = Some(n),
                            other => p.push(format!("range.{k}: unknown operator {other:?} (gt, gte, lt, lte)")),
                        }
                    }
                    Some((field(&k), bounds))
                })
                .collect(),
        ),
        "network" => Cond::Network(
            fields(p)
                .into_iter()
                .map(|(k, v)| {
                    let names: Vec<String> = match &v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                        _ => Vec::new(),
                    };
                    if names.is_empty() {
                        p.push(format!("network.{k}: expected a CIDR, a named range or a list of them, not {v}"));
                    }
                    let nets = names
                        .iter()
                        .filter_map(|n| {
                            let r = parse_net(n);
                            if r.is_none() {
                                p.push(format!("network.{k}: {n:?} is neither a CIDR nor a named range (private, loopback, public, multicast, link_local_unicast, unspecified)"));
                            }
                            r
                        })
                        .collect();
                    (field(&k), nets)
                })
                .collect(),
        ),
        "has_fields" => {
            let f = strings(Some(arg), "has_fields", p);
            for x in &f {
                check_path(x, p);
            }
            Cond::HasFields(f.iter().map(|x| field(x)).collect())
        }
        "or" | "and" => {
            let Value::Array(items) = arg else {
                p.push(format!("{kind}: expected a list of conditions"));
                return None;
            };
            let list = items.iter().filter_map(|c| cond(c, p)).collect();
            if kind == "or" { Cond::Or(list) } else { Cond::And(list) }
        }
        "not" => Cond::Not(Box::new(cond(arg, p)?)),
        other => {
            p.push(format!(
                "unknown condition {other:?} (equals, contains, regexp, range, network, has_fields, or, and, not)"
            ));
            return None;
        }
    })
}

/// `"1000/m"` → events per second.
fn rate(s: &str) -> Option<f64> {
    let (n, unit) = s.split_once('/')?;
    let n: f64 = n.trim().parse().ok()?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    (n > 0.0).then_some(n / per)
}

impl Processors {
    /// Compile a list given as Beats writes it (`[{action: {params, when}}]`), from TOML, YAML
    /// or JSON. `Err` lists every problem, each with its processor's index.
    pub fn parse(list: &Value) -> Result<Processors, Vec<String>> {
        Processors::parse_scoped(list, "")
    }

    /// [`Processors::parse`] for the list of one input kind (`scope`), named after it in
    /// problems, metrics and reports.
    pub fn parse_scoped(list: &Value, scope: &str) -> Result<Processors, Vec<String>> {
        let at = if scope.is_empty() {
            "processors".to_string()
        } else {
            format!("input_processors.{scope}")
        };
        let mut problems = Vec::new();
        let Value::Array(items) = list else {
            return Err(vec![format!("{at}: expected a list")]);
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some((action, params)) = item.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next()) else {
                problems.push(format!(
                    "{at}[{i}]: expected one action, e.g. {{drop_event = {{...}}}}, not {item}"
                ));
                continue;
            };
            let mut p = Problems {
                at: format!("{at}[{i}] {action}"),
                list: &mut problems,
            };
            let Some(name) = ACTIONS.iter().find(|a| **a == action) else {
                p.push(format!("unknown action (one of {})", ACTIONS.join(", ")));
                continue;
            };
            let empty = serde_json::Map::new();
            let params = match params {
                Value::Object(m) => m,
                Value::Null => &empty,
                other => {
                    p.push(format!("expected parameters, not {other}"));
                    continue;
                }
            };
            let when = params.get("when").and_then(|w| cond(w, &mut p));
            let action = match *name {
                "drop_event" => Some(Action::Drop),
                "drop_fields" => {
                    let fields = strings(params.get("fields"), "fields", &mut p);
                    for f in &fields {
                        check_path(f, &mut p);
                    }
                    Some(Action::DropFields {
                        fields: fields.into_iter().map(|f| (f.clone(), field(&f))).collect(),
                        ignore_missing: flag(params, "ignore_missing", false, &mut p),
                    })
                }
                "include_fields" => {
                    let fields = strings(params.get("fields"), "fields", &mut p);
                    for f in &fields {
                        check_path(f, &mut p);
                    }
                    Some(Action::IncludeFields { fields })
                }
                "add_fields" | "add_labels" => {
                    let (target, key) = if *name == "add_labels" {
                        ("labels".to_string(), "labels")
                    } else {
                        (
                            params
                                .get("target")
                                .and_then(Value::as_str)
                                .unwrap_or("fields")
                                .to_string(),
                            "fields",
                        )
                    };
                    let mut fields = Vec::new();
                    match params.get(key) {
                        Some(v @ Value::Object(_)) => flatten(&target, v, &mut fields),
                        _ => p.push(format!("{key}: expected a table of values")),
                    }
                    for (path, v) in &fields {
                        if v.is_object()
                            || (v.is_array() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
                        {
                            p.push(format!(
                                "{path}: only strings, numbers, booleans and lists of strings can be added"
                            ));
                        }
                        check_target(path, &mut p);
                        if *name == "add_labels" && path.matches('.').count() > 1 {
                            p.push(format!("{path}: labels are flat (one level under labels)"));
                        }
                    }
                    Some(Action::AddFields {
                        fields: fields.iter().map(|(path, v)| (field(path), json_val(v))).collect(),
                    })
                }
                "add_tags" => {
                    let target = params
                        .get("target")
                        .and_then(Value::as_str)
                        .unwrap_or("tags")
                        .to_string();
                    check_target(&target, &mut p);
                    Some(Action::AddTags {
                        target: field(&target),
                        tags: strings(params.get("tags"), "tags", &mut p),
                    })
                }
                "rename" | "copy_fields" => {
                    let pairs = pairs(params.get("fields"), &mut p);
                    let ignore_missing = flag(params, "ignore_missing", false, &mut p);
                    let fail_on_error = flag(params, "fail_on_error", true, &mut p);
                    Some(if *name == "rename" {
                        Action::Rename {
                            pairs,
                            ignore_missing,
                            fail_on_error,
                        }
                    } else {
                        Action::Copy {
                            pairs,
                            ignore_missing,
                            fail_on_error,
                        }
                    })
                }
                "truncate_fields" => {
                    let fields = strings(params.get("fields"), "fields", &mut p);
                    for f in &fields {
                        check_path(f, &mut p);
                    }
                    let (max, chars) = match (params.get("max_bytes"), params.get("max_characters")) {
                        (Some(b), None) => (b.as_u64(), false),
                        (None, Some(c)) => (c.as_u64(), true),
                        _ => (None, false),
                    };
                    if max.is_none() {
                        p.push("one of max_bytes or max_characters (a positive integer) is required");
                    }
                    Some(Action::Truncate {
                        fields: fields.into_iter().map(|f| (f.clone(), field(&f))).collect(),
                        max: max.unwrap_or(0) as usize,
                        chars,
                        ignore_missing: flag(params, "ignore_missing", false, &mut p),
                        fail_on_error: flag(params, "fail_on_error", true, &mut p),
                    })
                }
                "rate_limit" => {
                    let limit = params.get("limit").and_then(Value::as_str).unwrap_or("");
                    let per_sec = rate(limit);
                    if per_sec.is_none() {
                        p.push(format!(
                            "limit: {limit:?} is not a rate such as \"1000/m\" (per s, m or h)"
                        ));
                    }
                    let fields = match params.get("fields") {
                        None => Vec::new(),
                        v => strings(v, "fields", &mut p),
                    };
                    for f in &fields {
                        check_path(f, &mut p);
                    }
                    let fields: Vec<Field> = fields.iter().map(|f| field(f)).collect();
                    let per_sec = per_sec.unwrap_or(1.0);
                    Some(Action::RateLimit(RateLimit {
                        per_sec,
                        // Beats lets a full bucket's worth through at once.
                        burst: (per_sec
                            * if limit.ends_with("/s") {
                                1.0
                            } else if limit.ends_with("/m") {
                                60.0
                            } else {
                                3600.0
                            })
                        .max(1.0),
                        fields,
                        buckets: Mutex::new(HashMap::new()),
                    }))
                }
                _ => None,
            };
            if let Some(action) = action {
                out.push(Processor { name, when, action });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let stats = Arc::new(Stats {
            scope: scope.to_string(),
            names: out.iter().map(|p| p.name.to_string()).collect(),
            counts: out.iter().map(|_| Default::default()).collect(),
        });
        Ok(Processors { list: out, stats })
    }

    /// Parse from text: YAML or JSON (a list, or a map with a `processors` list).
    pub fn from_text(text: &str) -> Result<Processors, Vec<String>> {
        let v: Value = serde_yaml::from_str(text).map_err(|e| vec![format!("processors: {e}")])?;
        let list = match v {
            Value::Object(mut m) if m.contains_key("processors") => m.remove("processors").unwrap_or(Value::Null),
            other => other,
        };
        Processors::parse(&list)
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// One line per processor for the exit report.
    pub fn report(&self) -> Vec<String> {
        self.stats
            .rows()
            .into_iter()
            .map(|(i, name, d, c, e)| {
                format!(
                    "processor {} ({name}): {d} dropped, {c} changed, {e} errors",
                    self.stats.label(i)
                )
            })
            .collect()
    }

    /// Apply the list to a document, in order.
    pub fn apply(&self, d: &mut Doc<'_>) -> Verdict {
        for (i, p) in self.list.iter().enumerate() {
            if let Some(c) = &p.when {
                if !c.eval(d) {
                    continue;
                }
            }
            let counts = &self.stats.counts[i];
            match p.action.run(d) {
                Ok(Effect::Drop) => {
                    counts[0].fetch_add(1, Ordering::Relaxed);
                    return Verdict::Drop;
                }
                Ok(Effect::Changed) => {
                    counts[1].fetch_add(1, Ordering::Relaxed);
                }
                Ok(Effect::None) => {}
                Err(e) => {
                    counts[2].fetch_add(1, Ordering::Relaxed);
                    // As Beats does: the error is recorded in the event, which goes on.
                    let msg = match d.get(crate::p!("error.message")).and_then(text) {
                        Some(m) => format!("{m}; processor {i} ({}): {e}", p.name),
                        None => format!("processor {i} ({}): {e}", p.name),
                    };
                    d.put(crate::p!("error.message"), Val::Str(Cow::Owned(msg)));
                }
            }
        }
        Verdict::Keep
    }
}

/// Input kinds a per-input list can name (the `input.type` of the documents).
pub const INPUTS: &[&str] = &["tcp", "udp", "tls", "file", "stdin", "pull", "s3"];

/// The processors of a process: one list for every document, then one per input kind.
#[derive(Debug, Default)]
pub struct ProcessorSet {
    pub all: Option<Processors>,
    pub by_input: Vec<(&'static str, Processors)>,
}

impl ProcessorSet {
    /// Compile the lists: `all` a list, `by_input` a map from input kind to a list. Every
    /// problem of every list at once.
    pub fn parse(all: Option<&Value>, by_input: Option<&Value>) -> Result<ProcessorSet, Vec<String>> {
        let mut problems = Vec::new();
        let mut set = ProcessorSet::default();
        if let Some(list) = all {
            match Processors::parse(list) {
                Ok(p) => set.all = (!p.is_empty()).then_some(p),
                Err(e) => problems.extend(e),
            }
        }
        match by_input {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (input, list) in m {
                    let Some(kind) = INPUTS.iter().find(|k| **k == input) else {
                        problems.push(format!(
                            "input_processors.{input}: unknown input (one of {})",
                            INPUTS.join(", ")
                        ));
                        continue;
                    };
                    match Processors::parse_scoped(list, kind) {
                        Ok(p) if !p.is_empty() => set.by_input.push((kind, p)),
                        Ok(_) => {}
                        Err(e) => problems.extend(e),
                    }
                }
            }
            Some(other) => problems.push(format!(
                "input_processors: expected a table of lists by input kind, not {other}"
            )),
        }
        if problems.is_empty() { Ok(set) } else { Err(problems) }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_none() && self.by_input.is_empty()
    }

    /// The list every document goes through, then the one of the document's input.
    #[inline]
    pub fn apply(&self, d: &mut Doc<'_>, input: &str) -> Verdict {
        if let Some(all) = &self.all {
            if all.apply(d) == Verdict::Drop {
                return Verdict::Drop;
            }
        }
        match self.by_input.iter().find(|(k, _)| *k == input) {
            Some((_, p)) => p.apply(d),
            None => Verdict::Keep,
        }
    }

    /// One line per processor for the exit report.
    pub fn report(&self) -> Vec<String> {
        self.all
            .iter()
            .chain(self.by_input.iter().map(|(_, p)| p))
            .flat_map(Processors::report)
            .collect()
    }
}

impl crate::telemetry::Source for ProcessorSet {
    fn collect(&self, out: &mut crate::telemetry::Metrics) {
        let mut rows = Vec::new();
        for p in self.all.iter().chain(self.by_input.iter().map(|(_, p)| p)) {
            for (i, name, d, c, e) in p.stats.rows() {
                for (outcome, v) in [("dropped", d), ("changed", c), ("error", e)] {
                    rows.push((vec![p.stats.label(i), name.to_string(), outcome.to_string()], v));
                }
            }
        }
        out.counter_labels(
            "wafstream_processor_events_total",
            "Documents each processor dropped, changed or failed on (per-input lists: <input>/<index>).",
            &["processor", "name", "outcome"],
            &rows,
        );
    }
}

enum Effect {
    None,
    Changed,
    Drop,
}

/// A value as text (strings, numbers, booleans, timestamps as written).
fn text<'v>(v: &'v Val<'_>) -> Option<Cow<'v, str>> {
    Some(match v {
        Val::Str(s) => Cow::Borrowed(s.as_ref()),
        Val::Shared(s) => Cow::Borrowed(s.as_ref()),
        Val::Int(i) => Cow::Owned(i.to_string()),
        Val::UInt(u) => Cow::Owned(u.to_string()),
        Val::Float(f) | Val::FloatDecimal(f) => Cow::Owned(f.to_string()),
        Val::Bool(b) => Cow::Owned(b.to_string()),
        Val::Json(j) => Cow::Borrowed(j.trim_matches('"')),
        Val::Ts(..) => {
            let mut out = Vec::new();
            super::doc::write_val(&mut out, v);
            Cow::Owned(String::from_utf8_lossy(&out).trim_matches('"').to_string())
        }
        Val::Strs(_) | Val::StaticStrs(_) => return None,
    })
}

/// The values of a field: one, or each item of a list.
fn each<'v>(v: &'v Val<'_>) -> Vec<Cow<'v, str>> {
    match v {
        Val::Strs(l) => l.iter().map(|s| Cow::Borrowed(s.as_ref())).collect(),
        Val::StaticStrs(l) => l.iter().map(|s| Cow::Borrowed(*s)).collect(),
        other => text(other).into_iter().collect(),
    }
}

fn num(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) => Some(*i as f64),
        Val::UInt(u) => Some(*u as f64),
        Val::Float(f) | Val::FloatDecimal(f) => Some(*f),
        Val::Ts(ms, _) => Some(*ms as f64),
        other => text(other)?.parse().ok(),
    }
}

/// Whether the value, or one item of a list, passes `f` as text (no copy for strings).
fn any_text(v: &Val<'_>, f: impl Fn(&str) -> bool) -> bool {
    match v {
        Val::Str(s) => f(s),
        Val::Shared(s) => f(s),
        Val::Strs(l) => l.iter().any(|s| f(s)),
        Val::StaticStrs(l) => l.iter().any(|s| f(s)),
        other => text(other).is_some_and(|t| f(&t)),
    }
}

fn equals(v: &Val<'_>, want: &Value) -> bool {
    match want {
        Value::String(s) => any_text(v, |x| x == s),
        Value::Number(n) => num(v).zip(n.as_f64()).is_some_and(|(a, b)| a == b),
        Value::Bool(b) => matches!(v, Val::Bool(x) if x == b) || text(v).is_some_and(|t| t == b.to_string()),
        _ => false,
    }
}

fn in_net(ip: IpAddr, n: &Net) -> bool {
    match (n, ip) {
        (Net::Cidr(IpAddr::V4(net), len), IpAddr::V4(a)) => {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(*net) & mask
        }
        (Net::Cidr(IpAddr::V6(net), len), IpAddr::V6(a)) => {
            let mask = if *len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & mask == u128::from(*net) & mask
        }
        (Net::Cidr(..), _) => false,
        (Net::Loopback, a) => a.is_loopback(),
        (Net::Multicast, a) => a.is_multicast(),
        (Net::Unspecified, a) => a.is_unspecified(),
        (Net::LinkLocal, IpAddr::V4(a)) => a.is_link_local(),
        (Net::LinkLocal, IpAddr::V6(a)) => (a.segments()[0] & 0xffc0) == 0xfe80,
        (Net::Private, IpAddr::V4(a)) => a.is_private(),
        (Net::Private, IpAddr::V6(a)) => (a.segments()[0] & 0xfe00) == 0xfc00,
        (Net::Public, a) => {
            !(in_net(a, &Net::Private)
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || in_net(a, &Net::LinkLocal))
        }
    }
}

impl Cond {
    fn eval(&self, d: &Doc<'_>) -> bool {
        match self {
            Cond::Equals(f) => f
                .iter()
                .all(|(k, want)| d.get_field(k).is_some_and(|v| equals(v, want))),
            Cond::Contains(f) => f
                .iter()
                .all(|(k, s)| d.get_field(k).is_some_and(|v| any_text(v, |x| x.contains(s.as_str())))),
            Cond::Regexp(f) => f
                .iter()
                .all(|(k, r)| d.get_field(k).is_some_and(|v| any_text(v, |x| r.is_match(x)))),
            Cond::Range(f) => f.iter().all(|(k, b)| {
                d.get_field(k).and_then(num).is_some_and(|n| {
                    b.gt.is_none_or(|x| n > x)
                        && b.gte.is_none_or(|x| n >= x)
                        && b.lt.is_none_or(|x| n < x)
                        && b.lte.is_none_or(|x| n <= x)
                })
            }),
            Cond::Network(f) => f.iter().all(|(k, nets)| {
                d.get_field(k).is_some_and(|v| {
                    any_text(v, |s| {
                        s.parse::<IpAddr>().is_ok_and(|ip| nets.iter().any(|n| in_net(ip, n)))
                    })
                })
            }),
            Cond::HasFields(f) => f.iter().all(|k| d.has_field(k)),
            Cond::Or(c) => c.iter().any(|c| c.eval(d)),
            Cond::And(c) => c.iter().all(|c| c.eval(d)),
            Cond::Not(c) => !c.eval(d),
        }
    }
}

fn json_val(v: &Value) -> Val<'static> {
    match v {
        Value::String(s) => Val::Shared(Arc::from(s.as_str())),
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Int(i),
            (None, Some(u)) => Val::UInt(u),
            _ => Val::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::Array(a) => Val::Strs(
            a.iter()
                .filter_map(|x| x.as_str().map(|s| Cow::Owned(s.to_string())))
                .collect(),
        ),
        _ => Val::Str(Cow::Borrowed("")),
    }
}

/// Copy a value out of the document (borrowed text becomes owned).
fn owned(v: &Val<'_>) -> Val<'static> {
    match v {
        Val::Str(s) => Val::Str(Cow::Owned(s.to_string())),
        Val::Shared(s) => Val::Shared(s.clone()),
        Val::Int(i) => Val::Int(*i),
        Val::UInt(u) => Val::UInt(*u),
        Val::Float(f) => Val::Float(*f),
        Val::FloatDecimal(f) => Val::FloatDecimal(*f),
        Val::Bool(b) => Val::Bool(*b),
        Val::Strs(l) => Val::Strs(l.iter().map(|s| Cow::Owned(s.to_string())).collect()),
        Val::StaticStrs(l) => Val::StaticStrs(l),
        Val::Json(j) => Val::Json(Cow::Owned(j.to_string())),
        Val::Ts(ms, st) => Val::Ts(*ms, *st),
    }
}

impl Action {
    fn run(&self, d: &mut Doc<'_>) -> Result<Effect, String> {
        match self {
            Action::Drop => Ok(Effect::Drop),
            Action::DropFields { fields, ignore_missing } => {
                let mut changed = false;
                let mut missing = Vec::new();
                for (name, f) in fields {
                    if d.remove_field(f) {
                        changed = true;
                    } else if !ignore_missing {
                        missing.push(name.as_str());
                    }
                }
                if !missing.is_empty() {
                    return Err(format!("fields not found: {}", missing.join(", ")));
                }
                Ok(if changed { Effect::Changed } else { Effect::None })
            }
            Action::IncludeFields { fields } => {
                let before = d.len();
                d.retain_paths(|path| {
                    // @timestamp and the data stream fields always stay (routing needs them).
                    path == "@timestamp"
                        || path.starts_with("data_stream.")
                        || fields.iter().any(|f| {
                            path == f || (path.starts_with(f.as_str()) && path.as_bytes().get(f.len()) == Some(&b'.'))
                        })
                });
                Ok(if d.len() != before {
                    Effect::Changed
                } else {
                    Effect::None
                })
            }
            Action::AddFields { fields } => {
                for (f, v) in fields {
                    d.put_field(f, v.clone())?;
                }
                Ok(Effect::Changed)
            }
            Action::AddTags { target, tags } => {
                let mut list: Vec<Cow<'_, str>> = d
                    .get_field(target)
                    .map(|v| each(v).into_iter().map(|s| Cow::Owned(s.into_owned())).collect())
                    .unwrap_or_default();
                for t in tags {
                    if !list.iter().any(|x| x == t) {
                        list.push(Cow::Owned(t.clone()));
                    }
                }
                d.put_field(target, Val::Strs(list))?;
                Ok(Effect::Changed)
            }
            Action::Rename {
                pairs,
                ignore_missing,
                fail_on_error,
            }
            | Action::Copy {
                pairs,
                ignore_missing,
                fail_on_error,
            } => {
                let rename = matches!(self, Action::Rename { .. });
                let mut changed = false;
                for (_, from, to) in pairs {
                    let Some(v) = d.get_field(from).map(owned) else {
                        if *ignore_missing || !fail_on_error {
                            continue;
                        }
                        return Err(format!("{from} not found"));
                    };
                    if d.has_field(to) {
                        if *fail_on_error {
                            return Err(format!("{to} already exists"));
                        }
                        continue;
                    }
                    if rename {
                        d.remove_field(from);
                    }
                    d.put_field(to, v)?;
                    changed = true;
                }
                Ok(if changed { Effect::Changed } else { Effect::None })
            }
            Action::Truncate {
                fields,
                max,
                chars,
                ignore_missing,
                fail_on_error,
            } => {
                let mut changed = false;
                for (_, f) in fields {
                    let Some(v) = d.get_field(f) else {
                        if *ignore_missing || !fail_on_error {
                            continue;
                        }
                        return Err(format!("{f} not found"));
                    };
                    let Some(t) = (match v {
                        Val::Str(s) => Some(s.as_ref()),
                        Val::Shared(s) => Some(s.as_ref()),
                        _ => None,
                    }) else {
                        if *fail_on_error {
                            return Err(format!("{f} is not a string"));
                        }
                        continue;
                    };
                    let cut = if *chars {
                        t.char_indices().nth(*max).map(|(i, _)| i)
                    } else if t.len() > *max {
                        // Back to a character boundary.
                        Some((0..=*max).rev().find(|i| t.is_char_boundary(*i)).unwrap_or(0))
                    } else {
                        None
                    };
                    if let Some(at) = cut {
                        let short = t[..at].to_string();
                        d.put_field(f, Val::Str(Cow::Owned(short)))?;
                        changed = true;
                    }
                }
                Ok(if changed { Effect::Changed } else { Effect::None })
            }
            Action::RateLimit(r) => {
                let key: String = r
                    .fields
                    .iter()
                    .map(|f| {
                        d.get_field(f)
                            .and_then(text)
                            .map(|t| t.into_owned())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("\u{1}");
                let now = Instant::now();
                let mut b = r.buckets.lock().unwrap_or_else(|p| p.into_inner());
                let (tokens, at) = b.entry(key).or_insert((r.burst, now));
                *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * r.per_sec).min(r.burst);
                *at = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    Ok(Effect::None)
                } else {
                    Ok(Effect::Drop)
                }
            }
        }
    }
}
