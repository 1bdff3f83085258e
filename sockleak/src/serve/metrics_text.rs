//! The Prometheus text format (0.0.4) for scrapers and tools that do not ask for OpenMetrics
//! (`curl`, `promtool check metrics`). prometheus-client writes OpenMetrics, where a counter
//! family `x` has samples `x_total`; in the text format the family is named like its samples,
//! and `# UNIT` and `# EOF` do not exist.

use hashbrown::HashMap;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the client's Accept header asks for OpenMetrics (Prometheus does).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text -> Prometheus text 0.0.4.
pub fn from_openmetrics(om: &str) -> String {
    let mut types: HashMap<&str, &str> = HashMap::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, t)) = rest.split_once(' ')
        {
            types.insert(name, t.trim());
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        let Some((prefix, rest)) = meta else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, tail) = match types.get(name).copied() {
            Some("counter") if !name.ends_with("_total") => {
                (format!("{name}_total"), tail.to_string())
            }
            Some("info") if prefix == "# TYPE " => (format!("{name}_info"), "gauge".to_string()),
            Some("info") => (format!("{name}_info"), tail.to_string()),
            Some("unknown") if prefix == "# TYPE " => (name.to_string(), "untyped".to_string()),
            _ => (name.to_string(), tail.to_string()),
        };
        out.push_str(prefix);
        out.push_str(&name);
        out.push(' ');
        out.push_str(&tail);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_like_their_samples() {
        let om = "# HELP sockleak_lost_events Events lost.\n\
                  # TYPE sockleak_lost_events counter\n\
                  sockleak_lost_events_total{cause=\"x\"} 2\n\
                  # HELP sockleak_live_sockets Live.\n\
                  # TYPE sockleak_live_sockets gauge\n\
                  # UNIT sockleak_live_sockets sockets\n\
                  sockleak_live_sockets{pid=\"1\"} 5\n\
                  # HELP b Build.\n\
                  # TYPE b info\n\
                  b_info{v=\"1\"} 1\n\
                  # EOF\n";
        let text = from_openmetrics(om);
        assert_eq!(
            text,
            "# HELP sockleak_lost_events_total Events lost.\n\
             # TYPE sockleak_lost_events_total counter\n\
             sockleak_lost_events_total{cause=\"x\"} 2\n\
             # HELP sockleak_live_sockets Live.\n\
             # TYPE sockleak_live_sockets gauge\n\
             sockleak_live_sockets{pid=\"1\"} 5\n\
             # HELP b_info Build.\n\
             # TYPE b_info gauge\n\
             b_info{v=\"1\"} 1\n"
        );
    }

    #[test]
    fn negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
