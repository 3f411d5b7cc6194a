//! Envoy's tag extraction: how a stat name (`cluster.reviews.upstream_rq_200`) becomes a
//! tag-extracted name (`cluster.upstream_rq`) and tags (`envoy.cluster_name="reviews"`,
//! `envoy.response_code="200"`), which `/stats/prometheus` prints as a metric and its labels.
//!
//! The extractors, their order and their matching follow Envoy 1.40's `TagProducerImpl`:
//! Envoy's default tags (`use_all_default_tags`, on unless set false) come first, then the
//! bootstrap's `stats_tags` in order; an extractor whose regex starts with a literal first
//! token (`^cluster\.`) only sees stats with that first token, and those run after the others;
//! when several extractors share a tag name, the first that matches wins. A `regex` in
//! `stats_tags` is an ECMAScript regex in Envoy (lookahead included), so it is compiled with
//! `fancy-regex`; Envoy's own defaults are RE2.

use std::collections::{HashMap, HashSet};

/// One of the bootstrap's `stats_tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSpec {
    Regex {
        name: String,
        regex: String,
    },
    Fixed {
        name: String,
        value: String,
    },
    /// No regex and no value: Envoy's default extractors of that name.
    Default {
        name: String,
    },
}

#[derive(Debug)]
enum Matcher {
    /// Envoy's defaults (RE2): both capture groups must be present for a match. Compiled
    /// without Unicode: RE2's `\w` and `\d` are ASCII, and Unicode classes made the default set
    /// cost a static sidecar some 5 MB.
    Re2 {
        re: regex::bytes::Regex,
        negative: Option<&'static str>,
    },
    /// `stats_tags` regexes (std::regex, ECMAScript in Envoy).
    Std(fancy_regex::Regex),
    /// Envoy's tokenized defaults: `cluster.$.**`.
    Tokens {
        tokens: Vec<&'static str>,
        at: usize,
    },
    Fixed(String),
}

#[derive(Debug)]
struct Extractor {
    name: String,
    /// Only stats containing this run the extractor (Envoy's `substr`).
    substr: &'static str,
    matcher: Matcher,
    /// Another extractor has the same tag name.
    shared_name: bool,
}

/// Turns stat names into tag-extracted names and tags.
#[derive(Debug)]
pub struct TagProducer {
    extractors: Vec<Extractor>,
    /// Indices of extractors that run on every stat, in order.
    without_prefix: Vec<usize>,
    /// Indices by the first token of the stats they run on.
    by_prefix: HashMap<String, Vec<usize>>,
}

/// Envoy 1.40's default RE2 extractors: (tag name, regex, substr, value that disables it).
const DEFAULT_RE2: &[(&str, &str, &str, Option<&str>)] = &[
    ("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_", None),
    ("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_", None),
    (
        "envoy.dynamo_partition_id",
        r"^http\.[^\.]+\.dynamodb\.table\.[^\.]+\.capacity\.[^\.]+(\.__partition_id=(\w{7}))$",
        ".dynamodb.table.",
        None,
    ),
    ("envoy.dynamo_operation", r"^http\.[^\.]+\.dynamodb.(?:operation|table\.[^\.]+\.capacity)(\.([^\.]+))(?:\.|$)", ".dynamodb.", None),
    ("envoy.dynamo_table", r"^http\.[^\.]+\.dynamodb.(?:table|error)\.(([^\.]+)\.)", ".dynamodb.", None),
    ("envoy.ssl_cipher", r"^listener\..*?\.ssl\.ciphers(\.([\w-]+))$", ".ssl.ciphers.", None),
    ("envoy.ssl_curve", r"^(?:listener|cluster)\..*?\.ssl\.curves(\.([\w-]+))$", ".ssl.curves.", None),
    ("envoy.ssl_sigalg", r"^(?:listener|cluster)\..*?\.ssl\.sigalgs(\.([\w-]+))$", ".ssl.sigalgs.", None),
    ("envoy.ssl_version", r"^(?:listener|cluster)\..*?\.ssl\.versions(\.(TLSv\d\.\d))$", ".ssl.versions.", None),
    ("cipher_suite", r"^cluster\.[^\.]+\.ssl\.ciphers(\.([\w-]+))$", ".ssl.ciphers.", None),
    ("envoy.http_conn_manager_prefix", r"^listener\..*?\.http\.(([^\.]+)\.)", ".http.", None),
    (
        "envoy.worker_id",
        r"^(?:listener\.(?:(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)|[^\.]+)\.|server\.|listener_manager\.)worker_((\d+)\.)",
        "",
        None,
    ),
    (
        "envoy.listener_address",
        r"^listener\.(((?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)|[^\.]+)\.)",
        "",
        Some("admin"),
    ),
    ("envoy.rds_route_config", r"^http\.[^\.]+\.rds\.(([\w\-.]+)\.)\w+?$", ".rds.", None),
];

