//! What the largest config file costs in memory at worst: a file of nothing but
//! one-line assignments to distinct keys (or distinct sections), under a long path.
//! Alone in its test binary, so that the process's peak resident size is this test's.

mod support;

use std::time::Instant;

use messaging_config::Config;
use support::Scratch;

/// The process's peak resident size (Linux), in KiB.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn the_largest_file_of_one_line_assignments_costs_a_bounded_amount_of_memory() {
    let scratch = Scratch::new("memory");
    let dir = scratch.0.join("d".repeat(200));
    std::fs::create_dir_all(&dir).unwrap();
    let mut keys = String::from("[DEFAULT]\n");
    let mut sections = String::new();
    let mut i = 0u64;
    while keys.len() < (4 << 20) - 32 {
        keys.push_str(&format!("k{i:x}=\n"));
        sections.push_str(&format!("[{i:x}]\n"));
        i += 1;
    }
    let keys_path = dir.join("keys.conf");
    let sections_path = dir.join("sections.conf");
    std::fs::write(&keys_path, &keys).unwrap();
    std::fs::write(&sections_path, &sections).unwrap();
    drop((keys, sections));
    let Some(before) = peak_kib() else {
        eprintln!("skipped: no /proc/self/status");
        return;
    };
    for path in [keys_path, sections_path] {
        let started = Instant::now();
        let config = Config::from_files([&path]).unwrap();
        let peak = peak_kib().unwrap();
        eprintln!(
            "{i} one-line entries in {}: {:?}, peak {} MiB (from {} MiB)",
            path.file_name().unwrap().to_string_lossy(),
            started.elapsed(),
            peak >> 10,
            before >> 10
        );
        drop(config);
        // About 30 times the file; it was 110 times (1.7 GiB for 16 MiB).
        assert!(
            peak - before < 200 << 10,
            "{} MiB for a 4 MiB file",
            (peak - before) >> 10
        );
    }
}
