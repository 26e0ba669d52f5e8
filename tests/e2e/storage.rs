//! The job service when its disk fills or its journal is not what it should be: a
//! small tmpfs of the test's own as the data directory, filled and freed while the
//! operator runs; damaged, newer and read-only journals at start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{plugin, shared_cache, wasmbatch};
use crate::operator::{Operator, error_of};

/// A tmpfs mounted on a temporary directory (as root), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` (`4m`); `None` (the test is skipped) where mounting is not
    /// allowed — except under `CI=true`, where that fails the test.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and a tmpfs cannot be mounted: {why}");
            eprintln!("SKIPPED: these tests mount a small tmpfs (as root): {why}");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes the file system read-only.
    fn read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(self.dir.path()).status().unwrap();
        assert!(status.success());
    }

    /// Fills the file system with 64 KiB files `fill/<n>` until no byte is left;
    /// returns how many were written.
    fn fill(&self) -> usize {
        let dir = self.path("fill");
        std::fs::create_dir_all(&dir).unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut n = 0;
        loop {
            let Ok(mut file) = std::fs::File::create(dir.join(n.to_string())) else { break };
            let written = file.write_all(&chunk);
            n += 1;
            if written.is_err() {
                break;
            }
        }
        // The last bytes: a file written one byte at a time until the disk refuses.
        if let Ok(mut last) = std::fs::File::create(dir.join("last")) {
            while last.write_all(&[7u8; 512]).is_ok() {}
        }
        n
    }

    /// Frees `count` of the filler files (all of them: `usize::MAX`).
    fn free(&self, count: usize) {
        let dir = self.path("fill");
        let _ = std::fs::remove_file(dir.join("last"));
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for path in names.into_iter().take(count) {
            std::fs::remove_file(path).unwrap();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// A config hosting `noop` and `sum` (mounted on `out`, outside the tmpfs), `extra` added.
fn config(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let path = dir.path().join("apis.toml");
    let text = format!(
        "{extra}\n[[api]]\nname = \"noop\"\nplugin = \"{}\"\n[[api]]\nname = \"sum\"\nplugin = \"{}\"\nmount = \"out\"\n",
        plugin("noop").display(),
        plugin("sum").display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn count_logs(operator: &Operator, text: &str) -> usize {
    operator.logs.lock().unwrap().iter().filter(|l| l.contains(text)).count()
}

fn wait_log(operator: &Operator, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_logs(operator, text) == 0 {
        assert!(Instant::now() < deadline, "never logged {text:?}:\n{}", operator.logs.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_full_data_directory_refuses_cleanly_and_takes_jobs_again_once_freed() {
    let Some(disk) = Tmpfs::mount("3m") else { return };
    let (_dir, config) = config("");
    let data = disk.path("data");
    let operator = Operator::start(&config, &data);
    // A first job, so that the submissions folder exists.
    let small = json!({"workers": 1, "item_list": {"items": [[1]], "batch_size": 1}});
    let first = operator.submit("sum", &small);
    operator.wait_done("sum", &first);
    disk.fill();
    // A 1.8 MB submission, then a one-item one: both refused, with the reason.
    let big_item = "x".repeat(200_000);
    let big = json!({"workers": 1, "item_list": {"items": vec![big_item; 9], "batch_size": 1}});
    for job in [&big, &small] {
        let answer = operator.request("POST", "/batch/sum", Some(&job.to_string()));
        let (code, kind, message) = error_of(&answer);
        assert_eq!((code, kind.as_str()), (507, "storage_full"), "{message}");
        assert!(message.contains(&data.display().to_string()) && message.contains("bytes free"), "{message}");
    }
    // Nothing partial is left, and the episode is logged once.
    assert_eq!(files_in(&data.join("submissions")), vec![format!("{first}.json")]);
    assert_eq!(count_logs(&operator, "the disk is full: submissions cannot be recorded"), 1);
    let (_, metrics) = operator.request("GET", "/metrics", None);
    assert!(metrics.lines().any(|l| l.starts_with("wasmbatch_data_dir_free_bytes ")), "{metrics}");
    // Room again: a one-item job goes through, without a restart.
    disk.free(usize::MAX);
    let job_id = operator.submit("sum", &small);
    assert_eq!(operator.wait_done("sum", &job_id)["job_status"]["status"], "succeeded");
    wait_log(&operator, "there is room on the disk again: submissions are recorded");
}

#[test]
fn min_free_space_refuses_new_jobs_below_the_floor() {
    let (_dir, config) = config("min_free_space = \"1000000GiB\"");
    let data = tempfile::tempdir().unwrap();
    let operator = Operator::start(&config, data.path());
    let answer = operator.request(
        "POST",
        "/batch/noop",
        Some(r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 1}}"#),
    );
    let (code, kind, message) = error_of(&answer);
    assert_eq!((code, kind.as_str()), (507, "storage_full"), "{message}");
    assert!(message.contains("below min_free_space"), "{message}");
    assert!(files_in(&data.path().join("submissions")).is_empty());
}

#[test]
fn a_running_job_waits_for_room_and_ends_with_exact_counts() {
    let Some(disk) = Tmpfs::mount("12m") else { return };
    let (_dir, config) = config("");
    let data = disk.path("data");
    let operator = Operator::start(&config, &data);
    let batches = 100_000;
    let items: Vec<u32> = (0..batches).collect();
    let job = json!({"workers": 2, "item_list": {"items": items, "batch_size": 1}});
    // Full, then room for the submission (~0.6 MB) and little more: the job's records
    // fill the rest while it runs.
    disk.fill();
    disk.free(14);
    let job_id = operator.submit("noop", &job);
    wait_log(&operator, "the disk is full: outcomes cannot be recorded");
    let stalled = operator.status("noop", &job_id);
    assert_eq!(stalled["job_status"]["status"], "running", "{stalled}");
    disk.free(usize::MAX);
    let status = operator.wait_done("noop", &job_id);
    assert_eq!(status["job_status"]["status"], "succeeded", "{status}");
    assert_eq!(status["metrics"]["succeeded"].as_u64(), Some(batches as u64), "{status}");
    assert_eq!(status["metrics"]["failed"].as_u64(), Some(0));
    assert_eq!(status["job_status"]["total_batch_count"].as_u64(), Some(batches as u64));
    wait_log(&operator, "there is room on the disk again: outcomes are recorded");
}

/// Starts an operator on `data` expecting it to refuse: (exit code, stderr).
fn refused_start(config: &Path, data: &Path) -> (Option<i32>, String) {
    let out = wasmbatch()
        .args(["operator", "--host", "127.0.0.1", "--port", "0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--cache-dir")
        .arg(shared_cache())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_damaged_newer_or_read_only_journal_stops_the_start_and_is_left_as_it_is() {
    let (_dir, config) = config("");
    // Damaged: bytes that are not a database.
    let damaged = tempfile::tempdir().unwrap();
    let garbage = b"SQLite format 3\0 but then nothing of the kind".repeat(100);
    std::fs::write(damaged.path().join("journal.sqlite"), &garbage).unwrap();
    let (code, stderr) = refused_start(&config, damaged.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("damaged") && stderr.contains("restore it from a backup"), "{stderr}");
    assert_eq!(std::fs::read(damaged.path().join("journal.sqlite")).unwrap(), garbage);

    // Newer: a journal whose schema version is beyond this wasmbatch's.
    let newer = tempfile::tempdir().unwrap();
    drop(Operator::start(&config, newer.path()));
    let journal = newer.path().join("journal.sqlite");
    let script =
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version = 99'); c.commit()";
    assert!(Command::new("python3").args(["-c", script]).arg(&journal).status().unwrap().success());
    let before = std::fs::read(&journal).unwrap();
    let (code, stderr) = refused_start(&config, newer.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("written by a newer wasmbatch (journal schema 99"), "{stderr}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);

    // Read-only: a file system that cannot be written.
    let Some(disk) = Tmpfs::mount("1m") else { return };
    std::fs::create_dir(disk.path("data")).unwrap();
    disk.read_only();
    let (code, stderr) = refused_start(&config, &disk.path("data"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be written") || stderr.contains("Read-only file system"), "{stderr}");
}
