//! Mapping profiles as data: a dataset's mapping is a table of [`Step`]s run in order.
//!
//! Most steps are [`Rule`]s: one extension key's non-empty value, converted ([`Conv`]), to one
//! ECS path, with an optional copy kept only under `preserve_duplicate_custom_fields`. The few
//! facts made from several keys or from the header (times, addresses, URL parts, the user
//! agent) are named functions in the same table, so the table alone says what a profile
//! writes and in which order. Order matters for the error messages (listed in table order) and
//! for a path two steps write (the later wins).

use std::borrow::Cow;

use super::doc::Doc;
use super::paths::P;
use super::{Ctx, Dataset, Profile, elastic, json, sekoia, trim};
use crate::parse::Key;

/// How a rule converts the value it reads. The names are the CEF keys' long names, as the
/// error messages give them (`error in field 'bytesIn': …`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Conv {
    /// The text as sent (unescaped).
    Text,
    /// ASCII lower case.
    Lower,
    /// Elastic's `event.action` form of an Imperva action (`REQ_BLOCKED` → `req-blocked`).
    Action,
    /// A decimal integer.
    Int(&'static str),
    /// `true` or `false`, in any case.
    Bool(&'static str),
    /// A finite decimal number, written as sent when that is how its float prints.
    Decimal(&'static str),
    /// JSON text, pruned as the ingest pipeline's `json` processor leaves it.
    Json(&'static str),
    /// SEKOIA's reading: the raw value (backslash escapes kept), written when not empty.
    Raw,
    /// The raw value in ASCII lower case.
    RawLower,
    /// The raw value as an integer when it is one; nothing (and no error) otherwise.
    RawInt,
    /// A non-empty raw value as a boolean: `true` when it says so in any case, else `false`.
    RawFlag,
}

impl Conv {
    /// Reads the raw value (SEKOIA's conversions), not the unescaped one.
    const fn is_raw(self) -> bool {
        matches!(self, Conv::Raw | Conv::RawLower | Conv::RawInt | Conv::RawFlag)
    }
}

/// One key's value to one path. The duplicate copy (`dup`) gets the converted value for
/// numbers and the text as sent for text conversions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    pub key: Key,
    pub conv: Conv,
    pub to: P,
    pub dup: Option<P>,
}

/// A mapping function for what no single rule can say.
pub(crate) type Code = for<'r, 'a, 'c> fn(&'c mut Ctx<'r, 'a>, &'c mut Doc<'r>);

#[derive(Clone, Copy)]
pub(crate) enum Step {
    Rule(Rule),
    Code(Code),
}

/// `key`'s value, converted, to `to`.
pub(crate) const fn rule(key: Key, conv: Conv, to: P) -> Step {
    Step::Rule(Rule {
        key,
        conv,
        to,
        dup: None,
    })
}

/// `key`'s value as sent to `to`.
pub(crate) const fn text(key: Key, to: P) -> Step {
    rule(key, Conv::Text, to)
}

impl Step {
    /// The same rule, also writing `path` under `preserve_duplicate_custom_fields`.
    pub(crate) const fn dup(self, path: P) -> Step {
        match self {
            // Raw conversions are SEKOIA's, which keeps no copies.
            Step::Rule(r) if r.conv.is_raw() => panic!("a raw rule has no duplicate copy"),
            Step::Rule(mut r) => {
                r.dup = Some(path);
                Step::Rule(r)
            }
            // Only rules have copies: a table asking for one on code does not compile (the
            // tables are constants, so this panic is a compile-time error).
            Step::Code(_) => panic!("only a rule can have a duplicate copy"),
        }
    }
}

/// The tables a profile runs for a dataset, in order (a profile shares some tables between
/// datasets).
pub(crate) fn plan(profile: Profile, dataset: Dataset) -> &'static [&'static [Step]] {
    match (profile, dataset) {
        (Profile::Elastic, Dataset::SecureSphere) => &[elastic::SECURESPHERE],
        (Profile::Elastic, Dataset::CloudWaf) => &[elastic::CLOUD_WAF],
        // Only JSON events are `imperva.siem`; they do not come this way.
        (Profile::Elastic, Dataset::Siem) => &[],
        (Profile::Sekoia, Dataset::SecureSphere) => sekoia::SECURESPHERE,
        (Profile::Sekoia, _) => sekoia::CLOUD_WAF,
    }
}

/// Run a profile's tables for one record, in order.
pub(crate) fn run_all<'r>(tables: &[&[Step]], ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    for steps in tables {
        run(steps, ctx, d);
    }
}

/// Run a table on one record.
fn run<'r>(steps: &[Step], ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let dup = ctx.opts.preserve_duplicate_custom_fields;
    for step in steps {
        match step {
            Step::Rule(r) => apply(r, dup, ctx, d),
            Step::Code(f) => f(ctx, d),
        }
    }
}

