//! Writing output files safely: through a temporary file in the same
//! folder, renamed over the target only when the target is a regular file
//! (or absent), so that a crash, a full disk or a kill leaves either the
//! old file or the new one, and a symlink, a device or a folder at the
//! path is never replaced.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// How many symbolic links [`output_target`] follows before giving up.
const MAX_LINKS: usize = 40;

/// The end of the temporary files' names: `.<target name>.<pid>.<random>.convnet-tmp`.
const TMP_SUFFIX: &str = ".convnet-tmp";

/// The file that writing to `path` replaces: `path` with every symbolic
/// link followed (a link to a file that does not exist yet gives that
/// file). Links in the folders above are left to the operating system.
pub fn output_target(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|e| Error::io(&current, e))?;
                current = match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(Error::io(&current, e)),
        }
    }
    Err(Error::InvalidArgument(format!(
        "{}: more than {MAX_LINKS} symbolic links in a row (a loop?); name the file itself",
        path.display()
    )))
}

/// The folder a file at `path` is created in.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks that `target` (what `path` leads to) may be replaced: absent, or
/// a regular file with no other hard link; its folder must exist. Returns
/// the existing file's metadata.
fn check_target(path: &Path, target: &Path) -> Result<Option<fs::Metadata>> {
    let shown = if path == target {
        path.display().to_string()
    } else {
        format!("{} (a link to {})", path.display(), target.display())
    };
    let meta = match fs::metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = folder_of(target);
            if !dir.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "cannot write {shown}: the folder {} does not exist; create it first",
                    dir.display()
                )));
            }
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "cannot write {shown}: it is a folder; name a file to write"
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "cannot write {shown}: it is not a regular file (a device, pipe or socket), which \
             convnet never replaces; name a regular file"
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(Error::InvalidArgument(format!(
                "cannot write {shown}: the file has {} hard links, and replacing it would \
                 leave the others with the old contents; remove the other links or name \
                 another file",
                meta.nlink()
            )));
        }
    }
    Ok(Some(meta))
}

/// Writes `bytes` to `path` atomically: into a temporary file in the
/// target's folder, flushed to disk, then renamed over the target.
///
/// A symbolic link at `path` is followed and its target replaced; a
/// folder, a device, a pipe or a file with other hard links is refused
/// with [`Error::InvalidArgument`]. An existing file keeps its permission
/// bits; a new one gets the usual `0666` less the umask. If anything
/// fails, the target keeps its old contents (or stays absent) and the
/// temporary file is removed; one left by a process killed mid-write
/// (`<folder>/.<name>.<pid>.*.convnet-tmp`) is removed by the next write
/// to the same path. A program that ends on a signal can remove the
/// temporary files of the writes in progress first: see
/// [`abandon_writes`]. A full disk or a file-size limit is an
/// [`Error::Io`] that says so.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = output_target(path)?;
    let existing = check_target(path, &target)?;
    let dir = folder_of(&target);
    let name = target
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: name a file to write", path.display())))?
        .to_string_lossy()
        .into_owned();
    remove_stale_temporaries(dir, &name);
    let prefix = format!(".{name}.{}.", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(TMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let written = |e: std::io::Error| Error::io(path, explained(e));
    let mut tmp = Temporary::create(&builder, dir).map_err(|e| Error::io(dir, explained(e)))?;
    if let Some(meta) = &existing {
        tmp.file()
            .as_file()
            .set_permissions(meta.permissions())
            .map_err(|e| Error::io(tmp.file().path(), e))?;
    }
    // The bare file: `NamedTempFile`'s own errors name the temporary file.
    tmp.file().as_file_mut().write_all(bytes).map_err(written)?;
    tmp.file().as_file().sync_all().map_err(written)?;
    tmp.persist(&target).map_err(written)?;
    // Make the rename itself durable; a folder that cannot be synced
    // (some file systems) still holds the new file.
    if let Ok(folder) = fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// `e`, a failure to write a file, with what it means and what to do
/// when the disk or a size limit is full.
fn explained(e: std::io::Error) -> std::io::Error {
    let (what, todo) = match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            ("the disk (or your quota) is full", "free some space")
        }
        ErrorKind::FileTooLarge => (
            "the file would pass a size limit (ulimit -f, or the file system's)",
            "raise the limit",
        ),
        _ => return e,
    };
    std::io::Error::new(
        e.kind(),
        format!(
            "{e}: {what}, so the file was not written and keeps its previous contents (if \
             any); {todo} or write somewhere else"
        ),
    )
}

