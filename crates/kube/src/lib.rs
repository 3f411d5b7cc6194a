//! weft on Kubernetes. Today: the admission webhooks' reviews — sidecar injection into new
//! Pods (the same mutation `weft kube-inject` makes, returned as a JSONPatch) and validation of
//! Istio resources with `weft analyze`'s messages. The control plane serves them over HTTPS on
//! 15017.

pub mod admission;
