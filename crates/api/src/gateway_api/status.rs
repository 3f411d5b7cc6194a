//! What each object's `status` would say: Gateway API's conditions, with its types and
//! reasons, for Gateways and their listeners and for routes towards each parent.

use crate::Origin;

/// One status condition, with Gateway API's type and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub(super) fn yes(kind: &'static str, reason: &str, message: &str) -> Condition {
        Condition { kind, ok: true, reason: reason.into(), message: message.into() }
    }
    pub(super) fn no(kind: &'static str, reason: &str, message: impl Into<String>) -> Condition {
        Condition { kind, ok: false, reason: reason.into(), message: message.into() }
    }
    /// Whether the condition is as a working object's is (`Conflicted` and `PartiallyInvalid`
    /// are the ones whose good value is False).
    fn well(&self) -> bool {
        if matches!(self.kind, "Conflicted" | "PartiallyInvalid") {
            !self.ok
        } else {
            self.ok
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={} ({})", self.kind, if self.ok { "True" } else { "False" }, self.reason)?;
        if !self.well() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A route's status towards one of its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentStatus {
    /// `Gateway ns/name[/section][:port]` or `Service ns/name[:port]`.
    pub parent: String,
    pub conditions: Vec<Condition>,
}

/// What one object's `status` would say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub origin: Origin,
    pub conditions: Vec<Condition>,
    /// A Gateway's listeners: name, routes attached, conditions.
    pub listeners: Vec<(String, usize, Vec<Condition>)>,
    /// A route's parents.
    pub parents: Vec<ParentStatus>,
}

impl ObjectStatus {
    /// The conditions that are not as they should be, each with where it belongs.
    pub fn unwell(&self) -> Vec<(String, &Condition)> {
        let mut out: Vec<(String, &Condition)> = self.conditions.iter().filter(|c| !c.well()).map(|c| (String::new(), c)).collect();
        for (name, _, cs) in &self.listeners {
            out.extend(cs.iter().filter(|c| !c.well()).map(|c| (format!("listener {name}: "), c)));
        }
        for p in &self.parents {
            out.extend(p.conditions.iter().filter(|c| !c.well()).map(|c| (format!("parent {}: ", p.parent), c)));
        }
        out
    }
}

impl std::fmt::Display for ObjectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |cs: &[Condition]| cs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)?;
        if !self.conditions.is_empty() {
            write!(f, ": {}", list(&self.conditions))?;
        }
        for (name, attached, cs) in &self.listeners {
            write!(f, "\n  listener {name}: attachedRoutes={attached}, {}", list(cs))?;
        }
        for p in &self.parents {
            write!(f, "\n  parent {}: {}", p.parent, list(&p.conditions))?;
        }
        Ok(())
    }
}
