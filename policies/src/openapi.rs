//! Schemas for the daemon's OpenAPI document (the `openapi` feature), for the types whose JSON form
//! is a string checked by their own constructor rather than what a derive would describe.

/// Implements `utoipa::ToSchema` for `$type` as a string with a description, a pattern and one
/// example.
macro_rules! string_schema {
    ($type:ty, $description:expr, $pattern:expr, $example:expr) => {
        impl utoipa::PartialSchema for $type {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    .pattern(Some($pattern))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $type {}
    };
}

pub(crate) use string_schema;
