//! Deterministic, realistic sample traffic: Cloud WAF CEF lines (~1 KB, escapes, JSON headers,
//! attack payloads) and SecureSphere CEF over syslog (~0.5 KB). Used by the benchmarks, the
//! end-to-end scripts and demos; the same seed always gives the same bytes.

/// Which kind of lines to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CloudWaf,
    SecureSphere,
    /// Three Cloud WAF lines to one SecureSphere line.
    Mixed,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cloud-waf" | "cloudwaf" => Ok(Kind::CloudWaf),
            "securesphere" => Ok(Kind::SecureSphere),
            "mixed" => Ok(Kind::Mixed),
            o => Err(format!("unknown kind {o:?} (cloud-waf, securesphere, mixed)")),
        }
    }
}

/// xorshift64*: tiny, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.43 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:40.0) Gecko/20100101 Firefox/40.0",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "sqlmap/1.7.11#stable (https://sqlmap.org)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.0.0",
];

const ACTIONS: &[&str] = &[
    "REQ_PASSED",
    "REQ_PASSED",
    "REQ_PASSED",
    "REQ_CACHED_FRESH",
    "REQ_BLOCKED_SECURITY",
    "REQ_CHALLENGED_CAPTCHA",
    "REQ_BAD_CLIENT_CLOSED_CONNECTION",
];

const ATTACKS: &[(&str, &str)] = &[
    ("Normal", "0"),
    ("Normal", "0"),
    ("SQL Injection", "0"),
    ("Cross Site Scripting", "1"),
    ("Illegal Resource Access", "3"),
    ("Bad Bot", "14"),
];

const PATHS: &[&str] = &[
    "index.html",
    "login.php",
    "api/v2/orders",
    "static/app.js",
    "cart/checkout",
    "search",
    "wp-admin/admin-ajax.php",
];
const QUERIES: &[&str] = &[
    "q\\=shoes&page\\=2",
    "id\\=1%27%20OR%201%3d1--",
    "redirect\\=https://evil.example/%3Cscript%3E",
    "s\\=summer sale | cat /etc/passwd",
    "",
];
const POPS: &[&str] = &["fra", "ams", "iad", "lhr", "sin", "mia", "cdg"];
const COUNTRIES: &[(&str, &str, &str, &str)] = &[
    ("DE", "Frankfurt", "50.1109", "8.6821"),
    ("US", "Ashburn", "39.0438", "-77.4874"),
    ("FR", "Paris", "48.8566", "2.3522"),
    ("IL", "Rehovot", "31.8969", "34.8186"),
    ("JP", "Tokyo", "35.6762", "139.6503"),
];

/// One Cloud WAF CEF line (no newline).
fn cloud_line(r: &mut Rng, i: u64, out: &mut String) {
    let (name, sev) = ATTACKS[r.below(ATTACKS.len() as u64) as usize];
    let act = if name == "Normal" {
        r.pick(&ACTIONS[..4])
    } else {
        r.pick(&ACTIONS[4..])
    };
    let (cc, city, lat, lon) = COUNTRIES[r.below(COUNTRIES.len() as u64) as usize];
    let start = 1_700_000_000_000 + i * 37;
    let q = r.pick(QUERIES);
    let rules = if name == "Normal" {
        String::new()
    } else {
        format!(" fileType=30037,1001, filePermission=2,1, cs9={name},High Risk Resources, cs9Label=Rule name")
    };
    use std::fmt::Write;
    let _ = write!(
        out,
        "CEF:0|Incapsula|SIEMintegration|1|1|{name}|{sev}| fileId={fid} sourceServiceName=shop{site}.example.com siteid={sid} suid=50005477 \
requestClientApplication={ua} deviceFacility={pop} cs2=true cs2Label=Javascript Support cs3=true cs3Label=CO Support \
cs1=NOT_SUPPORTED cs1Label=Cap Support cs4={v1:08x}-0e8a-4dd8-b13b-{v2:012x} cs4Label=VID cs5={v3:016x}{v4:016x} cs5Label=clappsig \
dproc=Browser cs6=Chrome cs6Label=clapp ccode={cc} cicode={city} cs7={lat} cs7Label=latitude cs8={lon} cs8Label=longitude \
Customer=CEFcustomer123 siteTag=my-site-tag start={start} request=shop{site}.example.com/{path} requestMethod={method}{qs} cn1={status} \
app=HTTPS act={act} deviceExternalId={ext} sip=10.1.{s1}.{s2} spt=443 in={bytes} xff=198.51.100.{x} cpt={cpt} src=203.0.{a}.{b} \
ver=TLSv1.3 TLS_AES_128_GCM_SHA256 end={end} additionalReqHeaders=[{{\"Accept\":\"*/*\"}},{{\"x-request-id\":\"{v2:012x}\"}}] \
additionalResHeaders=[{{\"Content-Type\":\"text/html; charset\\=UTF-8\"}}]{rules}",
        fid = 3_412_341_160_002_518_171u64.wrapping_add(i),
        site = r.below(40),
        sid = 1_509_000 + r.below(40),
        ua = r.pick(UAS),
        pop = r.pick(POPS),
        v1 = r.next() as u32,
        v2 = r.next() & 0xffff_ffff_ffff,
        v3 = r.next(),
        v4 = r.next(),
        path = r.pick(PATHS),
        method = if r.below(5) == 0 { "POST" } else { "GET" },
        qs = if q.is_empty() {
            String::new()
        } else {
            format!(" qstr={q}")
        },
        status = if act.starts_with("REQ_BLOCKED") { 403 } else { 200 },
        ext = 33_411_452_762_204_224u64.wrapping_add(i * 7),
        s1 = r.below(255),
        s2 = r.below(255),
        bytes = 200 + r.below(5000),
        x = r.below(255),
        cpt = 1024 + r.below(60000),
        a = r.below(255),
        b = r.below(255),
        end = start + r.below(2000),
    );
}

