//! A flat directory of named files: the only way this crate touches a disk.
//!
//! Snapshots and the journal are written against the [`Storage`] trait so that
//! the same code runs on real files ([`FileStorage`]) and on an in-memory disk
//! that can lose unsynced data on demand ([`FaultyStorage`]).

mod faulty;
mod file;

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

pub use faulty::{CrashMode, FaultyStorage};
pub use file::FileStorage;

/// A flat directory of named files with explicit durability points.
///
/// Nothing written is assumed durable until [`StorageFile::sync`] returned for
/// its data and [`Storage::sync_dir`] returned for the directory entry that
/// names it (creation, rename, removal).
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where `name` lives, for error messages and logs.
    fn path_of(&self, name: &str) -> PathBuf;

    /// Names of all regular files in the directory, in no particular order.
    fn list(&self) -> Result<Vec<String>, StorageError>;

    /// The whole content of `name`.
    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError>;

    /// Creates `name`, or truncates it if it exists, and opens it for writing.
    fn create(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError>;

    /// Opens the existing file `name`; writes go to its end.
    fn open_append(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError>;

    /// Cuts `name` to `len` bytes; the new length is durable when this returns.
    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError>;

    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> Result<(), StorageError>;

    /// Removes `name`.
    fn remove(&self, name: &str) -> Result<(), StorageError>;

    /// Makes every earlier creation, rename and removal in the directory durable.
    fn sync_dir(&self) -> Result<(), StorageError>;
}

/// A file opened for writing by a [`Storage`]; every write goes to its end.
pub trait StorageFile: Send {
    /// Appends all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StorageError>;

    /// Makes everything written so far durable (a data sync).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Current length of the file in bytes, including unsynced writes.
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The kind of storage operation that failed, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// Creating the storage directory.
    OpenDir,
    /// Listing the directory.
    List,
    /// Reading a file.
    Read,
    /// Creating or truncating a file for writing.
    Create,
    /// Opening an existing file for appending.
    OpenAppend,
    /// Writing to a file.
    Write,
    /// Syncing a file's data.
    Sync,
    /// Truncating a file.
    Truncate,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
    /// Syncing the directory.
    SyncDir,
}

impl fmt::Display for StorageOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OpenDir => "opening directory",
            Self::List => "listing directory",
            Self::Read => "reading",
            Self::Create => "creating",
            Self::OpenAppend => "opening for append",
            Self::Write => "writing",
            Self::Sync => "syncing",
            Self::Truncate => "truncating",
            Self::Rename => "renaming",
            Self::Remove => "removing",
            Self::SyncDir => "syncing directory",
        })
    }
}

/// A failed storage operation.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The operating system (or the simulated disk) reported an error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: StorageOp,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file name that would escape the flat directory or is otherwise unusable.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

impl StorageError {
    pub(crate) fn io(op: StorageOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Rejects names that are not a single plain path component.
pub(crate) fn check_name(name: &str) -> Result<(), StorageError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "refers to a directory"
    } else if name.contains(['/', '\\', '\0']) {
        "contains a path separator or NUL"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Behaviour every [`Storage`] implementation must show, shared by their tests.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    fn sorted_names(storage: &dyn Storage) -> Vec<String> {
        let mut names = storage.list().unwrap();
        names.sort();
        names
    }

    pub(crate) fn check(storage: &dyn Storage) {
        assert!(storage.list().unwrap().is_empty());

        let mut file = storage.create("a").unwrap();
        assert!(file.is_empty());
        file.write_all(b"hello ").unwrap();
        file.write_all(b"world").unwrap();
        assert_eq!(file.len(), 11);
        file.sync().unwrap();
        drop(file);
        assert_eq!(storage.read("a").unwrap(), b"hello world");

        let mut appender = storage.open_append("a").unwrap();
        assert_eq!(appender.len(), 11);
        appender.write_all(b"!").unwrap();
        drop(appender);
        assert_eq!(storage.read("a").unwrap(), b"hello world!");

        storage.truncate("a", 5).unwrap();
        assert_eq!(storage.read("a").unwrap(), b"hello");

        storage.create("b").unwrap().write_all(b"bee").unwrap();
        assert_eq!(sorted_names(storage), ["a", "b"]);

        storage.rename("b", "a").unwrap();
        assert_eq!(sorted_names(storage), ["a"]);
        assert_eq!(storage.read("a").unwrap(), b"bee");

        let recreated = storage.create("a").unwrap();
        assert!(recreated.is_empty(), "create truncates an existing file");
        assert!(storage.read("a").unwrap().is_empty());

        storage.remove("a").unwrap();
        assert!(storage.list().unwrap().is_empty());
        storage.sync_dir().unwrap();

        assert!(matches!(storage.read("a"), Err(StorageError::Io { .. })));
        assert!(matches!(
            storage.open_append("a"),
            Err(StorageError::Io { .. })
        ));
        assert!(matches!(storage.remove("a"), Err(StorageError::Io { .. })));
        assert!(matches!(
            storage.rename("a", "c"),
            Err(StorageError::Io { .. })
        ));
        assert!(matches!(
            storage.create("../escape"),
            Err(StorageError::InvalidName { .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted() {
        for name in ["journal-1.mwj", "snapshot.mws.tmp", "a"] {
            check_name(name).unwrap();
        }
    }

    #[test]
    fn names_that_escape_the_directory_are_rejected() {
        for name in ["", ".", "..", "a/b", "../x", "a\\b", "nul\0"] {
            let err = check_name(name).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
    }
}
