//! Istio fields weft knows but does not implement yet. They are refused by name, never dropped:
//! a policy that silently does nothing is worse than one that is rejected.
//!
//! The one exception is a field that only tunes traffic (slow start, keep-alives, connection
//! pool knobs weft lacks): ignoring it can neither weaken security nor send traffic anywhere
//! the user did not ask, so it is typed and accepted, and validation warns that weft does not
//! act on it yet (`validate`'s `not_acted_on`). Which of the two a field gets is written next to
//! it.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotImplemented {}

impl<'de> Deserialize<'de> for NotImplemented {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("not supported by weft yet"))
    }
}

/// Any value: the schema does not refuse such a field, so the refusal comes from the loader and
/// names the field.
impl JsonSchema for NotImplemented {
    fn schema_name() -> Cow<'static, str> {
        "NotImplemented".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        Schema::from(true)
    }
}
