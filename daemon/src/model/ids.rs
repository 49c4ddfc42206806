//! The ids of the model: history records and journaled intents. Both are counters the store keeps
//! (1, 2, 3... never reused), serialised as bare numbers.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A history record's id: 1, 2, 3... in the order of appending, without gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordId(pub u64);

// By hand: a derive would say `int64`, which stops at 2^63 - 1 where the API reads any u64.
impl utoipa::PartialSchema for RecordId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .description(Some("A history record's id: 1, 2, 3... in the order of appending, without gaps."))
            .minimum(Some(0_u64))
            .maximum(Some(u64::MAX))
            .into()
    }
}

impl ToSchema for RecordId {}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An intent's id: 1, 2, 3... never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct IntentId(pub u64);

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
