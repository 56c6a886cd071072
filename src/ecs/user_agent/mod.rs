//! User-agent parsing with the uap-core rules (`regexes.yaml`, uap-core 0.18.0, Apache-2.0,
//! see `LICENSE-uap-core`), the rule set Elasticsearch's `user_agent` processor and SEKOIA's
//! enrichment both use. Matching is prefiltered by `regex-filtered` (literal atoms first), and
//! results are cached per distinct user-agent string, as Elasticsearch's processor does:
//! WAF traffic repeats a few thousand user agents millions of times.
//!
//! The two profiles read the captures differently, and this module keeps the raw captures so
//! each can: Elasticsearch keeps a group that matched the empty string (`Firefox/40.0` gives
//! version `40.0.` through the rule `(Firefox)/(\d+)\.(\d+)(pre|[ab]\d+[a-z]*|)`), Python's
//! ua-parser treats it as absent. Elasticsearch also ships an older rule list that lacks a few
//! newer rules; those are listed in [`ELASTIC_ABSENT_RULES`] and skipped for that profile.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

const REGEXES: &str = include_str!("regexes.yaml");

/// uap-core rules that are newer than the list bundled with Elasticsearch 8 and change what
/// it reports for common agents (Firefox without a patch number shows `N.M.` there).
pub const ELASTIC_ABSENT_RULES: &[&str] = &[r"(Firefox)/(\d+)\.(\d+)(?:\.(\d+)|$)"];

/// Which reading of the captures to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Elasticsearch's `user_agent` processor.
    Elastic,
    /// Python ua-parser (SEKOIA's enrichment).
    Python,
}

/// A version part: `None` = the group did not take part, `Some("")` = matched empty.
type Part = Option<String>;

/// What the rules extracted from one user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub name: Option<String>,
    pub version: [Part; 4],
    pub os_name: Option<String>,
    pub os_version: [Part; 4],
    pub device: Option<String>,
}

/// The fields a profile writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    pub name: Arc<str>,
    pub version: Option<Arc<str>>,
    pub os_name: Arc<str>,
    pub os_version: Option<Arc<str>>,
    pub os_full: Option<Arc<str>>,
    pub device_name: Arc<str>,
}

#[derive(Deserialize)]
struct RuleFile {
    user_agent_parsers: Vec<UaRule>,
    os_parsers: Vec<OsRule>,
    device_parsers: Vec<DeviceRule>,
}

#[derive(Deserialize)]
struct UaRule {
    regex: String,
    family_replacement: Option<String>,
    v1_replacement: Option<String>,
    v2_replacement: Option<String>,
    v3_replacement: Option<String>,
    v4_replacement: Option<String>,
}

#[derive(Deserialize)]
struct OsRule {
    regex: String,
    regex_flag: Option<String>,
    os_replacement: Option<String>,
    os_v1_replacement: Option<String>,
    os_v2_replacement: Option<String>,
    os_v3_replacement: Option<String>,
    os_v4_replacement: Option<String>,
}

#[derive(Deserialize)]
struct DeviceRule {
    regex: String,
    regex_flag: Option<String>,
    device_replacement: Option<String>,
}

/// Replacement templates of one rule: name then up to four version parts.
struct Templates {
    name: Option<String>,
    parts: [Option<String>; 4],
}

struct Domain {
    matcher: regex_filtered::Regexes,
    templates: Vec<Templates>,
    sources: Vec<String>,
}

/// The compiled rule set (built once per process; ~0.5 s).
pub struct Rules {
    ua: Domain,
    os: Domain,
    device: Domain,
    elastic_skip: Vec<usize>,
}

static RULES: OnceLock<Result<Arc<Rules>, String>> = OnceLock::new();

/// The shared rule set, compiled on first use.
pub fn rules() -> Result<Arc<Rules>, String> {
    RULES.get_or_init(|| Rules::compile(REGEXES).map(Arc::new)).clone()
}

