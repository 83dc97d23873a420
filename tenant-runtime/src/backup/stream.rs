//! The chunked encrypted file format of a backup, as a [`Write`] and a [`Read`]: memory stays at
//! one chunk (64 KiB by default) whatever the size of the database.
//!
//! A `.backup` file is the concatenation of the sealed chunks of [`crypto::StreamSealer`]: every
//! chunk holds `chunk_bytes` of plaintext (so `chunk_bytes + 16` on disk) except the final one,
//! which holds the rest (possibly nothing) and is the only one sealed as last. The reader needs
//! no length fields: a full chunk followed by more bytes is an inner chunk, whatever ends the
//! file is the final one. Both sides also compute the SHA-256 digests the manifest records.

use std::io::{BufRead, Read, Write};

use sha2::{Digest, Sha256};

use super::Error;
use super::crypto::{self, BackupKey, StreamOpener, StreamSealer};

/// Plaintext bytes per chunk unless a caller chooses otherwise.
pub(crate) const DEFAULT_CHUNK_BYTES: usize = 64 * 1024;

/// What a finished stream amounts to (recorded in the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    /// SHA-256 of the plaintext, hex.
    pub plaintext_sha256: String,
    /// SHA-256 of the file, hex.
    pub ciphertext_sha256: String,
    /// Size of the file.
    pub size_bytes: u64,
}

/// Encrypts everything written to it into `out`, chunk by chunk.
pub(crate) struct EncryptingWriter<W: Write> {
    out: W,
    sealer: StreamSealer,
    chunk_bytes: usize,
    buf: Vec<u8>,
    plain: Sha256,
    cipher: Sha256,
    size: u64,
}

impl<W: Write> EncryptingWriter<W> {
    /// A writer sealing chunks of `chunk_bytes` (at least 1) with `key`, binding `aad`.
    pub(crate) fn new(
        out: W,
        key: &BackupKey,
        aad: &[u8],
        chunk_bytes: usize,
    ) -> Result<Self, Error> {
        Ok(Self {
            out,
            sealer: StreamSealer::new(key, aad)?,
            chunk_bytes: chunk_bytes.max(1),
            buf: Vec::with_capacity(chunk_bytes.max(1)),
            plain: Sha256::new(),
            cipher: Sha256::new(),
            size: 0,
        })
    }

    /// The stream's nonce prefix (for the manifest).
    pub(crate) fn nonce_prefix(&self) -> [u8; crypto::NONCE_PREFIX_BYTES] {
        self.sealer.prefix()
    }

    fn emit(&mut self, last: bool) -> std::io::Result<()> {
        let sealed = self
            .sealer
            .seal(&self.buf, last)
            .map_err(std::io::Error::other)?;
        self.cipher.update(&sealed);
        self.size += sealed.len() as u64;
        self.out.write_all(&sealed)?;
        self.buf.clear();
        Ok(())
    }

