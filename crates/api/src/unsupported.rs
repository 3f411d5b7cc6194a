//! Istio fields weft knows but does not implement yet. They are refused by name, never dropped:
//! a policy that silently does nothing is worse than one that is rejected.

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotImplemented {}

impl<'de> Deserialize<'de> for NotImplemented {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("not supported by weft yet"))
    }
}
