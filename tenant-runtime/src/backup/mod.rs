//! Encrypted backups and restores: `contact-runtime backup` and `contact-runtime restore <name>`.
//!
//! A backup is two files in the backup directory:
//!
//! - `<name>.backup`: a logical snapshot of every table ([`snapshot`]) encrypted as a chunked
//!   AES-256-GCM stream ([`stream`], [`crypto::StreamSealer`]): 64 KiB of plaintext per chunk,
//!   each chunk's nonce carrying its position and whether it is the last, and
//!   `"<name>|<database>|<format>"` as associated data so a file cannot be passed off under
//!   another backup's manifest. Reordered, dropped or cut-off chunks fail authentication;
//! - `<name>.manifest.json`: format version, name, creation time, database kind, schema version,
//!   row counts per table, SHA-256 of the plaintext and of the ciphertext, the nonce prefix, the
//!   chunk size, the file size, and an HMAC-SHA256 over all of it (keyed from the backup key),
//!   so an edited manifest is refused too.
//!
//! The key is 32 bytes from `CONTACT_BACKUP_KEY` (the tenant Secret), written as 64 hex digits
//! or as standard base64 (`openssl rand -base64 32` or `openssl rand -hex 32` make one). It is
//! read only from the environment, never from the command line, where `ps` would show it.
//!
//! Why a logical snapshot for SQLite too (not `VACUUM INTO`): one format for both databases,
//! row counts per table for the manifest, and a restore that works through SQL on a database
//! the runtime has migrated, instead of swapping a file under a running pool. The snapshot is
//! still online and consistent: in WAL mode a read transaction sees one point in time.
//!
//! Both directions stream, so memory stays bounded whatever the size of the database: `backup`
//! writes rows into the encrypting writer as the database returns them, and `restore` reads the
//! file three times, one chunk at a time: (1) the file's SHA-256 against the manifest, (2) every
//! chunk's tag, the plaintext digest and the row counts, still without touching the database,
//! (3) the load itself, in one transaction that verifies everything again (the file could
//! change between the passes) and commits only after the last chunk proved the file complete.
//! A tampered, reordered or truncated file therefore changes nothing. Restore then needs the
//! same database kind and schema version, and a target without data unless `--force`.
//! Format 1 backups (one GCM message, from earlier versions) still restore, in memory.

pub mod crypto;
pub mod snapshot;
pub mod stream;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::{self, Store};
pub use crypto::BackupKey;

/// Manifest format version: 2 is the chunked stream (1, one GCM message, is still read).
pub const MANIFEST_FORMAT: u32 = 2;
/// The format of single-message backups made by earlier versions.
pub const MANIFEST_FORMAT_SINGLE: u32 = 1;
/// The environment variable holding the key.
pub(crate) const KEY_ENV: &str = "CONTACT_BACKUP_KEY";

/// Errors of backup and restore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key is missing or malformed.
    #[error("invalid backup key ({KEY_ENV}): {0}")]
    Key(String),
    /// Encryption failed.
    #[error("{0}")]
    Crypto(String),
    /// The backup or its manifest was altered, or the key is wrong: nothing was restored.
    #[error("backup refused: {0}")]
    Tampered(String),
    /// The backup does not fit this database (kind, schema) or is unreadable.
    #[error("backup refused: {0}")]
    Format(String),
    /// The target database holds data and `--force` was not given.
    #[error("the target database is not empty ({0} rows); restore with --force to replace it")]
    NotEmpty(u64),
    /// No backup has that name.
    #[error("no backup named `{0}` in {1}")]
    NotFound(String, String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error("storage error")]
    Storage(#[from] storage::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The manifest written next to each backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format_version: u32,
    /// The backup name (file stem).
    pub name: String,
    /// Created at, RFC 3339.
    pub created_at: String,
    /// Created at, epoch milliseconds (what pruning compares).
    pub created_at_ms: i64,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Newest applied migration of the source.
    pub schema_version: i64,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Always `AES-256-GCM`.
    pub cipher: String,
    /// Format 2: the 7-byte nonce prefix of the chunk stream; format 1: the 96-bit GCM nonce.
    /// Hex.
    pub nonce: String,
    /// Plaintext bytes per chunk (format 2; 0 for format 1).
    #[serde(default)]
    pub chunk_bytes: u64,
    /// SHA-256 of the snapshot, hex.
    pub plaintext_sha256: String,
    /// SHA-256 of the `.backup` file, hex.
    pub ciphertext_sha256: String,
    /// Size of the `.backup` file.
    pub size_bytes: u64,
    /// HMAC-SHA256 of this manifest with `mac` empty, hex.
    pub mac: String,
}