    /// Seals the final chunk and returns the output and the digests.
    pub(crate) fn finish(mut self) -> Result<(W, Digests), Error> {
        self.emit(true).map_err(|e| Error::Crypto(e.to_string()))?;
        self.out.flush().map_err(|e| Error::Crypto(e.to_string()))?;
        Ok((
            self.out,
            Digests {
                plaintext_sha256: hex::encode(self.plain.finalize()),
                ciphertext_sha256: hex::encode(self.cipher.finalize()),
                size_bytes: self.size,
            },
        ))
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // A full buffer is sealed only once more data arrives: until then it might be the last.
        if self.buf.len() == self.chunk_bytes && !data.is_empty() {
            self.emit(false)?;
        }
        let n = data.len().min(self.chunk_bytes - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.plain.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Chunks are sealed when full or at `finish`; flushing only passes on what was sealed.
        self.out.flush()
    }
}

/// Decrypts and authenticates a stream written by [`EncryptingWriter`], chunk by chunk.
///
/// At the end of the file it checks the digests against `expected`; any failure is an
/// [`std::io::Error`] wrapping an [`Error`] (see [`backup_error`]). Bytes are only handed out
/// after their chunk's tag verified, but the stream as a whole (truncation, digests) is only
/// proven once `read` returned 0: consumers must not commit anything before that.
pub(crate) struct DecryptingReader<R: BufRead> {
    inner: R,
    opener: StreamOpener,
    chunk_bytes: usize,
    expected: Digests,
    plain: Sha256,
    cipher: Sha256,
    size: u64,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: BufRead> DecryptingReader<R> {
    /// A reader of the stream with nonce `prefix`, `aad` and `chunk_bytes`, whose digests must
    /// come out as `expected`.
    pub(crate) fn new(
        inner: R,
        key: &BackupKey,
        prefix: &[u8],
        aad: &[u8],
        chunk_bytes: usize,
        expected: Digests,
    ) -> Result<Self, Error> {
        if chunk_bytes == 0 {
            return Err(Error::Format("the manifest's chunk size is 0".to_owned()));
        }
        Ok(Self {
            inner,
            opener: StreamOpener::new(key, prefix, aad)?,
            chunk_bytes,
            expected,
            plain: Sha256::new(),
            cipher: Sha256::new(),
            size: 0,
            out: Vec::with_capacity(chunk_bytes),
            pos: 0,
            done: false,
        })
    }

    /// Reads, authenticates and decrypts the next chunk into `out`.
    fn next_chunk(&mut self) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Format(format!("reading the backup: {e}"));
        let want = self.chunk_bytes + crypto::TAG_BYTES;
        let mut sealed = Vec::with_capacity(want);
        (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut sealed)
            .map_err(io)?;
        let last = sealed.len() < want || self.inner.fill_buf().map_err(io)?.is_empty();
        self.cipher.update(&sealed);
        self.size += sealed.len() as u64;
        if sealed.len() < crypto::TAG_BYTES {
            return Err(Error::Tampered(
                "the backup is truncated (its last chunk is incomplete)".to_owned(),
            ));
        }
        self.out = self.opener.open(&sealed, last)?;
        self.plain.update(&self.out);
        self.pos = 0;
        if last {
            self.done = true;
            let got = Digests {
                plaintext_sha256: hex::encode(self.plain.clone().finalize()),
                ciphertext_sha256: hex::encode(self.cipher.clone().finalize()),
                size_bytes: self.size,
            };
            if got.ciphertext_sha256 != self.expected.ciphertext_sha256
                || got.size_bytes != self.expected.size_bytes
            {
                return Err(Error::Tampered(
                    "the backup file does not match the manifest's SHA-256".to_owned(),
                ));
            }
            if got.plaintext_sha256 != self.expected.plaintext_sha256 {
                return Err(Error::Tampered(
                    "the decrypted snapshot does not match the manifest's SHA-256".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk().map_err(std::io::Error::other)?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The backup error inside an I/O error from [`DecryptingReader`], or `context` and the error.
pub(crate) fn backup_error(e: std::io::Error, context: &str) -> Error {
    let text = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(inner)) => *inner,
        _ => Error::Format(format!("{context}: {text}")),
    }
}

/// SHA-256 and size of everything `r` yields, read in small pieces.
pub(crate) fn digest_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; DEFAULT_CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(plain: &[u8], chunk: usize) -> (Vec<u8>, [u8; 7], Digests) {
        let k = BackupKey::from_bytes([9; 32]);
        let mut w = EncryptingWriter::new(Vec::new(), &k, b"aad", chunk).unwrap();
        // Odd write sizes, so chunk boundaries fall inside writes.
        for piece in plain.chunks(7) {
            w.write_all(piece).unwrap();
        }
        let prefix = w.nonce_prefix();
        let (file, d) = w.finish().unwrap();
        (file, prefix, d)
    }

    fn unseal(file: &[u8], prefix: &[u8], chunk: usize, d: &Digests) -> Result<Vec<u8>, Error> {
        let k = BackupKey::from_bytes([9; 32]);
        let mut r = DecryptingReader::new(file, &k, prefix, b"aad", chunk, d.clone())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| backup_error(e, "read"))?;
        Ok(out)
    }

    #[test]
    fn files_round_trip_at_every_size_around_the_chunk_size() {
        for len in [0usize, 1, 15, 16, 17, 32, 33, 100] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (file, prefix, d) = seal(&plain, 16);
            // Full chunks, and a final one that is never empty unless the stream is.
            let chunks = len.div_ceil(16).max(1);
            assert_eq!(file.len(), len + 16 * chunks, "len {len}");
            assert_eq!(d.size_bytes, file.len() as u64);
            assert_eq!(d.plaintext_sha256, crypto::sha256_hex(&plain));
            assert_eq!(d.ciphertext_sha256, crypto::sha256_hex(&file));
            assert_eq!(unseal(&file, &prefix, 16, &d).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn truncated_reordered_or_altered_files_are_refused() {
        let plain: Vec<u8> = (0..100u8).collect();
        let (file, prefix, d) = seal(&plain, 16);
        let sealed = 16 + 16;
        // Cut at a chunk boundary, and inside a chunk.
        let err = unseal(&file[..2 * sealed], &prefix, 16, &d).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(unseal(&file[..2 * sealed + 5], &prefix, 16, &d).is_err());
        assert!(unseal(&file[..3], &prefix, 16, &d).is_err());
        // Chunks 1 and 2 swapped.
        let mut swapped = file.clone();
        swapped[sealed..2 * sealed].copy_from_slice(&file[2 * sealed..3 * sealed]);
        swapped[2 * sealed..3 * sealed].copy_from_slice(&file[sealed..2 * sealed]);
        let err = unseal(&swapped, &prefix, 16, &d).unwrap_err();
        assert!(err.to_string().contains("chunk 1 fails"), "{err}");
        // Read with the wrong chunk size, or expecting other digests.
        assert!(unseal(&file, &prefix, 32, &d).is_err());
        let mut other = d.clone();
        other.plaintext_sha256 = "00".repeat(32);
        let err = unseal(&file, &prefix, 16, &other).unwrap_err();
        assert!(err.to_string().contains("decrypted snapshot"), "{err}");
    }
}
