//! An in-memory nftables ruleset behind [`Nftables`], for unit tests: tables of family `inet` by
//! name, replaced whole and read back normalized as the kernel would hold them. Clones share one
//! ruleset, as every `nft` on a node sees the same kernel. Tests change it behind Strait's back
//! ([`FakeNft::put`], [`FakeNft::remove`]), count Strait's writes, and make writes fail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::{Held, NftError, Nftables, Table, is_ours};

#[derive(Debug, Default)]
struct Ruleset {
    tables: BTreeMap<String, Held>,
    writes: usize,
    refuse_writes: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FakeNft(Arc<Mutex<Ruleset>>);

impl FakeNft {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ruleset> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table called `name`, as held.
    pub fn get(&self, name: &str) -> Held {
        self.lock()
            .tables
            .get(name)
            .cloned()
            .unwrap_or(Held::Missing)
    }

    /// Sets the table called `name` as someone else would (another tool, an operator).
    pub fn put(&self, name: &str, held: Held) {
        self.lock().tables.insert(name.to_string(), held);
    }

    /// Removes the table called `name` as someone else would.
    pub fn remove(&self, name: &str) {
        self.lock().tables.remove(name);
    }

    /// The names of every table held, Strait's or not.
    pub fn names(&self) -> Vec<String> {
        self.lock().tables.keys().cloned().collect()
    }

    /// How many tables Strait has replaced or deleted so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// From now on, every replace and delete is refused (or accepted again).
    pub fn refuse_writes(&self, refuse: bool) {
        self.lock().refuse_writes = refuse;
    }

    fn write(&self, change: impl FnOnce(&mut BTreeMap<String, Held>)) -> Result<(), NftError> {
        let mut ruleset = self.lock();
        if ruleset.refuse_writes {
            return Err(NftError::Refused("Operation not permitted".into()));
        }
        ruleset.writes += 1;
        change(&mut ruleset.tables);
        Ok(())
    }
}

impl Nftables for FakeNft {
    fn read(&mut self, name: &str) -> Result<Held, NftError> {
        Ok(self.get(name))
    }

    fn replace(&mut self, table: &Table) -> Result<(), NftError> {
        self.write(|tables| {
            tables.insert(table.name.clone(), Held::Table(table.normalized()));
        })
    }

    fn delete(&mut self, name: &str) -> Result<(), NftError> {
        self.write(|tables| {
            tables.remove(name);
        })
    }

    fn ours(&mut self) -> Result<Vec<String>, NftError> {
        Ok(self.names().into_iter().filter(|n| is_ours(n)).collect())
    }
}