/// The temporary files of the [`write_atomic`] calls in progress in this
/// process, for [`abandon_writes`]. Its lock is held while a temporary file
/// is created and registered, and while one is renamed or removed and
/// unregistered: [`abandon_writes`] sees every write before its temporary
/// file exists, or with it listed, or after it is gone.
static IN_PROGRESS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// [`IN_PROGRESS`], locked (a panic elsewhere leaves the list usable).
fn in_progress() -> MutexGuard<'static, Vec<PathBuf>> {
    IN_PROGRESS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A temporary file listed in [`IN_PROGRESS`] as long as it exists:
/// dropped, it is removed and unlisted; persisted, renamed and unlisted.
struct Temporary(Option<tempfile::NamedTempFile>);

impl Temporary {
    fn create(builder: &tempfile::Builder, dir: &Path) -> std::io::Result<Self> {
        let mut live = in_progress();
        let file = builder.tempfile_in(dir)?;
        live.push(file.path().to_path_buf());
        Ok(Self(Some(file)))
    }

    fn file(&mut self) -> &mut tempfile::NamedTempFile {
        self.0.as_mut().expect("present until persisted or dropped")
    }

    /// Renames the file to `target` (on failure, removes it).
    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let mut live = in_progress();
        let file = self.0.take().expect("present until persisted or dropped");
        let path = file.path().to_path_buf();
        // The dropped `PersistError` removes the temporary file.
        let result = file.persist(target).map(drop).map_err(|e| e.error);
        live.retain(|p| *p != path);
        result
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            let mut live = in_progress();
            let path = file.path().to_path_buf();
            drop(file);
            live.retain(|p| *p != path);
        }
    }
}

/// Removes the temporary file of every [`write_atomic`] in progress in
/// this process, and stops any write from creating or renaming one from
/// then on: those calls wait forever. Each target keeps the contents it
/// had (the old ones, or the new ones if the rename came first), and no
/// temporary file is left.
///
/// For a program that ends on a signal (SIGINT, SIGTERM): call it from an
/// ordinary thread that received the signal (for example through
/// `sigwait`), never from a signal handler (it takes a lock and frees
/// memory) nor from a thread inside `write_atomic`, then end the process
/// at once. The `convnet` command line does so.
pub fn abandon_writes() {
    let live = in_progress();
    for path in live.iter() {
        let _ = fs::remove_file(path);
    }
    // Held until the process ends: no write starts or finishes.
    std::mem::forget(live);
}

