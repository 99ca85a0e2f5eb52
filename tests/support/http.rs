//! The operations endpoint, read over HTTP as Prometheus and a kubelet would.

#![allow(dead_code)]

use std::time::Duration;

/// GET `http://{addr}{path}`: (status, body). Non-2xx statuses are answers, not errors.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("body");
    (status, body)
}

/// Scrape `/metrics` every `every` until `done(text)` holds (panicking
/// with the last scrape after `within`), then scrape once more and return
/// that. A scrape is not a snapshot: the registry reads its families one by
/// one in no fixed order, so the scrape that first shows the last input
/// counted may hold another family read before that input's counts landed.
/// Counters only grow, so a scrape begun after `done` held sees them all.
pub fn scrape_after(
    addr: &str,
    within: Duration,
    every: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        if done(&text) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "metrics:\n{text}");
        std::thread::sleep(every);
    }
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// The sum of every sample of `name` whose labels match.
pub fn sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let rest = rest.trim_end_matches('}');
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().expect("sample value"))
        })
        .sum()
}

/// The address from veil's "serving /metrics" log line (it may listen on port 0).
pub fn served_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("addr=")? + "addr=".len();
    Some(
        line[at..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .find(|s| !s.is_empty())?
            .to_owned(),
    )
}