/// Rewrite a uap-core regex for Rust's engine: ASCII digit/word classes (uap-core means ASCII,
/// and Unicode classes make the automata huge) and long bounded repeats `{0,N}`/`{1,N}` with
/// N ≥ 100 as `*`/`+` (same matches on real user agents, far smaller automata).
fn rewrite(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 16);
    let mut chars = re.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') => out.push_str(if in_class { "0-9" } else { "[0-9]" }),
                Some('D') if !in_class => out.push_str("[^0-9]"),
                Some('w') => out.push_str(if in_class { "A-Za-z0-9_" } else { "[A-Za-z0-9_]" }),
                Some('W') if !in_class => out.push_str("[^A-Za-z0-9_]"),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                if chars.peek() == Some(&']') {
                    out.push(chars.next().unwrap_or(']'));
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' if !in_class => {
                let rest: String = chars.clone().take_while(|c| *c != '}').collect();
                if let Some((lo, hi)) = rest.split_once(',') {
                    if (lo == "0" || lo == "1") && hi.len() >= 3 && hi.bytes().all(|b| b.is_ascii_digit()) {
                        for _ in 0..=rest.len() {
                            chars.next();
                        }
                        out.push(if lo == "0" { '*' } else { '+' });
                        continue;
                    }
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn build_domain(rules: Vec<(String, bool, Templates)>) -> Result<Domain, String> {
    let mut b = regex_filtered::Builder::new_atom_len(3);
    let mut templates = Vec::with_capacity(rules.len());
    let mut sources = Vec::with_capacity(rules.len());
    for (re, ci, t) in rules {
        let mut opts = regex_filtered::Options::new();
        opts.case_insensitive(ci);
        b = b
            .push_opt(&rewrite(&re), &opts)
            .map_err(|e| format!("uap rule {re:?}: {e}"))?;
        templates.push(t);
        sources.push(re);
    }
    let matcher = b.build().map_err(|e| format!("uap prefilter: {e}"))?;
    Ok(Domain {
        matcher,
        templates,
        sources,
    })
}

impl Rules {
    pub fn compile(yaml: &str) -> Result<Rules, String> {
        let f: RuleFile = serde_yaml::from_str(yaml).map_err(|e| format!("regexes.yaml: {e}"))?;
        let ua = build_domain(
            f.user_agent_parsers
                .into_iter()
                .map(|r| {
                    let t = Templates {
                        name: r.family_replacement,
                        parts: [r.v1_replacement, r.v2_replacement, r.v3_replacement, r.v4_replacement],
                    };
                    (r.regex, false, t)
                })
                .collect(),
        )?;
        let os = build_domain(
            f.os_parsers
                .into_iter()
                .map(|r| {
                    let t = Templates {
                        name: r.os_replacement,
                        parts: [
                            r.os_v1_replacement,
                            r.os_v2_replacement,
                            r.os_v3_replacement,
                            r.os_v4_replacement,
                        ],
                    };
                    (r.regex, r.regex_flag.as_deref() == Some("i"), t)
                })
                .collect(),
        )?;
        let device = build_domain(
            f.device_parsers
                .into_iter()
                .map(|r| {
                    let t = Templates {
                        name: r.device_replacement,
                        parts: [None, None, None, None],
                    };
                    (r.regex, r.regex_flag.as_deref() == Some("i"), t)
                })
                .collect(),
        )?;
        let elastic_skip = ua
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| ELASTIC_ABSENT_RULES.contains(&s.as_str()))
            .map(|(i, _)| i)
            .collect();
        Ok(Rules {
            ua,
            os,
            device,
            elastic_skip,
        })
    }

    /// Apply the rules to one user agent.
    pub fn parse(&self, ua: &str, flavor: Flavor) -> Parsed {
        let skip: &[usize] = if flavor == Flavor::Elastic {
            &self.elastic_skip
        } else {
            &[]
        };
        let (name, version) = extract(&self.ua, ua, skip).unwrap_or_default();
        let (os_name, os_version) = extract(&self.os, ua, &[]).unwrap_or_default();
        let (device, _) = extract(&self.device, ua, &[]).unwrap_or_default();
        Parsed {
            name,
            version,
            os_name,
            os_version,
            device,
        }
    }
}

/// First matching rule of a domain: (name, version parts). Parts follow uap-core: a template
/// with `$N` is substituted; without one, part i is capture group i+2.
fn extract(d: &Domain, ua: &str, skip: &[usize]) -> Option<(Option<String>, [Part; 4])> {
    let (idx, re) = d.matcher.matching(ua).find(|(i, _)| !skip.contains(i))?;
    let caps = re.captures(ua)?;
    let t = &d.templates[idx];
    let group = |n: usize| caps.get(n).map(|m| m.as_str().to_string());
    let name = match &t.name {
        Some(tpl) => Some(substitute(tpl, &caps)),
        None => group(1),
    }
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty());
    let mut parts: [Part; 4] = Default::default();
    for (i, part) in parts.iter_mut().enumerate() {
        *part = match &t.parts[i] {
            Some(tpl) => Some(substitute(tpl, &caps).trim().to_string()),
            None => group(i + 2),
        };
    }
    Some((name, parts))
}

