//! Kubernetes object metadata and where a resource came from.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The part of `metadata` the mesh reads. Server-populated fields (`uid`, `resourceVersion`,
/// `managedFields`, …) are accepted and dropped: they never change what the mesh does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Where a resource was read from: the file and the line its document starts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A loaded resource: its identity, its spec and its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource<S> {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: S,
    pub origin: Origin,
}

impl<S> Resource<S> {
    /// `namespace/name`, the key operators use.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
