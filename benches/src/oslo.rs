//! The peer: Python oslo.messaging 18.3.1 (threading executor) on the same RabbitMQ,
//! measured by `interop/oslo_bench.py` in a virtual environment that
//! `interop/setup-venv.sh` creates if missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::stats::{Latency, Rate};

/// Running the Python benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum OsloError {
    /// The virtual environment could not be created.
    #[error("setting up the oslo.messaging venv (interop/setup-venv.sh): {0}")]
    Venv(String),
    /// The script failed.
    #[error("interop/oslo_bench.py failed: {0}")]
    Script(String),
    /// Its output was not the JSON expected.
    #[error("interop/oslo_bench.py printed no usable JSON ({0})")]
    Output(String),
}

/// What the Python benchmark measured.
#[derive(Clone, Debug)]
pub struct OsloFigures {
    /// The oslo.messaging version.
    pub version: String,
    /// Sequential calls.
    pub call: Latency,
    /// Casts, end to end (first send → last receipt).
    pub cast: Rate,
    /// Notifications, end to end.
    pub notify: Rate,
}

/// How much to send.
#[derive(Clone, Copy, Debug)]
pub struct OsloCounts {
    /// Timed sequential calls.
    pub calls: usize,
    /// Casts.
    pub casts: u64,
    /// Notifications.
    pub notifications: u64,
    /// Payload bytes.
    pub payload: usize,
}

/// The workspace root (where `interop/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The venv's python: `MESSAGING_TEST_OSLO_PYTHON` if set, else whatever
/// `interop/setup-venv.sh` prints last (it installs oslo.messaging on first use, which
/// takes a minute or two).
///
/// # Errors
///
/// [`OsloError::Venv`] when the script fails.
pub fn python() -> Result<PathBuf, OsloError> {
    if let Some(python) = std::env::var_os("MESSAGING_TEST_OSLO_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let output = Command::new("bash")
        .arg(workspace_root().join("interop/setup-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| OsloError::Venv(e.to_string()))?;
    if !output.status.success() {
        return Err(OsloError::Venv(format!("exit status {}", output.status)));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| OsloError::Venv("it printed no python path".to_owned()))
}

/// Runs the benchmark against `url` (a `rabbit://` URL).
///
/// # Errors
///
/// See [`OsloError`].
pub fn run(python: &Path, url: &str, counts: OsloCounts) -> Result<OsloFigures, OsloError> {
    let script = workspace_root().join("interop/oslo_bench.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--url", url])
        .args(["--payload", &counts.payload.to_string()])
        .args(["--calls", &counts.calls.to_string()])
        .args(["--casts", &counts.casts.to_string()])
        .args(["--notifications", &counts.notifications.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| OsloError::Script(format!("{}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(OsloError::Script(format!("exit status {}", output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| OsloError::Output("no JSON line".to_owned()))?;
    let json: Value = serde_json::from_str(line).map_err(|e| OsloError::Output(e.to_string()))?;
    parse(&json)
}

fn number(json: &Value, path: &[&str]) -> Result<f64, OsloError> {
    let mut value = json;
    for key in path {
        value = value
            .get(key)
            .ok_or_else(|| OsloError::Output(format!("missing {}", path.join("."))))?;
    }
    value
        .as_f64()
        .ok_or_else(|| OsloError::Output(format!("{} is not a number", path.join("."))))
}

fn rate(json: &Value, section: &str) -> Result<Rate, OsloError> {
    let count = number(json, &[section, "count"])?;
    let per_s = number(json, &[section, "received_per_s"])?;
    Ok(Rate {
        count: count as u64,
        seconds: if per_s > 0.0 { count / per_s } else { 0.0 },
        per_s,
    })
}

/// Reads the script's JSON (`call.rtt_us.{p50,p90,p99,max,mean}`, `call.count`,
/// `cast` / `notify` `.count` and `.received_per_s`).
///
/// # Errors
///
/// [`OsloError::Output`] naming the missing key.
pub fn parse(json: &Value) -> Result<OsloFigures, OsloError> {
    let rtt = |key: &str| number(json, &["call", "rtt_us", key]);
    Ok(OsloFigures {
        version: json
            .get("oslo_messaging_version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        call: Latency {
            count: number(json, &["call", "count"])? as u64,
            mean_us: rtt("mean")?,
            p50_us: rtt("p50")?,
            p90_us: rtt("p90")?,
            p99_us: rtt("p99")?,
            max_us: rtt("max")?,
        },
        cast: rate(json, "cast")?,
        notify: rate(json, "notify")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scripts_json() {
        let json: Value = serde_json::from_str(
            r#"{"oslo_messaging_version": "18.3.1", "payload_bytes": 100,
                "call": {"count": 10, "calls_per_s": 300.0, "first_call_ms": 20.0,
                         "rtt_us": {"p50": 3100.0, "p90": 4000.0, "p99": 5000.0, "max": 9000.0, "mean": 3200.0}},
                "cast": {"count": 100, "sent_per_s": 1300.0, "received_per_s": 1250.0},
                "notify": {"count": 100, "sent_per_s": 1300.0, "received_per_s": 1200.0}}"#,
        )
        .unwrap();
        let figures = parse(&json).unwrap();
        assert_eq!(figures.version, "18.3.1");
        assert_eq!(figures.call.p50_us, 3100.0);
        assert_eq!(figures.cast.per_s, 1250.0);
        assert_eq!(figures.notify.count, 100);
        let broken: Value = serde_json::from_str(r#"{"call": {"count": 1}}"#).unwrap();
        assert!(matches!(parse(&broken), Err(OsloError::Output(m)) if m.contains("call.rtt_us")));
    }
}
