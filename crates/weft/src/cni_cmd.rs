//! `weft-cni`: the CNI plugin (the `weft` binary called by that name), what istio-cni does.
//! The container runtime runs it with the `CNI_*` environment and the network config on
//! stdin; this file reads those, hands them to `weft_capture::cni`, and prints the result or
//! the spec's error object on stdout. Logs go to stderr, which runtimes keep for failures.
//!
//! With `kubernetes.kubeconfig` in the config (as `weft cni-install` chains it), the pod is
//! looked up on the API server: only a pod the injector gave a sidecar is captured, with the
//! options of its `istio-validation` container — so the rules written are exactly the ones that
//! container then checks.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use weft_capture::cni::{self, CniError, KubeConf, Outcome, PodCapture, PodLookup};
use weft_kube::k8s_openapi::api::core::v1::Pod;

pub fn run() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    // Whatever happens, the runtime gets an answer it can parse.
    let outcome = std::panic::catch_unwind(plugin).unwrap_or_else(|_| {
        let bug = CniError::new(
            cni::INTERNAL,
            "weft-cni panicked (a bug); see its stderr",
            "please report it with the network config and CNI_* environment",
        );
        Outcome::error(&bug, cni::DEFAULT_VERSION)
    });
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(outcome.stdout.as_bytes()).and_then(|()| stdout.flush());
    if let Err(e) = &written {
        eprintln!("weft-cni: cannot write the result to stdout: {e}");
    }
    if outcome.success && written.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn plugin() -> Outcome {
    let vars: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("CNI_").then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    let mut stdin = Vec::new();
    // Run by hand from a terminal (`CNI_COMMAND=VERSION weft-cni`), there is no config to wait for.
    if !std::io::stdin().is_terminal() {
        if let Err(e) = std::io::stdin().lock().read_to_end(&mut stdin) {
            let err = CniError::new(cni::IO_FAILURE, format!("cannot read the network config from stdin: {e}"), "");
            return Outcome::error(&err, cni::DEFAULT_VERSION);
        }
    }
    cni::run_with(&vars, &stdin, &ApiServer)
}

/// The API server, through the kubeconfig the config names.
struct ApiServer;

/// How often a pod is asked for before the call fails (it was just created; an API server
/// that is briefly away should not fail the sandbox).
const ATTEMPTS: u32 = 3;

impl PodLookup for ApiServer {
    fn capture_of(&self, kube: &KubeConf, namespace: &str, name: &str) -> Result<PodCapture, CniError> {
        let rt = crate::current_thread_runtime().map_err(|e| CniError::new(cni::INTERNAL, e, ""))?;
        rt.block_on(async {
            let client = weft_kube::client(Some(&kube.kubeconfig)).await.map_err(|e| {
                CniError::new(
                    cni::INVALID_CONFIG,
                    format!("kubernetes.kubeconfig: {e}"),
                    "weft cni-install writes it; is it running on this node?",
                )
            })?;
            let pods: weft_kube::api::Api<Pod> = weft_kube::api::Api::namespaced(client, namespace);
            let mut last = String::new();
            for attempt in 1..=ATTEMPTS {
                match tokio::time::timeout(std::time::Duration::from_secs(5), pods.get_opt(name)).await {
                    Ok(Ok(Some(pod))) => return Ok(capture_of_pod(&pod)),
                    Ok(Ok(None)) => last = "not found".into(),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer within 5 s".into(),
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            Err(CniError::new(
                cni::API_UNAVAILABLE,
                format!("cannot read pod {namespace}/{name} from the API server: {last}"),
                "a pod with a sidecar must not start uncaptured, so the sandbox fails and the kubelet retries",
            ))
        })
    }
}

/// What the pod asks for: capture with its `istio-validation` container's options, or nothing
/// (and why).
pub fn capture_of_pod(pod: &Pod) -> PodCapture {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return PodCapture::Skip("the pod uses the host's network".into());
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if !annotations.contains_key("sidecar.istio.io/status") {
        return PodCapture::Skip("the pod has no sidecar (no sidecar.istio.io/status annotation)".into());
    }
    let init = spec.and_then(|s| s.init_containers.as_ref()).cloned().unwrap_or_default();
    if let Some(v) = init.iter().find(|c| c.name == weft_inject::VALIDATION_CONTAINER) {
        let args = v.args.clone().unwrap_or_default();
        return match crate::capture_cmd::options_of(&args) {
            Ok(raw) => PodCapture::Capture(Box::new(raw)),
            // Capture cannot be guessed: an unreadable container fails the pod (CHECK and the
            // container itself would fail it anyway).
            Err(e) => PodCapture::Skip(format!("istio-validation's arguments do not parse ({e}); nothing written")),
        };
    }
    if init.iter().any(|c| c.name == weft_inject::INIT_CONTAINER) {
        return PodCapture::Skip("the pod writes its own rules (istio-init)".into());
    }
    PodCapture::Skip("the pod has no capture container (interception NONE)".into())
}
