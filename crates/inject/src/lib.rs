//! Sidecar injection as Istio's injector does it, on Kubernetes objects held as JSON.
//!
//! `weft kube-inject` and the mutating webhook both call [`inject_object`] (a workload or a
//! `List`) or [`inject_pod`] (a pod template's metadata and spec). Objects stay JSON values
//! from end to end so that nothing a user wrote is lost on the way through: typed
//! deserialisation (k8s-openapi's, like client-go's) drops fields it does not know, and a
//! manifest written for a newer Kubernetes would lose them silently. What injection adds is
//! built from k8s-openapi's types, so its shape is checked by the compiler.

mod annotations;
mod error;
mod pod;
mod probes;
mod sidecar;
mod text;
mod values;
mod workload;

pub use error::InjectError;
pub use pod::{inject_pod, Outcome, Owner, Skip};
pub use text::inject_yaml;
pub use values::{DataPlane, Values};
pub use workload::{inject_object, Report};

/// The container Istio names the proxy; kept, so `kubectl logs -c istio-proxy`, Kiali and
/// istioctl find it.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init container that writes the capture rules.
pub const INIT_CONTAINER: &str = "istio-init";
/// The init container that only checks them, when the CNI plugin wrote them.
pub const VALIDATION_CONTAINER: &str = "istio-validation";
/// The pod annotation that records what injection added, so a second injection replaces it.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
