//! Bounded reads of the files a user names (configuration, secrets, CA certificates): regular files only, so a
//! FIFO or a device never blocks or floods the process, and never more than a stated limit.

use std::io::{self, Read};
use std::path::Path;

/// Largest configuration file read.
pub const CONFIG_LIMIT: u64 = 4 * 1024 * 1024;
/// Largest secret file read (a Proxmox token secret is a 36-character UUID).
pub const SECRET_LIMIT: u64 = 4 * 1024;
/// Largest CA file read (a bundle of a few hundred certificates).
pub const CA_LIMIT: u64 = 1024 * 1024;

/// Reads `path` if it is a regular file (symlinks followed) of at most `limit` bytes. The errors say which rule
/// the file broke, in words a person can act on.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let file = std::fs::File::open(path)?;
    // Checked again on the opened file, in case the path was swapped in between.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // `take` bounds a file that grows while it is read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

fn not_regular(meta: &std::fs::Metadata) -> io::Error {
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() || t.is_block_device() {
                "a device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        }
        #[cfg(not(unix))]
        {
            "not a regular file"
        }
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("it is {kind}; give a regular file"))
}

fn too_large(limit: u64) -> io::Error {
    let human =
        if limit >= 1024 * 1024 { format!("{} MiB", limit / (1024 * 1024)) } else { format!("{} KiB", limit / 1024) };
    io::Error::new(io::ErrorKind::InvalidData, format!("it is larger than {human}, the limit for this file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_big_files_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("vztmpld-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = read_bounded(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        let e = read_bounded(&dir, 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        let e = read_bounded(&big, SECRET_LIMIT).unwrap_err();
        assert!(e.to_string().contains("larger than 4 KiB"), "{e}");
        assert_eq!(read_bounded(&big, 5000).unwrap().len(), 5000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
