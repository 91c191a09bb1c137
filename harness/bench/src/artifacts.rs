//! Artifact sizes: each function's stripped bootstrap and its deployment zip, per
//! architecture, as `cargo lambda build --release` made them (`make bench` builds
//! both architectures into `target/bench/`).

use std::path::PathBuf;

/// Functions measured, and the hello-world beside them.
pub const FUNCTIONS: [&str; 4] = ["api", "ingest", "fanout", "bench-hello"];

fn mb(path: &PathBuf) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / 1_048_576.0)
}

/// One row per (architecture, function): `(arch, binaries dir, zips dir)`.
pub fn table(builds: &[(String, PathBuf, PathBuf)]) -> Result<String, String> {
    let mut out = String::from(
        "| architecture | function | bootstrap (MB, stripped) | zip (MB) |\n|---|---|---:|---:|\n",
    );
    for (arch, bins, zips) in builds {
        for f in FUNCTIONS {
            let bin = bins.join(f).join("bootstrap");
            let zip = zips.join(f).join("bootstrap.zip");
            let (Some(b), Some(z)) = (mb(&bin), mb(&zip)) else {
                return Err(format!(
                    "{} or {} is missing: build with `make bench`",
                    bin.display(),
                    zip.display()
                ));
            };
            out.push_str(&format!("| {arch} | {f} | {b:.2} | {z:.2} |\n"));
        }
    }
    Ok(out)
}
