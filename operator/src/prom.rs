//! Reading the kept series from Prometheus instead of scraping every pod (`--prometheus-url`): one
//! instant query per network and reconcile, for exactly the network's pods. Where a cluster's
//! Prometheus already scrapes the node pods (their `prometheus.io/*` annotations, or a
//! PodMonitor), the operator then opens no connection to any pod for metrics.
//!
//! Sans-IO: the query, the request, and turning the answer into per-pod values. The answer is
//! rendered back into exposition lines and read by stressnet's one parser (`scrape::parse`), so
//! both sources keep the same series under the same names.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use soak::scrape;

/// How to reach Prometheus and which of its labels name a series' pod and namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Prometheus {
    /// `http://host:port` with an optional path prefix, no trailing slash.
    pub url: String,
    pub pod_label: String,
    pub namespace_label: String,
}

/// One pod's values from one answer.
#[derive(Clone, Debug, PartialEq)]
pub struct PodValues {
    /// The pod's index in the network's node order.
    pub pod: usize,
    /// When Prometheus scraped it (Unix seconds): the newest sample among its series.
    pub at: f64,
    pub values: BTreeMap<String, f64>,
}

fn label_name_ok(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl Prometheus {
    /// Checks the settings once, at start-up: a typo here would otherwise fail every query.
    pub fn new(url: &str, pod_label: &str, namespace_label: &str) -> Result<Prometheus, String> {
        let url = url.trim_end_matches('/');
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "prometheus url {url:?}: only http:// is supported (in-cluster Prometheus \
                 services are plain HTTP; put a TLS-terminating proxy in front otherwise)"
            )
        })?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("prometheus url {url:?}: {e}"))?;
        if uri.host().is_none_or(str::is_empty) || rest.starts_with('/') {
            return Err(format!("prometheus url {url:?}: no host"));
        }
        if uri.query().is_some() {
            return Err(format!("prometheus url {url:?}: no query string, please"));
        }
        for (what, l) in [
            ("pod label", pod_label),
            ("namespace label", namespace_label),
        ] {
            if !label_name_ok(l) {
                return Err(format!("prometheus {what} {l:?} is not a label name"));
            }
        }
        Ok(Prometheus {
            url: url.to_owned(),
            pod_label: pod_label.to_owned(),
            namespace_label: namespace_label.to_owned(),
        })
    }

    /// The PromQL selector for the kept series of these pods. Pod names and namespaces are DNS
    /// labels (`[a-z0-9-]`), so they stand in a regex alternation as they are.
    pub fn query(&self, namespace: &str, pods: &[String]) -> String {
        let names: Vec<&str> = metric_names().into_iter().collect();
        format!(
            "{{__name__=~\"{}\",{}=\"{}\",{}=~\"{}\"}}",
            names.join("|"),
            self.namespace_label,
            escape(namespace),
            self.pod_label,
            pods.iter().map(|p| escape(p)).collect::<Vec<_>>().join("|"),
        )
    }

    /// `POST /api/v1/query` with the query as a form (a 1,000-pod selector is too long for a URL).
    pub fn request(&self, query: &str, at_unix: f64) -> (hyper::Request<()>, Vec<u8>) {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("time", &format!("{at_unix:.3}"))
            .finish();
        let req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(format!("{}/api/v1/query", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(())
            .expect("the url was checked in new()");
        (req, body.into_bytes())
    }

    /// An answer to [`Prometheus::query`], as values per pod. Series of pods not in `pods` are
    /// ignored. Where Prometheus holds a series twice (two scrape jobs, or a restarted pod's old
    /// instance still within the lookback), the newer sample wins.
    pub fn parse(&self, code: u16, body: &str, pods: &[String]) -> Result<Vec<PodValues>, String> {
        let answer: Answer = serde_json::from_str(body).map_err(|e| {
            if code == 200 {
                format!("prometheus answer: {e}")
            } else {
                format!("prometheus: HTTP {code}")
            }
        })?;
        if answer.status != "success" {
            return Err(format!(
                "prometheus: {} ({})",
                answer.error.unwrap_or_default(),
                answer.error_type.unwrap_or_default()
            ));
        }
        let data = answer
            .data
            .ok_or_else(|| "prometheus answer: no data".to_owned())?;
        if data.result_type != "vector" {
            return Err(format!(
                "prometheus answer: a {} where a vector was asked for",
                data.result_type
            ));
        }
        let index: HashMap<&str, usize> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let own = node_labels();
        // pod -> series key (as the node renders it) -> (sample time, value text)
        let mut by_pod: BTreeMap<usize, BTreeMap<String, (f64, String)>> = BTreeMap::new();
        for s in data.result {
            let Some(&pod) = s
                .metric
                .get(&self.pod_label)
                .and_then(|p| index.get(p.as_str()))
            else {
                continue;
            };
            let Some(name) = s.metric.get("__name__") else {
                continue;
            };
            let labels: Vec<String> = s
                .metric
                .iter()
                .filter(|(k, _)| own.contains(k.as_str()))
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let key = if labels.is_empty() {
                name.clone()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            let (at, value) = s.value;
            match by_pod.entry(pod).or_default().entry(key) {
                Entry::Vacant(e) => {
                    e.insert((at, value));
                }
                Entry::Occupied(mut e) if at > e.get().0 => {
                    e.insert((at, value));
                }
                Entry::Occupied(_) => {}
            }
        }
        Ok(by_pod
            .into_iter()
            .map(|(pod, series)| {
                let at = series.values().map(|(t, _)| *t).fold(f64::MIN, f64::max);
                let text: String = series
                    .iter()
                    .map(|(k, (_, v))| format!("{k} {v}\n"))
                    .collect();
                PodValues {
                    pod,
                    at,
                    values: scrape::parse(&text),
                }
            })
            .collect())
    }
}

/// The metric names the kept series have (labels stripped), for the query's `__name__` matcher.
fn metric_names() -> BTreeSet<&'static str> {
    scrape::KEPT
        .iter()
        .map(|k| k.split('{').next().unwrap_or(k))
        .chain(scrape::SUMMED)
        .collect()
}

/// The label names the node itself puts on kept series. Every other label on a Prometheus series
/// (job, instance, pod, namespace, ...) was added by scraping and is dropped.
fn node_labels() -> BTreeSet<&'static str> {
    scrape::KEPT
        .iter()
        .filter_map(|k| k.split_once('{'))
        .flat_map(|(_, labels)| labels.trim_end_matches('}').split(','))
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .chain(scrape::SUMMED_LABELS)
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    error: Option<String>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`: Prometheus writes values as strings (`"NaN"`, `"+Inf"` too).
    value: (f64, String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prom() -> Prometheus {
        Prometheus::new("http://prometheus.monitoring.svc:9090/", "pod", "namespace").unwrap()
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(prom().url, "http://prometheus.monitoring.svc:9090");
        for bad in [
            "https://p:9090",
            "p:9090",
            "http://",
            "http:///x",
            "http://p?x=1",
        ] {
            assert!(Prometheus::new(bad, "pod", "namespace").is_err(), "{bad}");
        }
        assert!(Prometheus::new("http://p", "kubernetes-pod", "namespace").is_err());
        assert!(Prometheus::new("http://p/prom", "pod", "ns_1").is_ok());
    }

    #[test]
    fn the_query_names_every_kept_metric_and_exactly_the_pods() {
        let q = prom().query("soak", &["t-producer-0".into(), "t-eu-0".into()]);
        assert!(q.contains("namespace=\"soak\""), "{q}");
        assert!(q.contains("pod=~\"t-producer-0|t-eu-0\""), "{q}");
        for k in scrape::KEPT {
            let name = k.split('{').next().unwrap();
            assert!(q.contains(name), "{name} missing from {q}");
        }
        assert!(q.contains(scrape::SERVED_ALL), "{q}");
        assert_eq!(node_labels(), BTreeSet::from(["kind", "outcome", "reason"]));
        let (req, body) = prom().request(&q, 1_764_000_000.5);
        assert_eq!(req.method(), hyper::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://prometheus.monitoring.svc:9090/api/v1/query"
        );
        let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(form["query"], q);
        assert_eq!(form["time"], "1764000000.500");
    }

    #[test]
    fn an_answer_becomes_the_same_values_a_scrape_gives() {
        let pods: Vec<String> = vec!["t-producer-0".into(), "t-eu-0".into()];
        let series = |name: &str, pod: &str, extra: serde_json::Value, at: f64, v: &str| {
            let mut m = json!({"__name__": name, "pod": pod, "namespace": "soak",
                               "job": "kubernetes-pods", "instance": "10.0.0.1:9100"});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"metric": m, "value": [at, v]})
        };
        let body = json!({"status": "success", "data": {"resultType": "vector", "result": [
            series("syncnet_chain_head_height", "t-eu-0", json!({}), 100.0, "41"),
            // The same series from a restarted pod's old instance: older, so it loses.
            series("syncnet_chain_head_height", "t-eu-0", json!({"instance": "10.0.0.9:9100"}), 70.0, "12"),
            series("syncnet_p2p_stream_setups_total", "t-eu-0", json!({"outcome": "ok"}), 100.0, "7"),
            series("syncnet_p2p_stream_setups_total", "t-eu-0", json!({"outcome": "refused"}), 100.0, "3"),
            series("syncnet_sync_served_total", "t-eu-0", json!({"kind": "status", "outcome": "ok"}), 100.0, "4"),
            series("syncnet_sync_served_total", "t-eu-0", json!({"kind": "blocks_by_range", "outcome": "ok"}), 100.0, "5"),
            series("syncnet_sync_lag", "t-eu-0", json!({}), 100.0, "NaN"),
            series("syncnet_chain_head_height", "t-producer-0", json!({}), 95.0, "42"),
            // Another network's pod in the same namespace: not ours.
            series("syncnet_chain_head_height", "u-eu-0", json!({}), 100.0, "9"),
        ]}})
        .to_string();
        let got = prom().parse(200, &body, &pods).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].pod, got[0].at), (0, 95.0));
        assert_eq!(got[0].values["syncnet_chain_head_height"], 42.0);
        let eu = &got[1];
        assert_eq!((eu.pod, eu.at), (1, 100.0));
        assert_eq!(eu.values["syncnet_chain_head_height"], 41.0);
        assert_eq!(
            eu.values["syncnet_p2p_stream_setups_total{outcome=\"ok\"}"],
            7.0
        );
        assert_eq!(eu.values[scrape::SETUPS_ALL], 10.0, "every outcome, once");
        assert_eq!(
            eu.values[scrape::SERVED_ALL],
            9.0,
            "every kind, kept apart, summed"
        );
        assert!(
            !eu.values.contains_key("syncnet_sync_lag"),
            "NaN is no value"
        );
    }

    #[test]
    fn errors_are_named_not_taken_for_empty_answers() {
        let pods = vec!["t-eu-0".to_owned()];
        let e = prom()
            .parse(
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
                &pods,
            )
            .unwrap_err();
        assert!(
            e.contains("parse error at char 3") && e.contains("bad_data"),
            "{e}"
        );
        let e = prom()
            .parse(502, "<html>bad gateway</html>", &pods)
            .unwrap_err();
        assert!(e.contains("HTTP 502"), "{e}");
        let ok = |result_type: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"{result_type}","result":[]}}}}"#)
        };
        let e = prom().parse(200, &ok("matrix"), &pods).unwrap_err();
        assert!(e.contains("matrix"), "{e}");
        let e = prom().parse(200, "{", &pods).unwrap_err();
        assert!(e.contains("prometheus answer"), "{e}");
        let empty = prom().parse(200, &ok("vector"), &pods).unwrap();
        assert!(empty.is_empty());
    }
}