/// Removes the temporary files of earlier writes to `dir/name` whose
/// process no longer runs (killed mid-write). Only Linux tells, through
/// `/proc`, whether a process runs; elsewhere nothing is removed.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let start = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&start))
            .filter(|rest| rest.ends_with(TMP_SUFFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let running = Path::new(&format!("/proc/{pid}")).exists();
        if !running && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// What identifies a file: its device and inode when it exists (so that
/// hard links and symlinks to one file compare equal), else its absolute
/// path with links followed.
#[derive(PartialEq, Eq)]
enum FileKey {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_key(path: &Path) -> Result<FileKey> {
    let target = output_target(path)?;
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(&target) {
        use std::os::unix::fs::MetadataExt;
        return Ok(FileKey::Inode(meta.dev(), meta.ino()));
    }
    let dir = fs::canonicalize(folder_of(&target)).unwrap_or_else(|_| folder_of(&target).into());
    Ok(FileKey::Path(match target.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }))
}

/// Checks, before long work starts, that each output can be written: that
/// it is a regular file or absent (see [`write_atomic`]), that a file can
/// be created in its folder, that no two outputs are the same file, and
/// that no output is one of the `inputs` (which writing would destroy).
///
/// Each output comes with what names it in messages (a flag such as
/// `"--save-weights"`, or any label).
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[&Path]) -> Result<()> {
    let mut seen: Vec<(&str, &Path, FileKey)> = Vec::new();
    for &(what, path) in outputs {
        let target = output_target(path)?;
        check_target(path, &target)?;
        let dir = folder_of(&target);
        // An unnamed file (where the system has them): nothing to remove,
        // even if the process is killed here.
        tempfile::tempfile_in(dir).map_err(|e| {
            Error::InvalidArgument(format!(
                "{what} {}: cannot create a file in {} ({e}); choose a folder you can \
                     write to",
                path.display(),
                dir.display()
            ))
        })?;
        let key = file_key(path)?;
        if let Some((other, other_path, _)) = seen.iter().find(|(_, _, k)| *k == key) {
            return Err(Error::InvalidArgument(format!(
                "{other} {} and {what} {} are the same file: one would overwrite the other; \
                 give each output its own file",
                other_path.display(),
                path.display()
            )));
        }
        for input in inputs {
            if file_key(input)? == key {
                return Err(Error::InvalidArgument(format!(
                    "{what} {} is the input {}: writing it would destroy the input; name \
                     another output file",
                    path.display(),
                    input.display()
                )));
            }
        }
        seen.push((what, path, key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<()>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn writes_and_replaces_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn a_write_is_listed_in_progress_only_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ours = || {
            let live = in_progress();
            live.iter().filter(|p| p.starts_with(dir.path())).count()
        };
        let tmp = Temporary::create(tempfile::Builder::new().suffix(TMP_SUFFIX), dir.path());
        let tmp = tmp.unwrap();
        assert_eq!(ours(), 1);
        drop(tmp);
        assert_eq!(ours(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "removed");
        let mut tmp = Temporary::create(&tempfile::Builder::new(), dir.path()).unwrap();
        tmp.file().write_all(b"new").unwrap();
        tmp.persist(&dir.path().join("out")).unwrap();
        assert_eq!(ours(), 0);
        assert_eq!(fs::read(dir.path().join("out")).unwrap(), b"new");
        write_atomic(&dir.path().join("no/such/folder"), b"x").unwrap_err();
        assert_eq!(ours(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.txt");
        let link = dir.path().join("link.txt");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.txt", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("created.txt", &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert_eq!(fs::read(dir.path().join("created.txt")).unwrap(), b"x");
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        assert!(message(write_atomic(&a, b"x")).contains("symbolic links"));
    }

    #[test]
    fn a_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = message(write_atomic(dir.path(), b"x"));
        assert!(m.contains("is a folder"), "{m}");
        let m = message(write_atomic(&dir.path().join("no/such/x"), b"x"));
        assert!(m.contains("does not exist"), "{m}");
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_refused() {
        let m = message(write_atomic(Path::new("/dev/null"), b"x"));
        assert!(m.contains("not a regular file"), "{m}");
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_kept_and_hard_links_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.sh");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o754)).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o754);
        let fresh = dir.path().join("fresh");
        write_atomic(&fresh, b"new").unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_ne!(mode, 0o600, "a new file is not private to its owner");
        let linked = dir.path().join("linked");
        fs::hard_link(&path, &linked).unwrap();
        assert!(message(write_atomic(&linked, b"x")).contains("hard links"));
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_stale_temporary_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        // No process has pid 4194304 (above Linux's pid_max limit).
        let stale = dir
            .path()
            .join(".model.safetensors.4194304.abc123.convnet-tmp");
        fs::write(&stale, b"half").unwrap();
        let other = dir.path().join(".other.4194304.abc123.convnet-tmp");
        fs::write(&other, b"keep").unwrap();
        write_atomic(&path, b"whole").unwrap();
        assert!(!stale.exists());
        assert!(other.exists(), "only this path's temporaries are removed");
    }

    #[cfg(unix)]
    #[test]
    fn outputs_may_not_be_inputs_or_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.png");
        fs::write(&input, b"photo").unwrap();
        let link = dir.path().join("alias.png");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let a = dir.path().join("a.json");
        let m = message(check_outputs(&[("-o", &input)], &[&input]));
        assert!(m.contains("would destroy the input"), "{m}");
        let m = message(check_outputs(&[("-o", &link)], &[&input]));
        assert!(m.contains("would destroy the input"), "{m}");
        let dotted = dir.path().join(".").join("a.json");
        let m = message(check_outputs(
            &[("--metrics-out", &a), ("--save-weights", &dotted)],
            &[],
        ));
        assert!(m.contains("are the same file"), "{m}");
        check_outputs(&[("--metrics-out", &a)], &[&input]).unwrap();
        assert_eq!(fs::read(&input).unwrap(), b"photo");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no check file left"
        );
    }
}