impl Manifest {
    fn mac_input(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.mac = String::new();
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// Sets `mac` for the current contents under `key`.
    pub fn sign(&mut self, key: &BackupKey) {
        self.mac = crypto::mac(key, &self.mac_input());
    }

    /// Whether `mac` matches the contents under `key`.
    pub fn verify(&self, key: &BackupKey) -> bool {
        crypto::verify_mac(key, &self.mac_input(), &self.mac)
    }

    fn digests(&self) -> stream::Digests {
        stream::Digests {
            plaintext_sha256: self.plaintext_sha256.clone(),
            ciphertext_sha256: self.ciphertext_sha256.clone(),
            size_bytes: self.size_bytes,
        }
    }

    fn aad(&self) -> Vec<u8> {
        format!("{}|{}|{}", self.name, self.database, self.format_version).into_bytes()
    }
}

/// What `backup` prints: one JSON line the operator reads into `status.lastBackup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// Backup name.
    pub name: String,
    /// Created at, RFC 3339.
    pub time: String,
    /// Size of the encrypted file.
    pub size_bytes: u64,
    /// Backups removed because they were older than `retainDays`.
    pub pruned: Vec<String>,
}

/// What `restore` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    /// Backup name.
    pub name: String,
    /// Rows restored per table.
    pub tables: BTreeMap<String, u64>,
}

fn backup_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.backup"))
}

fn manifest_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.manifest.json"))
}

/// Creates `path` for writing, readable by the owner only: encrypted or not, a backup is for
/// the operator's eyes only.
fn create_private(path: &Path) -> Result<std::fs::File, Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io(path))
}

/// The temporary name a file is written under before it is renamed into place.
fn temporary(path: &Path) -> PathBuf {
    path.with_extension("tmp")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temporary(path);
    let mut f = create_private(&tmp)?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Takes an encrypted snapshot of `store` into `dir` at time `now_ms`, then prunes backups older
/// than `retain_days` (0 keeps all).
pub async fn backup(
    store: &Store,
    dir: &Path,
    key: &BackupKey,
    now_ms: i64,
    retain_days: i64,
) -> Result<BackupResult, Error> {
    backup_chunked(
        store,
        dir,
        key,
        now_ms,
        retain_days,
        stream::DEFAULT_CHUNK_BYTES,
    )
    .await
}

/// [`backup`] with `chunk_bytes` of plaintext per encrypted chunk.
pub async fn backup_chunked(
    store: &Store,
    dir: &Path,
    key: &BackupKey,
    now_ms: i64,
    retain_days: i64,
    chunk_bytes: usize,
) -> Result<BackupResult, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let created = storage::from_ms(now_ms);
    let name = format!("contact-{}", created.format("%Y%m%dT%H%M%S%3fZ"));
    let mut manifest = Manifest {
        format_version: MANIFEST_FORMAT,
        name: name.clone(),
        created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        created_at_ms: now_ms,
        database: store.dialect().name().to_owned(),
        schema_version: 0,
        tables: BTreeMap::new(),
        cipher: "AES-256-GCM".to_owned(),
        nonce: String::new(),
        chunk_bytes: chunk_bytes as u64,
        plaintext_sha256: String::new(),
        ciphertext_sha256: String::new(),
        size_bytes: 0,
        mac: String::new(),
    };
    let bpath = backup_path(dir, &name);
    let tmp = temporary(&bpath);
    let file = create_private(&tmp)?;
    // Rows go from the database cursor through the encrypting writer to a buffered file, one
    // chunk at a time. The file I/O is blocking; this runs as a one-shot CLI job, where a
    // blocked worker thread delays nothing else.
    let mut writer = stream::EncryptingWriter::new(
        std::io::BufWriter::new(file),
        key,
        &manifest.aad(),
        chunk_bytes,
    )?;
    manifest.nonce = hex::encode(writer.nonce_prefix());
    let written = snapshot::write_dump(store, &mut writer).await;
    let summary = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let (out, digests) = writer.finish()?;
    let file = out.into_inner().map_err(|e| Error::Io {
        path: tmp.display().to_string(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &bpath).map_err(io(&bpath))?;
    manifest.schema_version = summary.header.schema_version;
    manifest.tables = summary.counts;
    manifest.plaintext_sha256 = digests.plaintext_sha256;
    manifest.ciphertext_sha256 = digests.ciphertext_sha256;
    manifest.size_bytes = digests.size_bytes;
    manifest.sign(key);
    // The manifest goes last: a backup without one is incomplete and ignored.
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Format(e.to_string()))?;
    write_atomic(&manifest_path(dir, &name), &json)?;
    let pruned = prune(dir, now_ms, retain_days, &name)?;
    Ok(BackupResult {
        name,
        time: manifest.created_at,
        size_bytes: manifest.size_bytes,
        pruned,
    })
}

/// Deletes backups (both files) created more than `retain_days` before `now_ms`, never `keep`.
pub(crate) fn prune(
    dir: &Path,
    now_ms: i64,
    retain_days: i64,
    keep: &str,
) -> Result<Vec<String>, Error> {
    if retain_days <= 0 {
        return Ok(Vec::new());
    }
    let cutoff = now_ms - retain_days * 86_400_000;
    let mut pruned = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".manifest.json") else {
            continue;
        };
        if name == keep {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        // Unreadable manifests are left for a human: pruning never deletes what it cannot date.
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        if m.created_at_ms < cutoff {
            let b = backup_path(dir, name);
            if b.exists() {
                std::fs::remove_file(&b).map_err(io(&b))?;
            }
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            pruned.push(name.to_owned());
        }
    }
    pruned.sort();
    Ok(pruned)
}

