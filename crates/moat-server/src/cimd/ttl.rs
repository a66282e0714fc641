//! How long a fetched document may be reused, from its HTTP caching headers (RFC 9111 §4.2).
//! Moat is a private cache: `max-age` wins over `Expires`; `no-store`/`no-cache` mean no reuse;
//! without headers a short heuristic lifetime applies; everything is capped.

use std::time::{Duration, SystemTime};

/// Freshness lifetime used when the response says nothing (RFC 9111 §4.2.2 allows a heuristic).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Upper bound, whatever the headers say.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The freshness lifetime of a response.
pub fn freshness(
    cache_control: Option<&str>,
    expires: Option<&str>,
    date: Option<&str>,
    age: Option<&str>,
    now: SystemTime,
) -> Duration {
    let mut max_age = None;
    if let Some(cc) = cache_control {
        for directive in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            if directive == "no-store" || directive == "no-cache" || directive.starts_with("no-cache=") {
                return Duration::ZERO;
            }
            if let Some(v) = directive.strip_prefix("max-age=") {
                // A malformed max-age is treated as stale (RFC 9111 §4.2.1).
                let value = v.trim_matches('"').parse::<u64>().unwrap_or(0);
                // Conflicting max-age directives (more likely now that every Cache-Control
                // field line is combined, RFC 9110 §5.3) make the response stale: RFC 9111
                // §4.2.1 allows either the first or "stale"; stale cannot be abused to
                // stretch a lifetime.
                if max_age.is_some_and(|m| m != value) {
                    return Duration::ZERO;
                }
                max_age = Some(value);
            }
        }
    }
    let age = age.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
    let lifetime = match max_age {
        Some(m) => Duration::from_secs(m.saturating_sub(age)),
        None => match expires.map(httpdate::parse_http_date) {
            // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
            Some(Err(_)) => Duration::ZERO,
            Some(Ok(exp)) => {
                let base = date.and_then(|d| httpdate::parse_http_date(d).ok()).unwrap_or(now);
                exp.duration_since(base).unwrap_or(Duration::ZERO).saturating_sub(Duration::from_secs(age))
            }
            None => DEFAULT_TTL,
        },
    };
    lifetime.min(MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cache_control_and_expires() {
        let now = at(1_700_000_000);
        let f = |cc: Option<&str>, exp: Option<&str>, age: Option<&str>| freshness(cc, exp, None, age, now);
        assert_eq!(f(Some("public, max-age=600"), None, None), Duration::from_secs(600));
        assert_eq!(f(Some("max-age=600"), None, Some("100")), Duration::from_secs(500));
        assert_eq!(f(Some("no-store"), None, None), Duration::ZERO);
        assert_eq!(f(Some("max-age=600, no-cache"), None, None), Duration::ZERO);
        assert_eq!(f(Some("max-age=junk"), None, None), Duration::ZERO);
        assert_eq!(f(Some("max-age=99999999"), None, None), MAX_TTL);
        assert_eq!(f(Some("max-age=600, max-age=600"), None, None), Duration::from_secs(600));
        assert_eq!(f(Some("max-age=600, max-age=60000"), None, None), Duration::ZERO, "conflicting max-age");
        assert_eq!(f(Some("max-age=600, public, no-store"), None, None), Duration::ZERO);
        assert_eq!(f(None, None, None), DEFAULT_TTL);
        let in_an_hour = httpdate::fmt_http_date(now + Duration::from_secs(3600));
        assert_eq!(f(None, Some(&in_an_hour), None), Duration::from_secs(3600));
        assert_eq!(f(Some("max-age=60"), Some(&in_an_hour), None), Duration::from_secs(60), "max-age wins");
        assert_eq!(f(None, Some("0"), None), Duration::ZERO);
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(f(None, Some(&past), None), Duration::ZERO);
    }
}
