//! An in-memory nftables ruleset behind [`Nftables`], for unit tests: tables of family `inet` by
//! name, replaced whole and read back normalized as the kernel would hold them. Clones share one
//! ruleset, as every `nft` on a node sees the same kernel. Tests change it behind Strait's back
//! ([`FakeNft::put`], [`FakeNft::remove`]), count Strait's writes, make writes or reads fail, and
//! have a table read back in another form than it was written ([`FakeNft::reprint`]), as some
//! versions of nft print it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::{Held, NftError, Nftables, Table, is_ours};

#[derive(Debug, Default)]
struct Ruleset {
    tables: BTreeMap<String, Held>,
    writes: usize,
    refuse_writes: bool,
    refuse_reads: bool,
    /// How tables written by name read back, when not as written.
    reprinted: BTreeMap<String, Held>,
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

    /// Sets the table called `name` as someone else would (another tool, an operator); a table
    /// reads back normalized, as from the kernel.
    pub fn put(&self, name: &str, held: Held) {
        let held = match held {
            Held::Table(t) => Held::Table(t.normalized()),
            other => other,
        };
        self.lock().tables.insert(name.to_string(), held);
    }

    /// From now on, the table called `name` reads back as `held` whenever Strait writes it.
    pub fn reprint(&self, name: &str, held: Held) {
        self.lock().reprinted.insert(name.to_string(), held);
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

    /// From now on, every read and listing fails (or works again).
    pub fn refuse_reads(&self, refuse: bool) {
        self.lock().refuse_reads = refuse;
    }

    fn readable(&self) -> Result<(), NftError> {
        match self.lock().refuse_reads {
            true => Err(NftError::Refused(
                "netlink: Error: cache initialization failed".into(),
            )),
            false => Ok(()),
        }
    }

    fn write(&self, change: impl FnOnce(&mut Ruleset)) -> Result<(), NftError> {
        let mut ruleset = self.lock();
        if ruleset.refuse_writes {
            return Err(NftError::Refused("Operation not permitted".into()));
        }
        ruleset.writes += 1;
        change(&mut ruleset);
        Ok(())
    }
}

impl Nftables for FakeNft {
    fn read(&mut self, name: &str) -> Result<Held, NftError> {
        self.readable()?;
        Ok(self.get(name))
    }

    fn replace(&mut self, table: &Table) -> Result<(), NftError> {
        self.write(|ruleset| {
            let held = match ruleset.reprinted.get(&table.name) {
                Some(printed) => printed.clone(),
                None => Held::Table(table.normalized()),
            };
            ruleset.tables.insert(table.name.clone(), held);
        })
    }

    fn delete(&mut self, name: &str) -> Result<(), NftError> {
        self.write(|ruleset| {
            ruleset.tables.remove(name);
        })
    }

    fn ours(&mut self) -> Result<Vec<String>, NftError> {
        self.readable()?;
        Ok(self.names().into_iter().filter(|n| is_ours(n)).collect())
    }
}
