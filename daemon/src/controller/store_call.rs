//! The controller's store calls run off the async threads: sled's flushes block.

use crate::store::{Store, StoreError};

/// Runs `call` on a blocking thread with a handle on `store`; a panic in it is resumed here.
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    call: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || call(store)).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