/// Reads backup `name`'s manifest and checks its MAC and format. Touches no database.
pub fn manifest(dir: &Path, name: &str, key: &BackupKey) -> Result<Manifest, Error> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::NotFound(name.to_owned(), dir.display().to_string()));
    }
    let mpath = manifest_path(dir, name);
    let bpath = backup_path(dir, name);
    if !mpath.exists() || !bpath.exists() {
        return Err(Error::NotFound(name.to_owned(), dir.display().to_string()));
    }
    let mbytes = std::fs::read(&mpath).map_err(io(&mpath))?;
    let manifest: Manifest = serde_json::from_slice(&mbytes)
        .map_err(|e| Error::Tampered(format!("the manifest is not valid: {e}")))?;
    if !manifest.verify(key) {
        return Err(Error::Tampered(
            "the manifest's MAC does not match (the manifest was altered, or the key is wrong)"
                .to_owned(),
        ));
    }
    let known = [MANIFEST_FORMAT, MANIFEST_FORMAT_SINGLE];
    if !known.contains(&manifest.format_version) || manifest.name != name {
        return Err(Error::Format(format!(
            "manifest format {} for `{}`",
            manifest.format_version, manifest.name
        )));
    }
    Ok(manifest)
}

/// A reader of backup `name`'s snapshot, decrypting and verifying as it goes (format 2), or the
/// whole snapshot decrypted in memory (format 1).
fn snapshot_reader(
    dir: &Path,
    manifest: &Manifest,
    key: &BackupKey,
) -> Result<snapshot::DumpReader<Box<dyn std::io::BufRead>>, Error> {
    let bpath = backup_path(dir, &manifest.name);
    let nonce = hex::decode(&manifest.nonce)
        .map_err(|_| Error::Tampered("the nonce is not hex".to_owned()))?;
    let plain: Box<dyn std::io::BufRead> = if manifest.format_version == MANIFEST_FORMAT_SINGLE {
        let ciphertext = std::fs::read(&bpath).map_err(io(&bpath))?;
        let plaintext = crypto::open(key, &nonce, &ciphertext, &manifest.aad())?;
        if crypto::sha256_hex(&plaintext) != manifest.plaintext_sha256 {
            return Err(Error::Tampered(
                "the decrypted snapshot does not match the manifest's SHA-256".to_owned(),
            ));
        }
        Box::new(std::io::Cursor::new(plaintext))
    } else {
        let file = std::fs::File::open(&bpath).map_err(io(&bpath))?;
        let chunk = usize::try_from(manifest.chunk_bytes)
            .map_err(|_| Error::Format("the chunk size is too large".to_owned()))?;
        Box::new(BufReader::with_capacity(
            stream::DEFAULT_CHUNK_BYTES,
            stream::DecryptingReader::new(
                BufReader::with_capacity(chunk + crypto::TAG_BYTES, file),
                key,
                &nonce,
                &manifest.aad(),
                chunk,
                manifest.digests(),
            )?,
        ))
    };
    let reader = snapshot::DumpReader::new(plain)?;
    if reader.header().database != manifest.database {
        return Err(Error::Tampered(
            "the snapshot's database kind differs from the manifest".to_owned(),
        ));
    }
    Ok(reader)
}

fn counts_match(manifest: &Manifest, counts: &BTreeMap<String, u64>) -> Result<(), Error> {
    if *counts != manifest.tables {
        return Err(Error::Tampered(
            "the snapshot's tables and row counts differ from the manifest".to_owned(),
        ));
    }
    Ok(())
}