fn substitute(tpl: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(tpl.len());
    let b = tpl.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            let n = (b[i + 1] - b'0') as usize;
            if let Some(m) = caps.get(n) {
                out.push_str(m.as_str());
            }
            i += 2;
        } else {
            let ch = tpl[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

impl Parsed {
    /// Render as a profile writes it.
    pub fn render(&self, flavor: Flavor) -> UserAgent {
        let join = |parts: &[Part; 4], max: usize| -> Option<String> {
            match flavor {
                // Each part only after the previous one; an empty-but-matched group counts.
                Flavor::Elastic => {
                    let mut v = parts[0].clone()?;
                    for p in parts.iter().take(max).skip(1) {
                        match p {
                            Some(s) => {
                                v.push('.');
                                v.push_str(s);
                            }
                            None => break,
                        }
                    }
                    Some(v)
                }
                // Python ua-parser: empty means absent; major.minor.patch.
                Flavor::Python => {
                    let present: Vec<&str> = parts
                        .iter()
                        .take(3)
                        .map_while(|p| p.as_deref().filter(|s| !s.is_empty()))
                        .collect();
                    (!present.is_empty()).then(|| present.join("."))
                }
            }
        };
        let name = self.name.clone().unwrap_or_else(|| "Other".into());
        let os_name = self.os_name.clone().unwrap_or_else(|| "Other".into());
        let version = if self.name.is_some() {
            join(&self.version, 4)
        } else {
            None
        };
        let os_version = if self.os_name.is_some() {
            join(&self.os_version, 4)
        } else {
            None
        };
        let os_full = match (flavor, &os_version) {
            (Flavor::Elastic, Some(v)) => Some(format!("{os_name} {v}")),
            _ => None,
        };
        UserAgent {
            name: name.into(),
            version: version.map(Into::into),
            os_name: os_name.into(),
            os_version: os_version.map(Into::into),
            os_full: os_full.map(Into::into),
            device_name: self.device.clone().unwrap_or_else(|| "Other".into()).into(),
        }
    }
}

/// Hasher for keys that are already hashes (xxh3 of the user agent).
#[derive(Default)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A per-worker cache in front of the shared rules (bounded: cleared when full). Keyed by the
/// xxh3 hash of the user agent, with the string kept to rule out collisions.
pub struct Cache {
    rules: Option<Arc<Rules>>,
    flavor: Flavor,
    map: HashMap<u64, (Box<str>, Arc<UserAgent>), std::hash::BuildHasherDefault<PreHashed>>,
    max_entries: usize,
    pub hits: u64,
    pub misses: u64,
}

impl Cache {
    pub fn new(flavor: Flavor) -> Self {
        Cache {
            rules: None,
            flavor,
            map: HashMap::default(),
            max_entries: 16_384,
            hits: 0,
            misses: 0,
        }
    }

    /// Parse (or recall) a user agent. `None` only if the bundled rules failed to compile.
    pub fn get(&mut self, ua: &str) -> Option<Arc<UserAgent>> {
        let h = xxhash_rust::xxh3::xxh3_64(ua.as_bytes());
        if let Some((k, hit)) = self.map.get(&h) {
            if **k == *ua {
                self.hits += 1;
                return Some(hit.clone());
            }
        }
        self.misses += 1;
        if self.rules.is_none() {
            self.rules = rules().ok();
        }
        let parsed = self.rules.as_ref()?.parse(ua, self.flavor);
        let out = Arc::new(parsed.render(self.flavor));
        if self.map.len() >= self.max_entries {
            self.map.clear();
        }
        self.map.insert(h, (ua.into(), out.clone()));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(s: &str, f: Flavor) -> UserAgent {
        rules().expect("rules compile").parse(s, f).render(f)
    }

    const FF40: &str = "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:40.0) Gecko/20100101 Firefox/40.0";

    #[test]
    fn firefox_elastic_and_python() {
        let e = ua(FF40, Flavor::Elastic);
        assert_eq!(&*e.name, "Firefox");
        assert_eq!(e.version.as_deref(), Some("40.0."));
        assert_eq!(&*e.os_name, "Windows");
        assert_eq!(e.os_version.as_deref(), Some("7"));
        assert_eq!(e.os_full.as_deref(), Some("Windows 7"));
        assert_eq!(&*e.device_name, "Other");
        let p = ua(FF40, Flavor::Python);
        assert_eq!(p.version.as_deref(), Some("40.0"));
        assert_eq!(p.os_full, None);
    }

    #[test]
    fn chrome_and_unknown() {
        let p = ua(
            "Mozilla/5.0 (X11; OpenBSD i386) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.125 Safari/537.36",
            Flavor::Python,
        );
        assert_eq!(
            (&*p.name, p.version.as_deref(), &*p.os_name),
            ("Chrome", Some("36.0.1985"), "OpenBSD")
        );
        let o = ua("python-requests", Flavor::Python);
        assert_eq!(
            (&*o.name, o.version, &*o.os_name, &*o.device_name),
            ("Other", None, "Other", "Other")
        );
    }

    #[test]
    fn rewrite_keeps_meaning() {
        assert_eq!(rewrite(r"(\d+)\.(\d+)"), r"([0-9]+)\.([0-9]+)");
        assert_eq!(rewrite(r"[\d.]+"), r"[0-9.]+");
        assert_eq!(rewrite(r"a.{0,200}b.{1,100}c{2,3}"), r"a.*b.+c{2,3}");
        assert_eq!(rewrite(r"[^\]]x"), r"[^\]]x");
    }

    #[test]
    fn cache_counts() {
        let mut c = Cache::new(Flavor::Elastic);
        let a = c.get(FF40).unwrap();
        let b = c.get(FF40).unwrap();
        assert_eq!(a, b);
        assert_eq!((c.hits, c.misses), (1, 1));
    }
}
