//! Persistence of snapshot metadata in a redb database: one record per (namespace, key),
//! a parent -> child index for Remove, and the id counter. Callers own the transactions.

use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Error, Info, Kind, Labels, Usage};

/// (namespace, key) -> JSON encoded [`Record`].
pub(super) const SNAPSHOTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("snapshots");
/// (namespace, parent, child) -> (): the children of each committed snapshot.
pub(super) const CHILDREN: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("children");
/// Counter name -> value; holds the last snapshot id handed out.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const LAST_ID: &str = "last_id";

/// What the store keeps about one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: String,
    pub labels: Labels,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Usage measured at commit; active snapshots are measured on request.
    pub usage: Usage,
    /// Where the contents come from.
    #[serde(default)]
    pub backing: Backing,
}

/// Where a snapshot's contents come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Backing {
    /// Files in the snapshot's own `fs` directory.
    #[default]
    Local,
    /// A layer lazily mounted on the `fs` directory by the [`super::Mounter`].
    Remote,
    /// Written before a lazy mount is attempted and replaced at commit: a crash in between
    /// leaves this mark, so the restart knows a mount there belongs to no snapshot.
    Mounting,
}

impl Record {
    pub fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind,
            created: self.created,
            updated: self.updated,
            labels: self.labels.clone(),
        }
    }
}

/// Creates the tables so that read transactions never see them missing.
pub(super) fn init(db: &redb::Database) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(CHILDREN)?;
    txn.open_table(COUNTERS)?;
    txn.commit()?;
    Ok(())
}

/// Reads the record of `key`, if any.
pub(super) fn get<T>(table: &T, namespace: &str, key: &str) -> Result<Option<Record>, Error>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let Some(bytes) = table.get((namespace, key))? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(bytes.value()).map_err(|source| Error::Decode {
        key: key.to_owned(),
        source,
    })?;
    Ok(Some(record))
}

/// Reads the record of `key` or fails with NotFound.
pub(super) fn get_existing<T>(table: &T, namespace: &str, key: &str) -> Result<Record, Error>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    get(table, namespace, key)?.ok_or_else(|| Error::NotFound {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
    })
}

/// Writes the record of `key`.
pub(super) fn put(
    table: &mut redb::Table<(&str, &str), &[u8]>,
    namespace: &str,
    key: &str,
    record: &Record,
) -> Result<(), Error> {
    let bytes = serde_json::to_vec(record).map_err(|source| Error::Encode {
        key: key.to_owned(),
        source,
    })?;
    table.insert((namespace, key), bytes.as_slice())?;
    Ok(())
}

/// Every (key, record) of one namespace, in key order.
pub(super) fn list<T>(table: &T, namespace: &str) -> Result<Vec<(String, Record)>, Error>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let mut out = Vec::new();
    for entry in table.range((namespace, "")..)? {
        let (key, _) = entry?;
        let (ns, name) = key.value();
        if ns != namespace {
            break;
        }
        let record = get_existing(table, namespace, name)?;
        out.push((name.to_owned(), record));
    }
    Ok(out)
}

/// The record of every snapshot in every namespace.
pub(super) fn all_records<T>(table: &T) -> Result<Vec<Record>, Error>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let mut records = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let record: Record =
            serde_json::from_slice(value.value()).map_err(|source| Error::Decode {
                key: key.value().1.to_owned(),
                source,
            })?;
        records.push(record);
    }
    Ok(records)
}

/// Whether the committed snapshot `parent` has any child.
pub(super) fn has_children<T>(table: &T, namespace: &str, parent: &str) -> Result<bool, Error>
where
    T: ReadableTable<(&'static str, &'static str, &'static str), ()>,
{
    let first = table.range((namespace, parent, "")..)?.next().transpose()?;
    Ok(first.is_some_and(|(key, _)| {
        let (ns, p, _) = key.value();
        ns == namespace && p == parent
    }))
}

/// Hands out the next snapshot id.
pub(super) fn next_id(txn: &redb::WriteTransaction) -> Result<u64, Error> {
    let mut counters = txn.open_table(COUNTERS)?;
    let last = counters.get(LAST_ID)?.map(|v| v.value()).unwrap_or(0);
    let id = last.checked_add(1).ok_or(Error::IdOverflow)?;
    counters.insert(LAST_ID, id)?;
    Ok(id)
}