#[inline(always)]
fn apply<'r>(r: &Rule, dup: bool, ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    if r.conv.is_raw() {
        return apply_raw(r, ctx, d);
    }
    let Some(v) = ctx.val_ne(r.key) else {
        return;
    };
    let copy = if dup { r.dup } else { None };
    match r.conv {
        Conv::Text => {
            if let Some(c) = copy {
                d.string(c, v.clone());
            }
            d.string(r.to, v);
        }
        Conv::Lower => {
            d.string(r.to, lower(&v));
            if let Some(c) = copy {
                d.string(c, v);
            }
        }
        Conv::Action => {
            d.string(r.to, action_name(&v));
            if let Some(c) = copy {
                d.string(c, v);
            }
        }
        Conv::Int(name) => match trim(&v).parse::<i64>() {
            Ok(n) => {
                d.int(r.to, n);
                if let Some(c) = copy {
                    d.int(c, n);
                }
            }
            Err(_) => ctx.error(format!("error in field '{name}': value {v:?} is not an integer")),
        },
        Conv::Bool(name) => {
            let t = trim(&v);
            if t.eq_ignore_ascii_case("true") {
                d.bool(r.to, true);
            } else if t.eq_ignore_ascii_case("false") {
                d.bool(r.to, false);
            } else {
                ctx.error(format!("error in field '{name}': value {v:?} is not a boolean"));
                return;
            }
            if let Some(c) = copy {
                d.bool(c, t.eq_ignore_ascii_case("true"));
            }
        }
        Conv::Decimal(name) => {
            if json::plain_decimal(&v) {
                // Written as sent: the same text the parsed float would be written as.
                if let Some(c) = copy {
                    d.decimal_text(c, v.clone());
                }
                d.decimal_text(r.to, v);
            } else {
                match v.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => {
                        d.float(r.to, f);
                        if let Some(c) = copy {
                            d.float(c, f);
                        }
                    }
                    _ => ctx.error(format!("error in field '{name}': value {v:?} is not a number")),
                }
            }
        }
        Conv::Json(name) => {
            let parsed = match v {
                Cow::Borrowed(b) => json_value(b),
                // Unescaped text: kept as it is when it is already its own JSON form.
                Cow::Owned(o) => match json_value(&o) {
                    Ok(Cow::Borrowed(j)) if j.len() == o.len() => Ok(Cow::Owned(o)),
                    other => other.map(|j| Cow::Owned(j.into_owned())),
                },
            };
            match parsed {
                Ok(j) => {
                    if let Some(c) = copy {
                        d.json(c, j.clone());
                    }
                    d.json(r.to, j);
                }
                Err(e) => ctx.error(format!("json processor on {name} failed: {e}")),
            }
        }
        // Handled by `apply_raw` before the value is read.
        Conv::Raw | Conv::RawLower | Conv::RawInt | Conv::RawFlag => {}
    }
}

/// The raw conversions: lenient, as SEKOIA's intake format reads values.
#[inline(always)]
fn apply_raw<'r>(r: &Rule, ctx: &mut Ctx<'r, '_>, d: &mut Doc<'r>) {
    let Some(v) = ctx.raw(r.key) else {
        return;
    };
    match r.conv {
        Conv::RawLower => d.str(r.to, v.to_ascii_lowercase()),
        Conv::RawInt => {
            if let Ok(n) = v.trim().parse::<i64>() {
                d.int(r.to, n);
            }
        }
        Conv::RawFlag => {
            if !v.is_empty() {
                d.bool(r.to, v.trim().eq_ignore_ascii_case("true"));
            }
        }
        _ => d.str(r.to, v),
    }
}

/// `event.action` from Imperva's `act`: lower case, `_` → `-` (Elastic's pipeline). The
/// actions Imperva documents come from a table; others are converted.
pub(crate) fn action_name(act: &str) -> Cow<'static, str> {
    const KNOWN: &[(&str, &str)] = &[
        ("REQ_PASSED", "req-passed"),
        ("REQ_CACHED_FRESH", "req-cached-fresh"),
        ("REQ_CACHED_STALE", "req-cached-stale"),
        ("REQ_CHALLENGED_CAPTCHA", "req-challenged-captcha"),
        ("REQ_CHALLENGED_COOKIE", "req-challenged-cookie"),
        ("REQ_CHALLENGED_JAVASCRIPT", "req-challenged-javascript"),
        ("REQ_BLOCKED", "req-blocked"),
        ("REQ_BLOCKED_SESSION", "req-blocked-session"),
        ("REQ_BLOCKED_IP", "req-blocked-ip"),
        ("REQ_BLOCKED_ABNORMALLY", "req-blocked-abnormally"),
        ("REQ_BLOCKED_SECURITY", "req-blocked-security"),
        ("REQ_BAD_REQUEST", "req-bad-request"),
    ];
    if let Some((_, a)) = KNOWN.iter().find(|(k, _)| *k == act) {
        return Cow::Borrowed(a);
    }
    Cow::Owned(
        act.chars()
            .map(|c| if c == '_' { '-' } else { c.to_ascii_lowercase() })
            .collect(),
    )
}

/// ASCII lower case, borrowing when there is nothing to change (and for the protocols Imperva
/// sends).
pub(crate) fn lower<'r>(s: &Cow<'r, str>) -> Cow<'r, str> {
    match s.as_ref() {
        "HTTPS" => return Cow::Borrowed("https"),
        "HTTP" => return Cow::Borrowed("http"),
        _ => {}
    }
    if s.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s.clone()
    }
}

