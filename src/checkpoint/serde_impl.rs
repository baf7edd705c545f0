//! `serde` support (feature `serde`): an [`Optimizer`] serializes as its checkpoint bytes, so
//! it can sit inside any serde-encoded training state. Formats with a byte type (MessagePack,
//! bincode, CBOR) store one `bin`; others (JSON) a sequence of numbers. Deserializing runs the
//! full checkpoint decoder: corrupt bytes are a deserialization error, never a panic.

use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::optimizer::Optimizer;

impl Serialize for Optimizer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = super::save(self).map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Optimizer;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("vsgd checkpoint bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Optimizer, E> {
        super::load(v).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Optimizer, A::Error> {
        // The size hint comes from the input: cap what is reserved up front.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        super::load(&v).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Optimizer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Optimizer, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}
