//! Kinds weft does not read, and what it says about each. Nothing in a mesh file is dropped
//! without a word: a kind that would restrict traffic is an error (weft would not enforce it,
//! and a policy that silently does nothing fails open), a kind with a weft equivalent says what
//! to write instead, and the rest are named as ignored.

/// How weft treats one kind it does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// It would deny, authenticate or filter traffic; running without it fails open.
    Unenforced(&'static str),
    /// Not read; the text says what to use instead.
    Instead(&'static str),
    /// Istio 0.x routing, which `weft convert` turns into v1 resources: refused (the routing it
    /// asks for would silently not happen), with the text naming what it becomes.
    Legacy(&'static str),
    /// Ordinary Kubernetes objects that carry nothing the mesh reads in a file (a
    /// ServiceAccount's name comes from the workload, a Namespace's from each resource).
    Quiet,
}

/// `(API group, kind, treatment)`; an empty group is the core group, `*` any group.
const KINDS: &[(&str, &str, Treatment)] = &[
    ("security.istio.io", "AuthorizationPolicy", Treatment::Unenforced("requests it would deny are allowed")),
    ("security.istio.io", "RequestAuthentication", Treatment::Unenforced("requests with invalid JWTs are not rejected")),
    ("networking.istio.io", "EnvoyFilter", Treatment::Unenforced("the filters it adds (authorization, rate limits, …) do not run")),
    ("extensions.istio.io", "WasmPlugin", Treatment::Unenforced("the plugin (often authentication or authorization) does not run")),
    ("networking.k8s.io", "NetworkPolicy", Treatment::Unenforced("nothing in a weft mesh enforces it, so connections it would block are allowed")),
    ("authentication.istio.io", "Policy", Treatment::Unenforced("the mTLS or JWT it requires is not required; use PeerAuthentication (mTLS), which weft enforces")),
    ("authentication.istio.io", "MeshPolicy", Treatment::Unenforced("the mTLS it requires is not required; use a PeerAuthentication in the root namespace, which weft enforces")),
    ("rbac.istio.io", "*", Treatment::Unenforced("Istio's pre-1.6 RBAC is not enforced (Istio replaced it with AuthorizationPolicy)")),
    ("config.istio.io", "denier", Treatment::Unenforced("Mixer policy denials do not happen")),
    ("config.istio.io", "listchecker", Treatment::Unenforced("Mixer allow/deny lists are not checked")),
    ("config.istio.io", "memquota", Treatment::Unenforced("Mixer rate limits are not applied")),
    ("config.istio.io", "redisquota", Treatment::Unenforced("Mixer rate limits are not applied")),
    ("config.istio.io", "QuotaSpec", Treatment::Unenforced("Mixer rate limits are not applied")),
    ("config.istio.io", "QuotaSpecBinding", Treatment::Unenforced("Mixer rate limits are not applied")),
    ("config.istio.io", "EgressRule", Treatment::Legacy("a ServiceEntry (and, for https, a DestinationRule)")),
    ("config.istio.io", "RouteRule", Treatment::Legacy("a VirtualService (and a DestinationRule for its subsets)")),
    ("config.istio.io", "DestinationPolicy", Treatment::Legacy("a DestinationRule")),
    ("config.istio.io", "*", Treatment::Instead("Mixer configuration (removed in Istio 1.8) is not read: metrics, logs and traces come from the sidecars (MeshConfig accessLogFile, defaultConfig.tracing)")),
    ("networking.istio.io", "ProxyConfig", Treatment::Instead("not read: set proxy settings in MeshConfig defaultConfig")),
    ("networking.istio.io", "WorkloadGroup", Treatment::Instead("not read: write a WorkloadEntry per workload")),
    ("gateway.networking.k8s.io", "*", Treatment::Instead("not read by weft yet (it reads GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and ReferenceGrant): write an Istio Gateway and VirtualServices")),
    ("apps", "Deployment", Treatment::Instead(WORKLOAD)),
    ("apps", "StatefulSet", Treatment::Instead(WORKLOAD)),
    ("apps", "DaemonSet", Treatment::Instead(WORKLOAD)),
    ("apps", "ReplicaSet", Treatment::Instead(WORKLOAD)),
    ("extensions", "Deployment", Treatment::Instead(WORKLOAD)),
    ("", "Pod", Treatment::Instead(WORKLOAD)),
    ("batch", "Job", Treatment::Instead(WORKLOAD)),
    ("", "ConfigMap", Treatment::Instead("not read: MeshConfig comes from `weft control-plane --mesh FILE` or a MeshConfig document in a `weft up` file")),
    ("weft.dev", "*", Treatment::Instead("read by `weft up -f FILE`, which runs the workload and gives the control plane its WorkloadEntry; the control plane does not read it")),
    ("", "ServiceAccount", Treatment::Quiet),
    ("", "Namespace", Treatment::Quiet),
];

const WORKLOAD: &str = "weft does not run Kubernetes workloads: on one machine, describe it as a Workload (weft.dev/v1alpha1: name, namespace, labels, serviceAccount, command, ports) in a `weft up -f` file (see samples/bookinfo/mesh.yaml)";

/// What weft does with `kind` of `api_version` (`group/version`, or `v1` for the core group).
pub fn treatment(api_version: &str, kind: &str) -> Option<Treatment> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    KINDS.iter().find(|(g, k, _)| *g == group && (*k == kind || *k == "*")).map(|(_, _, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricting_kinds_are_unenforced_and_the_rest_say_what_instead() {
        assert!(matches!(treatment("security.istio.io/v1", "AuthorizationPolicy"), Some(Treatment::Unenforced(_))));
        assert!(matches!(treatment("security.istio.io/v1beta1", "RequestAuthentication"), Some(Treatment::Unenforced(_))));
        assert!(matches!(treatment("networking.istio.io/v1alpha3", "EnvoyFilter"), Some(Treatment::Unenforced(_))));
        assert!(matches!(treatment("rbac.istio.io/v1alpha1", "ServiceRole"), Some(Treatment::Unenforced(_))));
        assert!(matches!(treatment("config.istio.io/v1alpha2", "RouteRule"), Some(Treatment::Legacy(t)) if t.contains("VirtualService")));
        assert!(matches!(treatment("config.istio.io/v1alpha2", "EgressRule"), Some(Treatment::Legacy(t)) if t.contains("ServiceEntry")));
        assert!(matches!(treatment("apps/v1", "Deployment"), Some(Treatment::Instead(t)) if t.contains("weft up")));
        assert_eq!(treatment("v1", "ServiceAccount"), Some(Treatment::Quiet));
        assert_eq!(treatment("example.com/v1", "Widget"), None);
    }
}
