//! Secrets in what sockleak reads from a traced process. sockleak reads other processes'
//! environments as root, and proxy settings there routinely carry credentials
//! (`http://user:password@proxy:3128`). Every value taken from a traced process's environment
//! goes through here before it reaches a report, a metric or a log line.
//!
//! The whole userinfo is dropped, user name included (`http://***@proxy:3128`): a user name in
//! a proxy URL is often a token itself. Host and port stay, since they are what a diagnosis
//! needs.

/// What replaces the userinfo of a URL.
pub const MASK: &str = "***";

/// One URL (or a `user:pw@host:port` value without a scheme) with its userinfo replaced by
/// [`MASK`]. Everything up to the last `@` counts as userinfo: passwords may hold an unescaped
/// `@`, `/`, `?` or `#`, and masking too much is better than printing a secret.
pub fn url(value: &str) -> String {
    let (scheme, rest) = split_scheme(value);
    match rest.rfind('@') {
        Some(at) => format!("{scheme}{MASK}@{}", &rest[at + 1..]),
        None => value.to_string(),
    }
}

/// The value of an environment variable that holds a URL (`*_PROXY`) or a list of them
/// (`NO_PROXY`: comma-separated), each entry masked.
pub fn env_value(name: &str, value: &str) -> String {
    if name.eq_ignore_ascii_case("no_proxy") {
        value.split(',').map(url).collect::<Vec<_>>().join(",")
    } else {
        url(value)
    }
}

/// The host (brackets removed) and port a URL or `host:port` names, with the scheme's default
/// port. Reads the same authority [`url`] keeps, so a masked value still answers.
pub fn host_port(value: &str) -> Option<(String, u16)> {
    let (scheme, rest) = split_scheme(value.trim());
    let scheme = scheme.trim_end_matches("://").to_ascii_lowercase();
    let after_userinfo = rest.rsplit('@').next()?;
    let authority = after_userinfo.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()?),
        _ => (
            authority,
            match scheme.as_str() {
                "https" => 443,
                "socks5" | "socks5h" | "socks4" | "socks4a" | "socks" => 1080,
                _ => 80,
            },
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `("http://", "rest")` when the value starts with a URL scheme, else `("", value)`.
fn split_scheme(value: &str) -> (&str, &str) {
    if let Some(i) = value.find("://") {
        let s = &value[..i];
        let is_scheme = s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            return value.split_at(i + 3);
        }
    }
    ("", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            url("http://ops:s3cret@127.0.0.1:8080"),
            "http://***@127.0.0.1:8080"
        );
        assert_eq!(url("socks5://u:pw@[::1]:1080/"), "socks5://***@[::1]:1080/");
        assert_eq!(url("HTTPS://a:b@proxy.corp"), "HTTPS://***@proxy.corp");
    }

    #[test]
    fn odd_passwords_never_show() {
        for (value, secret) in [
            ("http://ops:p%40ss@127.0.0.1:3128", "p%40ss"),
            ("http://ops:pa@ss@127.0.0.1:3128", "pa@ss"),
            ("http://ops:a/b?c#d@127.0.0.1:3128", "a/b?c#d"),
            ("http://ops:@127.0.0.1:3128", "ops"),
            ("http://tok3n@127.0.0.1:3128", "tok3n"),
            ("ops:hunter2@proxy:3128", "hunter2"),
            ("tok3n@proxy", "tok3n"),
        ] {
            let shown = url(value);
            assert!(!shown.contains(secret), "{value} -> {shown}");
            assert!(shown.contains("***@"), "{value} -> {shown}");
            let (h, _) = host_port(&shown).unwrap();
            assert_eq!(host_port(value).unwrap().0, h, "{value}");
        }
    }

    #[test]
    fn values_without_userinfo_are_unchanged() {
        for v in [
            "http://127.0.0.1:8080/",
            "localhost:3128",
            "[::1]:80",
            "",
            "proxy",
        ] {
            assert_eq!(url(v), v);
        }
    }

    #[test]
    fn no_proxy_entries_are_masked_one_by_one() {
        assert_eq!(
            env_value("NO_PROXY", "localhost,.corp,http://u:p@10.0.0.1:80,[::1]"),
            "localhost,.corp,http://***@10.0.0.1:80,[::1]"
        );
        assert_eq!(
            env_value("no_proxy", "a@b,c"),
            "***@b,c",
            "an entry with an @ is masked too"
        );
        assert_eq!(env_value("https_proxy", "http://u:p@h:1"), "http://***@h:1");
    }

    #[test]
    fn host_and_port() {
        let hp = |s: &str| host_port(s);
        assert_eq!(
            hp("http://127.0.0.1:8080/"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(hp("localhost:3128"), Some(("localhost".into(), 3128)));
        assert_eq!(
            hp("https://user:pw@proxy.corp"),
            Some(("proxy.corp".into(), 443))
        );
        assert_eq!(hp("socks5://[::1]:1080"), Some(("::1".into(), 1080)));
        assert_eq!(hp("http://[::1]"), Some(("::1".into(), 80)));
        assert_eq!(hp("http://h:1/p?q#f"), Some(("h".into(), 1)));
        assert_eq!(
            hp("http://***@[fe80::1]:3128"),
            Some(("fe80::1".into(), 3128))
        );
        assert_eq!(hp(""), None);
        assert_eq!(hp("http://h:notaport"), None);
    }

    #[test]
    fn a_colon_before_the_scheme_separator_is_not_a_scheme() {
        // "u:p@h://x" has no scheme: all before the last @ is userinfo.
        assert_eq!(url("u:p@h://x"), "***@h://x");
    }
}
