//! A file written beside its final path (the path with `.tmp` appended) and renamed over it
//! only once what it describes is in force: a reader, or a process that dies halfway, sees the
//! old file, the new one, or none, and a file staged for a change that failed is removed when
//! dropped. Large ones are written while the kernel takes the change they describe.
//!
//! Not synced to disk: nodewall's state files describe what the running kernel holds and mean
//! nothing after a reboot, so surviving a power loss buys nothing, while an fsync costs a
//! journal commit (milliseconds, more than the rest of a small apply) when the state directory
//! is not on a tmpfs.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct StagedFile {
    /// `None` once committed.
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl StagedFile {
    /// Writes `bytes` beside `path`, creating its directory.
    pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let staged = Self {
            tmp: Some(tmp.clone()),
            path: path.to_owned(),
        };
        std::fs::File::create(&tmp)?.write_all(bytes)?;
        Ok(staged)
    }

    /// Renames the file over its final path.
    pub fn commit(mut self) -> std::io::Result<()> {
        let tmp = self.tmp.take().expect("committed once");
        std::fs::rename(&tmp, &self.path)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_on_commit_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f");
        StagedFile::write(&path, b"one").unwrap().commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        let staged = StagedFile::write(&path, b"two").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"one",
            "in force only once committed"
        );
        drop(staged);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no .tmp left"
        );
        StagedFile::write(&path, b"two").unwrap().commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
