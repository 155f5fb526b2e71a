//! Typed access to a [`Store`]: records in and out instead of JSON values.

use crate::{Record, Store, StoreError, Versioned};

/// Reads a stored value as a `T`.
pub fn decode<T: Record>(v: Versioned<serde_json::Value>) -> Result<Versioned<T>, StoreError> {
    let value = serde_json::from_value(v.value).map_err(|e| StoreError::Corrupt {
        what: format!("{} {}", T::KIND, v.name),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        name: v.name,
        revision: v.revision,
        value,
    })
}

fn encode<T: Record>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("records always serialize")
}

pub async fn get<T: Record>(
    store: &impl Store,
    name: &str,
) -> Result<Option<Versioned<T>>, StoreError> {
    store.get(T::KIND, name).await?.map(decode).transpose()
}

pub async fn list<T: Record>(store: &impl Store) -> Result<Vec<Versioned<T>>, StoreError> {
    store.list(T::KIND).await?.into_iter().map(decode).collect()
}

pub async fn create<T: Record>(
    store: &impl Store,
    name: &str,
    value: &T,
) -> Result<u64, StoreError> {
    store.create(T::KIND, name, encode(value)).await
}

pub async fn update<T: Record>(
    store: &impl Store,
    name: &str,
    value: &T,
    revision: u64,
) -> Result<u64, StoreError> {
    store.update(T::KIND, name, encode(value), revision).await
}
