//! Prometheus exposition shared by every FINCORP daemon's `/metrics`:
//! prometheus-client writes OpenMetrics; scrapers that ask for it get it, and
//! everyone else (curl, `promtool check metrics`, older Prometheus) gets the
//! classic text format 0.0.4.

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts prometheus-client's OpenMetrics text to the Prometheus text
/// format 0.0.4: counter families are named with their `_total` suffix,
/// and `# UNIT` / `# EOF` lines are dropped.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Picks the format by the request's `Accept` header: (content type, body).
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT_004, to_text_004(&openmetrics))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{code=\"200\"} 3\n\
                      # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";

    #[test]
    fn counters_get_their_total_suffix_and_the_eof_goes() {
        assert_eq!(
            to_text_004(OM),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{code=\"200\"} 3\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn openmetrics_is_served_only_to_those_who_ask() {
        assert_eq!(
            negotiate(
                Some("application/openmetrics-text;version=1.0.0"),
                OM.into()
            )
            .0,
            OPENMETRICS
        );
        assert_eq!(negotiate(None, OM.into()).0, TEXT_004);
        assert_eq!(negotiate(Some("*/*"), OM.into()).0, TEXT_004);
    }
}
