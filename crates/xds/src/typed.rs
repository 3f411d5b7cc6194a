//! `typed_config` dispatch: an `Any` in proto3 JSON form (`{"@type": "type.googleapis.com/…", …}`)
//! decoded into the one type its `@type` names, from the set a given extension point allows.
//!
//! The decoder streams the remaining fields into the chosen type, so errors inside keep their
//! line number and field path; a `@type` that is not first falls back to buffering.

/// Strips the `type.googleapis.com/` prefix (any host part before the last `/`).
pub fn type_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, n)| n)
}

/// Declares an enum of the types an extension point accepts and its `typed_config` decoder.
#[macro_export]
macro_rules! typed_any {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($variant:ident($ty:ty) = $url:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        $vis enum $name { $($variant($ty)),+ }

        impl $name {
            /// The `@type` names this extension point accepts.
            pub const TYPES: &'static [&'static str] = &[$($url),+];

            fn from_map_access<'de, A: serde::de::MapAccess<'de>>(type_url: &str, map: A) -> Result<Self, A::Error> {
                use serde::Deserialize as _;
                match $crate::typed::type_name(type_url) {
                    $($url => <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map($name::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "@type {other:?} is not supported here (supported: {})",
                        Self::TYPES.join(", ")
                    ))),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a typed_config object with an \"@type\" field")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let first: Option<String> = map.next_key()?;
                        match first.as_deref() {
                            Some("@type") => {
                                let url: String = map.next_value()?;
                                $name::from_map_access(&url, map)
                            }
                            None => Err(serde::de::Error::custom("missing \"@type\"")),
                            Some(key) => {
                                // Rare: "@type" not first. Buffer, then decode from the buffer.
                                let mut obj = serde_json::Map::new();
                                let v: serde_json::Value = map.next_value()?;
                                obj.insert(key.to_string(), v);
                                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                                    obj.insert(k, v);
                                }
                                let url = match obj.remove("@type") {
                                    Some(serde_json::Value::String(s)) => s,
                                    _ => return Err(serde::de::Error::custom("missing \"@type\"")),
                                };
                                let inner = serde_json::Value::Object(obj);
                                let mut track = serde_path_to_error::Track::new();
                                let res = {
                                    let pd = serde_path_to_error::Deserializer::new(&inner, &mut track);
                                    $name::from_value_de(&url, pd)
                                };
                                res.map_err(|e: serde_json::Error| {
                                    let path = track.path().to_string();
                                    if path == "." || path.is_empty() {
                                        serde::de::Error::custom(e)
                                    } else {
                                        serde::de::Error::custom(format!("{path}: {e}"))
                                    }
                                })
                            }
                        }
                    }
                }
                d.deserialize_map(V)
            }
        }

        impl $name {
            fn from_value_de<'de, D: serde::Deserializer<'de, Error = serde_json::Error>>(
                type_url: &str,
                d: D,
            ) -> Result<Self, serde_json::Error> {
                use serde::Deserialize as _;
                match $crate::typed::type_name(type_url) {
                    $($url => <$ty>::deserialize(d).map($name::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "@type {other:?} is not supported here (supported: {})",
                        Self::TYPES.join(", ")
                    ))),
                }
            }
        }
    };
}