const SS_CLASSES: &[(&str, &str, &str)] = &[
    ("Signature", "suspicious-pattern", "High"),
    ("Protocol", "Double URL Encoding", "Low"),
    ("Firewall", "SSL Untraceable Connection", "Medium"),
    ("Custom", "custom-policy-violation", "High"),
    ("Correlation", "sql-injection", "High"),
];

/// One SecureSphere line with a syslog envelope (no newline).
fn securesphere_line(r: &mut Rng, i: u64, out: &mut String) {
    use std::fmt::Write;
    let (class, name, sev) = SS_CLASSES[r.below(SS_CLASSES.len() as u64) as usize];
    let secs = i % 86_400;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let envelope = if r.below(2) == 0 {
        format!("<14>Nov 15 {h:02}:{m:02}:{s:02} waf-gw{} ", r.below(4))
    } else {
        "<14>".to_string()
    };
    let _ = write!(
        out,
        "{envelope}CEF:0|Imperva Inc.|SecureSphere|15.1.0|{class}|{name}|{sev}|act={act} dst=10.{d1}.{d2}.{d3} dpt=443 \
duser={user} src=198.51.{s1}.{s2} spt={spt} proto=TCP rt=Nov 15 2023 {h:02}:{m:02}:{s:02} cat=Alert \
cs1=Web Correlation Policy cs1Label=Policy cs2=Web Servers cs2Label=ServerGroup cs3=shop-https cs3Label=ServiceName \
cs4=Shop Application cs4Label=ApplicationName cs5=GET /search?q\\={q} cs5Label=Description cs6=GET cs6Label=HTTPHeaderRequest-URLMethod",
        act = if r.below(3) == 0 { "None" } else { "block" },
        d1 = r.below(255),
        d2 = r.below(255),
        d3 = r.below(255),
        user = if r.below(4) == 0 { "${Alert.username}" } else { "n/a" },
        s1 = r.below(255),
        s2 = r.below(255),
        spt = 1024 + r.below(60000),
        q = ["1%27%20or%20%271%27%3d%271", "abc", "x\\\\y"][r.below(3) as usize],
    );
}

/// Append `count` lines of `kind` (each ending in `\n`) to `out`.
pub fn lines(kind: Kind, count: u64, seed: u64, out: &mut String) {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0..count {
        let cloud = match kind {
            Kind::CloudWaf => true,
            Kind::SecureSphere => false,
            Kind::Mixed => i % 4 != 3,
        };
        if cloud {
            cloud_line(&mut r, i, out);
        } else {
            securesphere_line(&mut r, i, out);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized_like_real_traffic() {
        let mut a = String::new();
        let mut b = String::new();
        lines(Kind::CloudWaf, 200, 1, &mut a);
        lines(Kind::CloudWaf, 200, 1, &mut b);
        assert_eq!(a, b);
        let avg = a.len() / 200;
        assert!((900..1400).contains(&avg), "cloud avg {avg}");
        let mut s = String::new();
        lines(Kind::SecureSphere, 200, 1, &mut s);
        let avg = s.len() / 200;
        assert!((400..650).contains(&avg), "securesphere avg {avg}");
    }
}
