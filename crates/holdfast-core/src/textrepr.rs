//! Reading bytes stored in a tree as JSON "a string when it is text, else a one-key object".
//!
//! File names (`{"hex": ...}` when not UTF-8) and inline content (`{"b64": ...}`) share this
//! shape. Reading it through serde's untagged enums buffers every value into an intermediate
//! and tries each variant in turn; a tree of the Linux sources has 78,000 names, so the walk of
//! a no-change backup spent a tenth of its time there. This visitor reads either form
//! directly, borrowing the string when the input allows, and names what is wrong otherwise.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};

/// How a [`Keyed`] value's encoded string becomes bytes.
pub(crate) trait Encoding {
    /// The one key of the object form.
    const KEY: &'static str;
    /// Decode the object form's string.
    fn decode(s: &str) -> Result<Vec<u8>, String>;
}

/// Bytes read from a JSON string (taken as UTF-8 bytes) or from `{KEY: "..."}`.
pub(crate) fn deserialize<'de, E: Encoding, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(Keyed::<E>(PhantomData))
}

struct Keyed<E>(PhantomData<E>);

impl<'de, E: Encoding> Visitor<'de> for Keyed<E> {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string or an object {{\"{}\": string}}", E::KEY)
    }

    fn visit_str<Er: de::Error>(self, v: &str) -> Result<Vec<u8>, Er> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_string<Er: de::Error>(self, v: String) -> Result<Vec<u8>, Er> {
        Ok(v.into_bytes())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let mut out = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key.0 != E::KEY {
                return Err(de::Error::custom(format!(
                    "unexpected key {:?}, expected only {:?}",
                    key.0,
                    E::KEY
                )));
            }
            if out.is_some() {
                return Err(de::Error::duplicate_field(E::KEY));
            }
            let s: Str<'de> = map.next_value()?;
            out = Some(E::decode(&s.0).map_err(de::Error::custom)?);
        }
        out.ok_or_else(|| de::Error::missing_field(E::KEY))
    }
}

/// A string, borrowed from the input when it can be (no allocation per key or value).
struct Str<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(v.to_owned().into()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(v.into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The object form `{"hex": ...}` of file names.
pub(crate) struct Hex;

impl Encoding for Hex {
    const KEY: &'static str = "hex";
    fn decode(s: &str) -> Result<Vec<u8>, String> {
        hex::decode(s).map_err(|e| e.to_string())
    }
}

/// The object form `{"b64": ...}` of inline content (standard alphabet, padded).
pub(crate) struct B64;

impl Encoding for B64 {
    const KEY: &'static str = "b64";
    fn decode(s: &str) -> Result<Vec<u8>, String> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<E: Encoding>(json: &str) -> Result<Vec<u8>, String> {
        let mut d = serde_json::Deserializer::from_str(json);
        deserialize::<E, _>(&mut d).map_err(|e| e.to_string())
    }

    #[test]
    fn both_forms_and_what_is_refused() {
        let cases: &[(&str, Result<&[u8], &str>)] = &[
            (r#""abc""#, Ok(b"abc")),
            (r#""a\nb\u00e9""#, Ok("a\nb\u{e9}".as_bytes())),
            (r#""""#, Ok(b"")),
            (r#"{"hex":"ff00"}"#, Ok(&[0xff, 0])),
            (r#"{"hex":"zz"}"#, Err("Invalid character")),
            (r#"{"hex":"ff","hex":"00"}"#, Err("duplicate field")),
            (r#"{"b64":"AAE="}"#, Err("unexpected key")),
            (r#"{}"#, Err("missing field")),
            (r#"{"hex":1}"#, Err("invalid type")),
            (r#"12"#, Err("a string or an object")),
            (r#"null"#, Err("a string or an object")),
        ];
        for (json, want) in cases {
            let got = read::<Hex>(json);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g.as_slice(), *w, "{json}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{json}: {g}"),
                _ => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(read::<B64>(r#"{"b64":"AAE="}"#).unwrap(), vec![0, 1]);
        assert!(read::<B64>(r#"{"b64":"!!"}"#).is_err());
    }

    #[test]
    fn reads_from_a_reader_too() {
        // A reader cannot lend its strings: the owned paths are taken.
        let mut d = serde_json::Deserializer::from_reader(&br#"{"hex":"4142"}"#[..]);
        assert_eq!(deserialize::<Hex, _>(&mut d).unwrap(), b"AB");
        let mut d = serde_json::Deserializer::from_reader(&br#""x\"y""#[..]);
        assert_eq!(deserialize::<Hex, _>(&mut d).unwrap(), b"x\"y");
    }
}