/// Parse JSON text for a `json` processor, dropping empty values like the pipeline's final
/// clean-up does. Valid JSON with nothing to drop is written as sent (no tree is built).
pub(crate) fn json_value(text: &str) -> Result<Cow<'_, str>, String> {
    let raw: &serde_json::value::RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let t = raw.get();
    if !may_prune(t) {
        return Ok(Cow::Borrowed(t));
    }
    let mut v: serde_json::Value = serde_json::from_str(t).map_err(|e| e.to_string())?;
    prune(&mut v);
    serde_json::to_string(&v).map(Cow::Owned).map_err(|e| e.to_string())
}

/// Whether valid JSON `t` may hold something [`prune`] drops (`null`, `""`, an empty array or
/// object) or a line break (the text is then re-serialised on one line). One pass; it may say
/// `true` when nothing would change, never `false` when something would.
fn may_prune(t: &str) -> bool {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                if b.get(i + 1) == Some(&b'"') {
                    return true;
                }
                // Skip the string (it is valid JSON: it ends at an unescaped quote).
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // Outside strings an `n` only starts `null`.
            b'n' | b'\n' | b'\r' => return true,
            b'[' | b'{' => {
                let mut j = i + 1;
                while j < b.len() && matches!(b[j], b' ' | b'\t') {
                    j += 1;
                }
                if matches!(b.get(j), Some(b']' | b'}')) {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Elastic's "drop null/empty values recursively".
fn prune(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => {
            a.retain_mut(|x| !prune(x));
            a.is_empty()
        }
        Value::Object(o) => {
            o.retain(|_, x| !prune(x));
            o.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_profile_writes_a_path_from_one_rule() {
        // Two rules writing one path would make the later silently win: a profile's tables
        // say what each path comes from, once.
        let mut profiles = Vec::new();
        for profile in [Profile::Elastic, Profile::Sekoia] {
            for dataset in [Dataset::CloudWaf, Dataset::SecureSphere] {
                profiles.push((format!("{profile:?} {dataset:?}"), plan(profile, dataset)));
            }
        }
        for (name, tables) in profiles {
            let mut seen = std::collections::HashSet::new();
            let mut rules = 0;
            for step in tables.iter().copied().flatten() {
                if let Step::Rule(r) = step {
                    rules += 1;
                    for path in std::iter::once(r.to).chain(r.dup) {
                        assert!(seen.insert(path), "{name}: {path:?} written by two rules");
                    }
                }
            }
            assert!(rules > 0, "{name} has rules");
        }
    }

    #[test]
    fn may_prune_finds_every_prunable_value() {
        for (t, want) in [
            (r#"[{"Accept":"*/*"},{"x-request-id":"a8"}]"#, false),
            (r#"{"a":"nothing here","b":[1,2],"c":{"d":true}}"#, false),
            (r#"{"a":""}"#, true),
            (r#"{"a":null}"#, true),
            (r#"{"a":[]}"#, true),
            (r#"{"a":[ ]}"#, true),
            (r#"{"a":{ }}"#, true),
            ("{\"a\":\n1}", true),
            (r#"{"null":"\"\"","x":"[]"}"#, false),
            (r#"{"a":"\\"}"#, false),
        ] {
            assert_eq!(may_prune(t), want, "{t}");
            // Whenever pruning changes the text, the check said so.
            let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
            prune(&mut v);
            let same = serde_json::to_string(&v).unwrap() == t;
            assert!(may_prune(t) || same, "{t}");
        }
    }

    #[test]
    fn actions_from_the_table_follow_the_rule() {
        for act in [
            "REQ_PASSED",
            "REQ_CHALLENGED_CAPTCHA",
            "REQ_BLOCKED_SECURITY",
            "REQ_BAD_REQUEST",
            "Custom_Thing",
            "req_passed",
        ] {
            let rule: String = act
                .chars()
                .map(|c| if c == '_' { '-' } else { c.to_ascii_lowercase() })
                .collect();
            assert_eq!(action_name(act), rule);
        }
        assert!(matches!(lower(&Cow::Borrowed("https")), Cow::Borrowed("https")));
        assert_eq!(lower(&Cow::Borrowed("HTTPS")), "https");
    }

    #[test]
    fn prune_drops_empties() {
        assert_eq!(
            json_value(r#"[{"a":""},{"b":null,"c":"x"},[]]"#).unwrap(),
            r#"[{"c":"x"}]"#
        );
        assert_eq!(json_value(r#"[{"a":"b"}]"#).unwrap(), r#"[{"a":"b"}]"#);
        assert_eq!(json_value(r#" [ {"a" : "b"} ] "#).unwrap(), r#"[ {"a" : "b"} ]"#);
        // Newlines between tokens would break NDJSON framing: re-serialised compactly.
        assert_eq!(json_value("[\n{\"a\":\"b\"}\n]").unwrap(), r#"[{"a":"b"}]"#);
        assert!(json_value("[{").is_err());
    }
}
