//! Files laid out as the kubelet lays out a Secret or ConfigMap volume, and updated as its
//! atomic writer updates them.

use std::path::Path;

/// Lays out `dir` as the kubelet does for a Secret or ConfigMap volume: the files in a
/// `..<version>` directory, `..data` swapped to it atomically (a symlink beside it renamed over
/// it), and each name a symlink through `..data`.
pub fn project_files(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
}

/// Updates `dir` the way the kubelet's atomic writer updates a Secret or ConfigMap volume: the
/// files written into a new `..v<version>` directory, `..data` swapped to it (a symlink beside it
/// renamed over it), a symlink through `..data` added for each new name and removed for each name
/// gone, and the previous version's directory removed.
pub fn project_version(dir: &Path, version: u64, files: &[(String, Vec<u8>)]) {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    project_files(dir, &format!("v{version}"), &refs);
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    if version > 0 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1)));
    }
}
