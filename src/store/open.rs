//! Opening the store, and every reason it cannot be opened, in words that say what
//! to do. The server refuses to start rather than run without the history it was
//! asked to keep.

use std::path::Path;
use std::sync::Arc;

use redb::{Builder, DatabaseError, ReadableDatabase, StorageError};

use super::{CACHE_BYTES, FILE_NAME, FORMAT, Fsync, MESSAGES, META, PID_FILE, ROOMS, Store};

/// Opens (or creates) the store in `dir`.
///
/// # Errors
/// Why it cannot be used: the folder cannot be written, another running instance
/// holds it (named by its process id), the file is damaged, or it was written by a
/// version of threadcast that stores rooms differently.
pub fn open(dir: &Path, fsync: Fsync) -> Result<Store, String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("--data-dir {shown}: cannot create it: {e}"))?;
    let path = dir.join(FILE_NAME);
    let db = Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|e| refusal(dir, &e))?;
    let mut store = Store {
        db: Some(db),
        path,
        fsync,
        unsynced: false,
        figures: Arc::default(),
    };
    store.check_format(dir)?;
    // Who holds the directory, for a second instance to name (best effort: the lock
    // is redb's, on the file; this only helps the message).
    let _ = std::fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id()));
    store.counted(0, false);
    Ok(store)
}

/// What to tell the operator when redb cannot open the file.
fn refusal(dir: &Path, error: &DatabaseError) -> String {
    let shown = dir.display();
    match error {
        DatabaseError::DatabaseAlreadyOpen => {
            let holder = std::fs::read_to_string(dir.join(PID_FILE))
                .map(|pid| format!(" (process {})", pid.trim()))
                .unwrap_or_default();
            format!(
                "--data-dir {shown} is in use by another running threadcast{holder}: stop it, or give this one another directory"
            )
        }
        DatabaseError::UpgradeRequired(_) => format!(
            "--data-dir {shown}: {FILE_NAME} was written by an older storage format ({error}); start an older threadcast to read it, or move the file away to start with empty histories"
        ),
        DatabaseError::Storage(StorageError::Corrupted(what)) => format!(
            "--data-dir {shown}: {FILE_NAME} is damaged ({what}); move it away to start with empty histories, or put back a copy from a backup"
        ),
        other => format!("--data-dir {shown}: cannot open {FILE_NAME}: {other}"),
    }
}

impl Store {
    /// Makes sure the file holds rooms in the format this version reads, writing the
    /// format into a new file.
    fn check_format(&mut self, dir: &Path) -> Result<(), String> {
        let shown = dir.display();
        let fail = |e: &dyn std::fmt::Display| format!("--data-dir {shown}: {e}");
        let db = self.db()?;
        let found = {
            let read = db.begin_read().map_err(|e| fail(&e))?;
            match read.open_table(META) {
                Ok(meta) => meta.get("format").map_err(|e| fail(&e))?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(fail(&e)),
            }
        };
        match found {
            Some(FORMAT) => Ok(()),
            Some(other) => Err(format!(
                "--data-dir {shown}: {FILE_NAME} holds rooms in format {other}, and this threadcast reads format {FORMAT}; run the version that wrote it, or move the file away to start with empty histories"
            )),
            None => {
                let write = db.begin_write().map_err(|e| fail(&e))?;
                {
                    write
                        .open_table(META)
                        .map_err(|e| fail(&e))?
                        .insert("format", FORMAT)
                        .map_err(|e| fail(&e))?;
                    write.open_table(ROOMS).map_err(|e| fail(&e))?;
                    write.open_table(MESSAGES).map_err(|e| fail(&e))?;
                }
                write.commit().map_err(|e| fail(&e))
            }
        }
    }
}
