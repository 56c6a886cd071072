//! Public-suffix split of host names (`www.test.com` → registered `test.com`, subdomain `www`,
//! top-level `com`) with the Public Suffix List compiled into the `psl` crate.

/// Parts of a host name per the Public Suffix List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainParts<'a> {
    pub registered_domain: &'a str,
    pub subdomain: Option<&'a str>,
    pub top_level_domain: &'a str,
}

/// Split a host name; `None` for IP addresses, single labels and unknown suffixes.
pub fn split(host: &str) -> Option<DomainParts<'_>> {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
        return None;
    }
    let registered = psl::domain_str(host)?;
    let tld = psl::suffix_str(host)?;
    let sub = host
        .len()
        .checked_sub(registered.len() + 1)
        .map(|n| &host[..n])
        .filter(|s| !s.is_empty());
    Some(DomainParts {
        registered_domain: registered,
        subdomain: sub,
        top_level_domain: tld,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_hosts() {
        let p = split("site123.abcd.info").unwrap();
        assert_eq!(
            (p.registered_domain, p.subdomain, p.top_level_domain),
            ("abcd.info", Some("site123"), "info")
        );
        let p = split("www.example.co.uk").unwrap();
        assert_eq!(
            (p.registered_domain, p.subdomain, p.top_level_domain),
            ("example.co.uk", Some("www"), "co.uk")
        );
        let p = split("example.org").unwrap();
        assert_eq!(p.subdomain, None);
        assert!(split("Distributed").is_none());
        assert!(split("1.2.3.4").is_none());
    }
}
