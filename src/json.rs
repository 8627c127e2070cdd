//! The crate's JSON helpers, on serde: `read` (bytes as a type, or nothing), strings borrowed
//! from the input where they can be (`Text`), an object's members as the raw bytes of their
//! values (`Members`), a value's kind by its first byte (`JsonKind`), `cut` (what may be echoed of
//! text a caller or a binding controls), and `named!` (enums named by fixed strings).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An enum whose variants are named by fixed strings: `as_str` gives the name, and the value
/// serializes as it (in answers, headers and log lines alike) and is read from it.
macro_rules! named {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = $crate::json::Text::deserialize(deserializer)?;
                match text.0.as_ref() {
                    $($text => Ok($name::$variant),)*
                    other => Err(serde::de::Error::unknown_variant(other, &[$($text),*])),
                }
            }
        }
    };
}
pub(crate) use named;

/// A JSON string, borrowed from the input unless it holds escapes (then decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings;
        impl<'de> Visitor<'de> for Strings {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(Strings)
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// An object's members in document order, each value as the bytes it was sent as. Keys are
/// decoded (`"max\u005ftokens"` is `max_tokens`), and a key sent twice is kept twice for the
/// caller to refuse: serde's maps would silently keep the last.
#[derive(Debug, Default)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The value of `name`, if present (`null` included).
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// A key that appears more than once.
    pub fn duplicate(&self) -> Option<&str> {
        let mut seen = std::collections::BTreeSet::new();
        self.0
            .iter()
            .map(|(k, _)| k.as_ref())
            .find(|k| !seen.insert(*k))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Text(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// What a JSON value is, told by its first byte (serde_json's raw values start at the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Object,
    List,
    String,
    Bool,
    Null,
    Number,
}

impl JsonKind {
    pub fn of(raw: &RawValue) -> JsonKind {
        match raw.get().as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::List,
            Some(b'"') => JsonKind::String,
            Some(b't' | b'f') => JsonKind::Bool,
            Some(b'n') => JsonKind::Null,
            _ => JsonKind::Number,
        }
    }

    /// For messages: "got a number".
    pub fn described(self) -> &'static str {
        match self {
            JsonKind::Object => "an object",
            JsonKind::List => "a list",
            JsonKind::String => "a string",
            JsonKind::Bool => "true or false",
            JsonKind::Null => "null",
            JsonKind::Number => "a number",
        }
    }
}

/// JSON bytes read as `T`; `None` when they are not UTF-8 or not a `T`. Every parse in the router
/// goes through `serde_json::from_str`, so the bundle holds one copy of its parser, not two.
pub fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// At most `max` characters of `s` (never splitting one): what an answer or a log line may echo
/// of text a caller or a binding controls.
pub fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_decode_keys_keep_duplicates_and_raw_values() {
        let m: Members = serde_json::from_str(r#"{"a":1,"m\u0061x":[ 2 ],"a":"x"}"#).unwrap();
        assert_eq!(m.0[1].0, "max");
        assert_eq!(m.get("max").map(RawValue::get), Some("[ 2 ]"));
        assert_eq!(m.duplicate(), Some("a"));
        assert!(serde_json::from_str::<Members>("[1]").is_err());
    }

    #[test]
    fn cut_never_splits_a_character() {
        assert_eq!(cut(&format!("a{}", "é".repeat(40)), 3), "aéé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
