//! DestinationPolicy → the DestinationRule of its destination host: the whole service's
//! traffic policy when the policy names no labels, else the policy of the subset its labels
//! select.

use serde_json::{json, Map, Value};

use super::spec::{DestinationPolicy, SimpleCircuitBreaker};
use super::{duration, host_of, Converter, Problem, Source};

impl Converter {
    pub(super) fn destination_policy(&mut self, src: &Source, p: DestinationPolicy) -> Result<(), Problem> {
        let host = host_of(&p.destination, &src.namespace, "destination")?;
        let mut notes = Vec::new();
        let mut note = |field: &str, text: String| notes.push(src.note(field, text));
        let mut policy = Map::new();
        if let Some(lb) = &p.load_balancing {
            if let Some(name) = &lb.name {
                let simple = match name.to_ascii_uppercase().as_str() {
                    "ROUND_ROBIN" => "ROUND_ROBIN",
                    // v1's name for the same Envoy policy (LEAST_CONN is its deprecated alias).
                    "LEAST_CONN" => "LEAST_REQUEST",
                    "RANDOM" => "RANDOM",
                    other => return Err(("loadBalancing.name".into(), format!("{other:?} is not ROUND_ROBIN, LEAST_CONN or RANDOM"))),
                };
                policy.insert("loadBalancer".into(), json!({"simple": simple}));
            }
            if lb.custom.is_some() {
                note("loadBalancing.custom", "no v1 equivalent; not converted".into());
            }
        }
        if let Some(cb) = &p.circuit_breaker {
            if let Some(simple) = &cb.simple_cb {
                circuit_breaker(simple, &mut policy)?;
            }
            if cb.custom.is_some() {
                note("circuitBreaker.custom", "no v1 equivalent; not converted".into());
            }
        }
        if p.custom.is_some() {
            note("custom", "no v1 equivalent; not converted".into());
        }
        if let Some(source) = &p.source {
            let caller = source.name.as_ref().or(source.service.as_ref()).map_or("one caller".to_string(), |c| c.clone());
            note(
                "source",
                format!(
                    "a v1 DestinationRule applies to every caller: this policy now applies to calls from every workload, not only {caller}"
                ),
            );
        }
        let policy = Value::Object(policy);
        let subset = (!p.destination.labels.is_empty()).then(|| self.subset(src, &host, &p.destination.labels));
        let dr = self.destination_rules.entry((src.namespace.clone(), host)).or_default();
        dr.built.from(src);
        match subset {
            None if dr.policy.is_some() => {
                note("destination", "another DestinationPolicy already sets this service's policy; this one is not converted".into())
            }
            None => dr.policy = Some(policy),
            Some(name) => {
                if let Some(s) = dr.subsets.get_mut(&name) {
                    if s.1.is_some() {
                        note(
                            "destination.labels",
                            format!("another DestinationPolicy already sets subset {name}'s policy; this one is not converted"),
                        );
                    } else {
                        s.1 = Some(policy);
                    }
                }
            }
        }
        dr.built.notes.extend(notes);
        Ok(())
    }
}

/// `simpleCb` as v1's connection pool and outlier detection, field by field.
fn circuit_breaker(cb: &SimpleCircuitBreaker, policy: &mut Map<String, Value>) -> Result<(), Problem> {
    let mut tcp = Map::new();
    if let Some(n) = cb.max_connections {
        tcp.insert("maxConnections".into(), json!(n));
    }
    let mut http = Map::new();
    for (v1, value) in [
        ("http1MaxPendingRequests", cb.http_max_pending_requests),
        ("http2MaxRequests", cb.http_max_requests),
        ("maxRequestsPerConnection", cb.http_max_requests_per_connection),
        ("maxRetries", cb.http_max_retries),
    ] {
        if let Some(n) = value {
            http.insert(v1.into(), json!(n));
        }
    }
    let mut pool = Map::new();
    if !tcp.is_empty() {
        pool.insert("tcp".into(), Value::Object(tcp));
    }
    if !http.is_empty() {
        pool.insert("http".into(), Value::Object(http));
    }
    if !pool.is_empty() {
        policy.insert("connectionPool".into(), Value::Object(pool));
    }
    let mut outlier = Map::new();
    if let Some(n) = cb.http_consecutive_errors {
        // 0.x counted 5xx responses, as v1's consecutive5xxErrors does.
        outlier.insert("consecutive5xxErrors".into(), json!(n));
    }
    if let Some(d) = &cb.http_detection_interval {
        outlier.insert("interval".into(), duration(d, "circuitBreaker.simpleCb.httpDetectionInterval")?);
    }
    if let Some(d) = &cb.sleep_window {
        outlier.insert("baseEjectionTime".into(), duration(d, "circuitBreaker.simpleCb.sleepWindow")?);
    }
    if let Some(n) = cb.http_max_ejection_percent {
        outlier.insert("maxEjectionPercent".into(), json!(n));
    }
    if !outlier.is_empty() {
        policy.insert("outlierDetection".into(), Value::Object(outlier));
    }
    Ok(())
}