/// Checks backup `name` completely without touching a database: manifest MAC, the file's
/// SHA-256 and size, every chunk's authentication tag and position, the plaintext SHA-256, the
/// dump's syntax and the row counts. Reads the file one chunk at a time.
pub fn open(dir: &Path, name: &str, key: &BackupKey) -> Result<Manifest, Error> {
    let manifest = manifest(dir, name, key)?;
    let bpath = backup_path(dir, name);
    let file = std::fs::File::open(&bpath).map_err(io(&bpath))?;
    let (sha, size) = stream::digest_reader(BufReader::new(file)).map_err(io(&bpath))?;
    if sha != manifest.ciphertext_sha256 || size != manifest.size_bytes {
        return Err(Error::Tampered(
            "the backup file does not match the manifest's SHA-256".to_owned(),
        ));
    }
    let mut reader = snapshot_reader(dir, &manifest, key)?;
    let counts = snapshot::count_rows(&mut reader)?;
    counts_match(&manifest, &counts)?;
    Ok(manifest)
}

/// Restores a backup [`open`] already verified from `dir` into `store` (migrated here), which
/// must hold no data unless `force`: streamed into one transaction that commits only once the
/// stream verified again to its end.
pub async fn restore_opened(
    store: &Store,
    dir: &Path,
    manifest: Manifest,
    key: &BackupKey,
    force: bool,
) -> Result<RestoreResult, Error> {
    let kind = store.dialect().name();
    if manifest.database != kind {
        return Err(Error::Format(format!(
            "the backup is of a {} database, the target is {kind}",
            manifest.database
        )));
    }
    store.migrate().await?;
    let version = snapshot::schema_version(store).await?;
    if version != manifest.schema_version {
        return Err(Error::Format(format!(
            "the backup has schema version {}, this runtime {version}: restore with the runtime version that made it",
            manifest.schema_version
        )));
    }
    let rows = snapshot::data_rows(store).await?;
    if rows > 0 && !force {
        return Err(Error::NotEmpty(rows));
    }
    let mut reader = snapshot_reader(dir, &manifest, key)?;
    snapshot::load_from(store, &mut reader, |counts| counts_match(&manifest, counts)).await?;
    Ok(RestoreResult {
        name: manifest.name,
        tables: manifest.tables,
    })
}

/// Arguments of `contact-runtime backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Directory holding the backups.
    #[arg(
        long,
        env = "CONTACT_BACKUP_DIR",
        default_value = "/var/lib/contact/backups"
    )]
    pub dir: PathBuf,
    /// Delete backups older than this many days after a successful backup (0 keeps all).
    #[arg(long, env = "CONTACT_BACKUP_RETAIN_DAYS", default_value_t = 14)]
    pub retain_days: i64,
}

/// Arguments of `contact-runtime restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup name (as printed by `backup`).
    pub name: String,
    /// Directory holding the backups.
    #[arg(
        long,
        env = "CONTACT_BACKUP_DIR",
        default_value = "/var/lib/contact/backups"
    )]
    pub dir: PathBuf,
    /// Replace the data of a database that is not empty.
    #[arg(long)]
    pub force: bool,
}

/// The key from [`KEY_ENV`].
pub(crate) fn key_from_env() -> Result<BackupKey, Error> {
    let text = std::env::var(KEY_ENV).map_err(|_| Error::Key("not set".to_owned()))?;
    BackupKey::parse(&text)
}

async fn connect(config: Option<&Path>) -> anyhow::Result<Store> {
    let settings = crate::config::Settings::load(config)?;
    Ok(Store::connect(&settings.database_url, &storage::ConnectOptions::default()).await?)
}

/// `contact-runtime backup`: prints one JSON line (`name`, `time`, `sizeBytes`, `pruned`).
pub async fn run_backup(config: Option<&Path>, args: BackupArgs) -> anyhow::Result<()> {
    let key = key_from_env()?;
    let store = connect(config).await?;
    let result = backup(&store, &args.dir, &key, storage::now_ms(), args.retain_days).await;
    store.close().await;
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}

/// `contact-runtime restore <name>`: prints one JSON line (`name`, `tables`).
pub async fn run_restore(config: Option<&Path>, args: RestoreArgs) -> anyhow::Result<()> {
    let key = key_from_env()?;
    // Check the files completely before opening the database at all.
    let manifest = open(&args.dir, &args.name, &key)?;
    let store = connect(config).await?;
    let result = restore_opened(&store, &args.dir, manifest, &key, args.force).await;
    store.close().await;
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}
