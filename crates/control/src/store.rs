//! The config store: every `*.yaml`/`*.yml`/`*.json` under `--config-dir`, re-read when a file
//! changes. Each snapshot keeps the valid resources and the diagnostics of the invalid ones, so
//! one bad file never takes the others down.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weft_api::{load_text, Diagnostic, Level, Object};

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub objects: Vec<Object>,
    pub diagnostics: Vec<Diagnostic>,
    /// Running pods, when an API server is a source.
    pub pods: Vec<weft_api::core::PodInfo>,
    /// What the Gateway API objects' `status` would say.
    pub gateway_api: Vec<weft_api::gateway_api::ObjectStatus>,
}

impl Snapshot {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.level == Level::Error)
    }
}

fn config_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // Editors and `kubectl` leave dot-files (swap files, `..data` links); skip them.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            config_files(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// What the files look like without reading them: names, sizes, modification times.
pub fn fingerprint(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut files = Vec::new();
    config_files(dir, &mut files)?;
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        if let Ok(m) = std::fs::metadata(&f) {
            out.push((f, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
    }
    Ok(out)
}

/// Reads every config file below `dir`. File names in diagnostics are relative to `dir`.
pub fn load_dir(dir: &Path) -> std::io::Result<Snapshot> {
    let mut files = Vec::new();
    config_files(dir, &mut files)?;
    files.sort();
    let mut snap = Snapshot::default();
    let mut ingresses = Vec::new();
    let mut gateway_api = Vec::new();
    for f in files {
        let shown = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(text) => {
                let loaded = load_text(&text, &shown);
                snap.objects.extend(loaded.objects);
                snap.diagnostics.extend(loaded.diagnostics);
                ingresses.extend(loaded.ingress_docs);
                gateway_api.extend(loaded.gateway_api_docs);
            }
            Err(e) => snap.diagnostics.push(Diagnostic {
                level: Level::Error,
                file: shown,
                line: None,
                resource: None,
                field_path: String::new(),
                message: format!("cannot read: {e}"),
                code: None,
            }),
        }
    }
    // Ingresses of class istio, once every Service they may name is loaded.
    weft_api::ingress::expand(&mut snap.objects, &mut snap.diagnostics, &ingresses);
    // Gateway API resources, once every Service, Secret and ReferenceGrant is loaded.
    snap.gateway_api = weft_api::gateway_api::expand(&mut snap.objects, &mut snap.diagnostics, &gateway_api);
    weft_api::drop_duplicates(&mut snap.objects, &mut snap.diagnostics);
    Ok(snap)
}

/// Polls `dir` every `poll` and sends a fresh snapshot after the files have been quiet for
/// `debounce` (so a burst of writes becomes one push). Polling, not inotify: it also sees
/// changes behind symlinks and on filesystems without notifications, and `poll` bounds the
/// latency.
pub async fn watch(dir: PathBuf, poll: Duration, debounce: Duration, tx: tokio::sync::mpsc::Sender<Snapshot>) {
    let mut last = fingerprint(&dir).ok();
    loop {
        tokio::time::sleep(poll).await;
        let now = fingerprint(&dir).ok();
        if now == last {
            continue;
        }
        // Wait for the writes to settle.
        let mut settled = now;
        loop {
            tokio::time::sleep(debounce).await;
            let again = fingerprint(&dir).ok();
            if again == settled {
                break;
            }
            settled = again;
        }
        last = settled;
        let d = dir.clone();
        let snap = match tokio::task::spawn_blocking(move || load_dir(&d)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read config dir; keeping the last config");
                continue;
            }
            Err(_) => continue,
        };
        if tx.send(snap).await.is_err() {
            return;
        }
    }
}
