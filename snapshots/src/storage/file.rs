//! [`FileStorage`]: real files in one directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Storage, StorageError, StorageFile, StorageOp, check_name};

/// Real files in one directory of the local file system.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Uses `dir` as the storage directory, creating it (and its parents) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(StorageOp::OpenDir, &dir, e))?;
        Ok(Self { dir })
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn checked_path(&self, name: &str) -> Result<PathBuf, StorageError> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }

    fn open_file(
        &self,
        name: &str,
        op: StorageOp,
        options: &OpenOptions,
    ) -> Result<Box<dyn StorageFile>, StorageError> {
        let path = self.checked_path(name)?;
        let opened = options.open(&path).and_then(|file| {
            let len = file.metadata()?.len();
            Ok((file, len))
        });
        match opened {
            Ok((file, len)) => Ok(Box::new(DiskFile { file, path, len })),
            Err(e) => Err(StorageError::io(op, path, e)),
        }
    }
}

impl Storage for FileStorage {
    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn list(&self) -> Result<Vec<String>, StorageError> {
        let fail = |e| StorageError::io(StorageOp::List, &self.dir, e);
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            if !entry.file_type().map_err(fail)?.is_file() {
                continue;
            }
            // Names this crate writes are ASCII; anything else is not ours.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.checked_path(name)?;
        fs::read(&path).map_err(|e| StorageError::io(StorageOp::Read, path, e))
    }

    fn create(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        self.open_file(name, StorageOp::Create, &options)
    }

    fn open_append(&self, name: &str) -> Result<Box<dyn StorageFile>, StorageError> {
        let mut options = OpenOptions::new();
        options.append(true);
        self.open_file(name, StorageOp::OpenAppend, &options)
    }

    fn truncate(&self, name: &str, len: u64) -> Result<(), StorageError> {
        let path = self.checked_path(name)?;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| {
                file.set_len(len)?;
                file.sync_all()
            })
            .map_err(|e| StorageError::io(StorageOp::Truncate, path, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let from_path = self.checked_path(from)?;
        let to_path = self.checked_path(to)?;
        fs::rename(&from_path, to_path)
            .map_err(|e| StorageError::io(StorageOp::Rename, from_path, e))
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        let path = self.checked_path(name)?;
        fs::remove_file(&path).map_err(|e| StorageError::io(StorageOp::Remove, path, e))
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StorageError::io(StorageOp::SyncDir, &self.dir, e))
    }
}

/// An open file; `len` is tracked here so that asking for it costs no system call.
struct DiskFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl StorageFile for DiskFile {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file
            .write_all(bytes)
            .map_err(|e| StorageError::io(StorageOp::Write, &self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(StorageOp::Sync, &self.path, e))
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    #[test]
    fn behaves_like_a_storage() {
        let dir = tempfile::tempdir().unwrap();
        conformance::check(&FileStorage::open(dir.path().join("nested/store")).unwrap());
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        let err = storage.read("missing.mwj").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("missing.mwj"), "{message}");
        assert!(matches!(
            err,
            StorageError::Io {
                op: StorageOp::Read,
                ..
            }
        ));
    }

    #[test]
    fn subdirectories_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path()).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        storage.create("file").unwrap();
        assert_eq!(storage.list().unwrap(), vec!["file".to_owned()]);
    }
}