/// Envoy 1.40's default tokenized extractors: `*` is one token, `**` one or more, `$` the
/// token that is the tag's value.
const DEFAULT_TOKENS: &[(&str, &str)] = &[
    ("envoy.mongo_callsite", "mongo.*.collection.*.callsite.$.query.**"),
    ("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    ("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    ("envoy.http_user_agent", "http.*.user_agent.$.**"),
    ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    ("envoy.tcp_prefix", "tcp.$.**"),
    ("envoy.udp_prefix", "udp.$.**"),
    ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    ("envoy.ratelimit_prefix", "ratelimit.$.**"),
    ("envoy.cluster_name", "cluster.$.**"),
    ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    ("envoy.http_conn_manager_prefix", "http.$.**"),
    ("envoy.virtual_host", "vhost.$.**"),
    ("envoy.mongo_prefix", "mongo.$.**"),
    ("envoy.route", "vhost.*.route.$.**"),
    ("envoy.thrift_prefix", "thrift.$.**"),
    ("envoy.redis_prefix", "redis.$.**"),
    ("envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"),
    ("envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"),
    ("envoy.local_listener_ratelimit_prefix", "listener_local_ratelimit.$.**"),
    ("envoy.dns_filter_prefix", "dns_filter.$.**"),
];

impl Default for TagProducer {
    /// Envoy's default tags only.
    fn default() -> Self {
        // The default set is built from constants that are tested to compile.
        #[allow(clippy::expect_used)]
        TagProducer::new(&[], true).expect("Envoy's default tag extractors compile")
    }
}

impl TagProducer {
    /// Envoy's defaults (when `use_defaults`), then `specs` in order. An error names the spec
    /// (by index) and why.
    pub fn new(specs: &[TagSpec], use_defaults: bool) -> Result<TagProducer, (usize, String)> {
        let mut extractors = Vec::new();
        let defaults = |name: &str| -> Vec<Extractor> {
            let mut out = Vec::new();
            for (n, re, substr, negative) in DEFAULT_RE2 {
                if name.is_empty() || *n == name {
                    // Constants, compiled in tests.
                    if let Ok(re) = re2(re) {
                        out.push(Extractor {
                            name: (*n).to_string(),
                            substr,
                            matcher: Matcher::Re2 { re, negative: *negative },
                            shared_name: false,
                        });
                    }
                }
            }
            for (n, pattern) in DEFAULT_TOKENS {
                if name.is_empty() || *n == name {
                    let tokens: Vec<&'static str> = pattern.split('.').collect();
                    let at = tokens.iter().position(|t| *t == "$").unwrap_or(0);
                    out.push(Extractor { name: (*n).to_string(), substr: "", matcher: Matcher::Tokens { tokens, at }, shared_name: false });
                }
            }
            out
        };
        if use_defaults {
            extractors.extend(defaults(""));
        }
        for (i, spec) in specs.iter().enumerate() {
            match spec {
                TagSpec::Regex { name, regex } => {
                    let re = fancy_regex::Regex::new(regex).map_err(|e| (i, format!("invalid regex {regex:?}: {e}")))?;
                    extractors.push(Extractor { name: name.clone(), substr: "", matcher: Matcher::Std(re), shared_name: false });
                }
                TagSpec::Fixed { name, value } => extractors.push(Extractor {
                    name: name.clone(),
                    substr: "",
                    matcher: Matcher::Fixed(value.clone()),
                    shared_name: false,
                }),
                TagSpec::Default { name } => {
                    let found = defaults(name);
                    if found.is_empty() {
                        return Err((i, format!("no regex and no default regex for tag name {name:?}")));
                    }
                    extractors.extend(found);
                }
            }
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for e in &extractors {
            *seen.entry(e.name.clone()).or_default() += 1;
        }
        for e in &mut extractors {
            e.shared_name = seen.get(&e.name).is_some_and(|n| *n > 1);
        }
        let (mut without_prefix, mut by_prefix) = (Vec::new(), HashMap::<String, Vec<usize>>::new());
        for (i, e) in extractors.iter().enumerate() {
            match prefix_token(e) {
                Some(p) => by_prefix.entry(p).or_default().push(i),
                None => without_prefix.push(i),
            }
        }
        Ok(TagProducer { extractors, without_prefix, by_prefix })
    }

    /// The tag-extracted name and the tags, in Envoy's order.
    pub fn produce(&self, name: &str) -> (String, Vec<(String, String)>) {
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut remove: Vec<(usize, usize)> = Vec::new();
        let mut matched_shared: HashSet<&str> = HashSet::new();
        let tokens: Vec<&str> = name.split('.').collect();
        let first = name.split_once('.').map(|(f, _)| f);
        let prefixed = first.and_then(|f| self.by_prefix.get(f)).map(Vec::as_slice).unwrap_or_default();
        for &i in self.without_prefix.iter().chain(prefixed) {
            let e = &self.extractors[i];
            if e.shared_name && matched_shared.contains(e.name.as_str()) {
                continue;
            }
            if !e.substr.is_empty() && !name.contains(e.substr) {
                continue;
            }
            if let Some((value, range)) = extract(&e.matcher, name, &tokens) {
                tags.push((e.name.clone(), value));
                if let Some(r) = range {
                    remove.push(r);
                }
                if e.shared_name {
                    matched_shared.insert(e.name.as_str());
                }
            }
        }
        let extracted: String =
            name.char_indices().filter(|(at, _)| !remove.iter().any(|(s, e)| at >= s && at < e)).map(|(_, c)| c).collect();
        (extracted, tags)
    }
}

/// Envoy's `extractRegexPrefix` / the first literal token of a tokenized pattern.
fn prefix_token(e: &Extractor) -> Option<String> {
    match &e.matcher {
        Matcher::Tokens { tokens, .. } => tokens.first().filter(|t| !matches!(**t, "$" | "*" | "**")).map(|t| t.to_string()),
        Matcher::Re2 { re, .. } => regex_prefix(re.as_str()),
        Matcher::Std(re) => regex_prefix(re.as_str()),
        Matcher::Fixed(_) => None,
    }
}

/// An RE2 pattern of Envoy's defaults: ASCII classes, matched over bytes.
fn re2(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern).unicode(false).build()
}

fn regex_prefix(re: &str) -> Option<String> {
    let body = re.strip_prefix('^')?;
    let end = body.find(|c: char| !c.is_ascii_alphanumeric() && c != '_')?;
    let rest = &body[end..];
    let last = rest.len() == 1;
    let ok = end > 0 && ((!last && (rest.starts_with("\\.") || rest.starts_with("(?=\\."))) || (last && rest == "$"));
    ok.then(|| body[..end].to_string())
}

/// The tag value and the byte range to remove from the name, when the extractor matches.
fn extract(m: &Matcher, name: &str, tokens: &[&str]) -> Option<(String, Option<(usize, usize)>)> {
    match m {
        Matcher::Fixed(v) => Some((v.clone(), None)),
        Matcher::Re2 { re, negative } => {
            let c = re.captures(name.as_bytes())?;
            let remove = c.get(1).filter(|g| !g.is_empty())?;
            let value = std::str::from_utf8(c.get(2).filter(|g| !g.is_empty()).unwrap_or(remove).as_bytes()).ok()?;
            if negative.is_some_and(|n| n == value) {
                return None;
            }
            Some((value.to_string(), Some((remove.start(), remove.end()))))
        }
        Matcher::Std(re) => {
            let c = re.captures(name).ok()??;
            let remove = c.get(1);
            let value = if c.len() > 2 { c.get(2).map_or("", |g| g.as_str()) } else { remove.map_or("", |g| g.as_str()) };
            Some((value.to_string(), remove.map(|g| (g.start(), g.end()))))
        }
        Matcher::Tokens { tokens: pattern, at } => {
            let mut found = (0, tokens.len());
            if !search_tokens(pattern, *at, tokens, 0, 0, 0, &mut found) || found.1 >= tokens.len() {
                return None;
            }
            let (start, index) = found;
            let value = tokens[index];
            let mut range = (start, start + value.len());
            if index + 1 < tokens.len() {
                range.1 += 1;
            } else if start > 0 {
                range.0 -= 1;
            }
            Some((value.to_string(), Some(range)))
        }
    }
}

/// Envoy's `TagExtractorTokensImpl::searchTags`, step for step: true when `input` from `ii`
/// matches `pattern` from `pi`; `found` gets the `$` token's byte offset and index.
fn search_tokens(
    pattern: &[&str],
    at: usize,
    input: &[&str],
    mut ii: usize,
    mut pi: usize,
    mut offset: usize,
    found: &mut (usize, usize),
) -> bool {
    while ii < input.len() && pi < pattern.len() {
        if pi == at {
            *found = (offset, ii);
        } else {
            let want = pattern[pi];
            if want == "**" {
                if pi == pattern.len() - 1 {
                    return true;
                }
                pi += 1;
                while ii < input.len() {
                    if search_tokens(pattern, at, input, ii, pi, offset, found) {
                        return true;
                    }
                    offset += input[ii].len() + 1;
                    ii += 1;
                }
                return false;
            }
            if want != "*" && want != input[ii] {
                return false;
            }
            offset += input[ii].len() + 1;
        }
        ii += 1;
        pi += 1;
    }
    pi == pattern.len() && ii == input.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(p: &TagProducer, name: &str) -> (String, Vec<(String, String)>) {
        p.produce(name)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn envoy_defaults() {
        let p = TagProducer::default();
        assert_eq!(
            tags(&p, "cluster.out|80||a.b.c.upstream_rq_503"),
            ("cluster.b.c.upstream_rq".into(), pairs(&[("envoy.response_code", "503"), ("envoy.cluster_name", "out|80||a")]))
        );
        assert_eq!(
            tags(&p, "cluster.up.upstream_rq_2xx"),
            ("cluster.upstream_rq_xx".into(), pairs(&[("envoy.response_code_class", "2"), ("envoy.cluster_name", "up")]))
        );
        assert_eq!(
            tags(&p, "http.ingress.downstream_rq_total"),
            ("http.downstream_rq_total".into(), pairs(&[("envoy.http_conn_manager_prefix", "ingress")]))
        );
        assert_eq!(
            tags(&p, "listener.127.0.0.1_10000.downstream_cx_total"),
            ("listener.downstream_cx_total".into(), pairs(&[("envoy.listener_address", "127.0.0.1_10000")]))
        );
        assert_eq!(tags(&p, "listener.admin.downstream_cx_total"), ("listener.admin.downstream_cx_total".into(), vec![]));
        assert_eq!(tags(&p, "tcp.t.downstream_cx_total"), ("tcp.downstream_cx_total".into(), pairs(&[("envoy.tcp_prefix", "t")])));
        assert_eq!(
            tags(&p, "cluster.c.ssl.versions.TLSv1.3"),
            ("cluster.ssl.versions".into(), pairs(&[("envoy.ssl_version", "TLSv1.3"), ("envoy.cluster_name", "c")]))
        );
        assert_eq!(tags(&p, "server.live"), ("server.live".into(), vec![]));
        for (_, re, _, _) in DEFAULT_RE2 {
            assert!(re2(re).is_ok(), "{re}");
        }
        assert_eq!(p.extractors.len(), DEFAULT_RE2.len() + DEFAULT_TOKENS.len());
    }

    #[test]
    fn istio_tags_with_lookahead_and_fixed_values() {
        let specs = vec![
            TagSpec::Regex { name: "cluster_name".into(), regex: r"^cluster(\.(.+);)".into() },
            TagSpec::Regex {
                name: "http_conn_manager_listener_prefix".into(),
                regex: r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)".into(),
            },
            TagSpec::Regex { name: "response_code".into(), regex: r"_rq(_(\d{3}))$".into() },
            TagSpec::Fixed { name: "mesh".into(), value: "m1".into() },
        ];
        let p = TagProducer::new(&specs, false).expect("compiles");
        assert_eq!(
            tags(&p, "cluster.xds-grpc;.upstream_rq_200"),
            ("cluster.upstream_rq".into(), pairs(&[("cluster_name", "xds-grpc"), ("response_code", "200"), ("mesh", "m1")]))
        );
        assert_eq!(
            tags(&p, "listener.0.0.0.0_15090.http.10.1.2.3_80.downstream_rq_total"),
            (
                "listener.0.0.0.0_15090.http.downstream_rq_total".into(),
                pairs(&[("mesh", "m1"), ("http_conn_manager_listener_prefix", "10.1.2.3_80")])
            )
        );
        assert!(TagProducer::new(&[TagSpec::Regex { name: "x".into(), regex: "(".into() }], false).is_err());
        assert!(TagProducer::new(&[TagSpec::Default { name: "nope".into() }], false).is_err());
        let p = TagProducer::new(&[TagSpec::Default { name: "envoy.cluster_name".into() }], false).expect("default by name");
        assert_eq!(tags(&p, "cluster.c.x").1, pairs(&[("envoy.cluster_name", "c")]));
    }

    #[test]
    fn first_of_shared_names_wins() {
        let specs = vec![
            TagSpec::Regex { name: "t".into(), regex: r"^a\.((x)\.)".into() },
            TagSpec::Regex { name: "t".into(), regex: r"\.((y)\.)".into() },
        ];
        let p = TagProducer::new(&specs, false).expect("compiles");
        // The unprefixed one runs first; the other is skipped once `t` is set.
        assert_eq!(tags(&p, "a.x.y.z"), ("a.x.z".into(), pairs(&[("t", "y")])));
    }
}
