//! oslo's `use_queue_manager`: stable names for reply and fanout queues,
//! `<hostname>:<processname>:<n>` instead of random hex, so that a restarted service
//! uses the queues of its previous run again rather than leaving them to expire
//! (which costs the broker at scale).
//!
//! `n` counts the names given out by the current generation of the service — every
//! process of one process group started from one leader — in a file shared by them,
//! `/dev/shm/<hostname>_<processname>_qmanager`, holding `<pgrp>:<n>:<start time>` as
//! oslo's `QManager` writes it; a new generation (another process group, or the group
//! leader's start time changed) starts again at 1. The file is locked while it is read
//! and written. (oslo locks another file, with `oslo.concurrency`: a Python and a Rust
//! service must not share a hostname and process name.)

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Gives out the stable part of reply and fanout queue names.
#[derive(Clone, Debug)]
pub(crate) struct QueueManager {
    hostname: String,
    processname: String,
    file: PathBuf,
}

/// This process's generation: its process group, and that group leader's start time
/// (clock ticks since boot), as oslo's `_service_identity` reads them.
fn generation() -> Option<(u64, u64)> {
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold anything.
    let after = &own[own.rfind(')')? + 1..];
    // state, ppid, pgrp, …
    let pgrp: u64 = after.split_whitespace().nth(2)?.parse().ok()?;
    let leader = std::fs::read_to_string(format!("/proc/{pgrp}/stat"))
        .or_else(|_| std::fs::read_to_string("/proc/self/stat"))
        .ok()?;
    let after = &leader[leader.rfind(')')? + 1..];
    // Field 22 of stat is the start time; `after` starts at field 3.
    let start: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    Some((pgrp, start))
}

/// The machine's name, as Python's `socket.gethostname()` gives it.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The program's name, as oslo's `os.path.basename(sys.argv[0])`.
pub(crate) fn processname() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "messaging".to_owned())
}

impl QueueManager {
    /// A manager counting in `/dev/shm`.
    pub(crate) fn new(hostname: String, processname: String) -> Self {
        let file = PathBuf::from(format!("/dev/shm/{hostname}_{processname}_qmanager"));
        QueueManager::in_file(hostname, processname, file)
    }

    fn in_file(hostname: String, processname: String, file: PathBuf) -> Self {
        QueueManager {
            hostname,
            processname,
            file,
        }
    }

    /// The next name: `<hostname>:<processname>:<n>`.
    pub(crate) fn next(&self) -> std::io::Result<String> {
        let (pgrp, start) = generation().unwrap_or((std::process::id() as u64, 0));
        let n = self.count(pgrp, start)?;
        Ok(format!("{}:{}:{n}", self.hostname, self.processname))
    }

    /// Increments the generation's counter in the file (1 for a new generation).
    fn count(&self, pgrp: u64, start: u64) -> std::io::Result<u64> {
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.file)?;
        file.lock()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let mut fields = text.trim().split(':').map(|f| f.parse::<u64>().ok());
        let n = match (fields.next(), fields.next(), fields.next()) {
            (Some(Some(p)), Some(Some(n)), Some(Some(s))) if p == pgrp && s == start => n + 1,
            _ => 1,
        };
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(format!("{pgrp}:{n}:{start}").as_bytes())?;
        file.flush()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_up_within_a_generation_and_restart_at_one_in_the_next() {
        let file =
            std::env::temp_dir().join(format!("qmanager-test-{}", messaging_core::ids::hex_id()));
        let manager = QueueManager::in_file("node1".into(), "nova-api".into(), file.clone());
        assert_eq!(manager.next().unwrap(), "node1:nova-api:1");
        assert_eq!(manager.next().unwrap(), "node1:nova-api:2");
        let (pgrp, start) = generation().unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{pgrp}:2:{start}"),
            "oslo's file format"
        );
        // Another generation (a restarted service) wrote the file: start again.
        std::fs::write(&file, format!("{}:41:{start}", pgrp + 1)).unwrap();
        assert_eq!(manager.next().unwrap(), "node1:nova-api:1");
        // A garbled file is a new generation too.
        std::fs::write(&file, "not:a:counter").unwrap();
        assert_eq!(manager.next().unwrap(), "node1:nova-api:1");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn the_generation_is_this_process_group() {
        let (pgrp, start) = generation().expect("readable /proc");
        assert!(pgrp > 0 && start > 0);
        assert!(!hostname().is_empty() && !processname().is_empty());
    }
}
